"""The one fixture core both fixtures share: the simulator, the scenario it plays, the
cassette, and what a failing test is told (runs in trio); strict mode's expectations
are :mod:`~qmpsim.testing.fixture_strict`'s."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from qmpsim.testing.fixture_config import _Config, _socket_path
from qmpsim.testing.fixture_strict import (
    _commands_named,
    _StrictMode,
    _tracked_runner,
    _Tracking,
    _walk,
)

if TYPE_CHECKING:
    import trio

    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.runtime.vcr import CassetteDeck
    from qmpsim.scenario.model import Scenario
    from qmpsim.vm.machine import Cause

# --- the simulator side, shared by both fixtures (runs in trio) ---------------------

log = logging.getLogger("qmpsim.pytest")


class _Core(_StrictMode):
    """The simulator, the scenarios it plays and the strict-mode bookkeeping."""

    def __init__(self, config: _Config) -> None:
        from qmpsim.runtime.server import Simulator
        from qmpsim.scenario.dryrun import build_machine

        self.config = config
        self.scenario = config.scenario
        self.deck: CassetteDeck | None = None
        if config.cassette is not None:
            from qmpsim.runtime.vcr import CassetteDeck

            cassette = config.cassette
            self.deck = CassetteDeck(
                cassette.path,
                cassette.mode,
                qemu=cassette.qemu,
                upstream=cassette.upstream,
                workdir=os.path.dirname(_socket_path()),
                multi_client=config.multi_client,
            )
            self.sim = self.deck.sim
        else:
            self.sim = Simulator(
                build_machine(config.scenario, config.seed), multi_client=config.multi_client
            )
        self.sim.machine.strict_commands = config.strict_commands
        self.tracking = _Tracking.of(config)
        self.runners: list[ScenarioRunner] = []
        self.scopes: list[trio.CancelScope] = []
        self.claimed: set[int] = set()
        self.seen = 0
        self.path = ""
        self.address: str | tuple[str, int] = ""
        from qmpsim.logs import log_traffic

        # caplog and --log-cli-level=DEBUG show a test's traffic.
        self.sim.transcript.subscribe(log_traffic)

    async def listen(self, nursery: trio.Nursery) -> None:
        if self.deck is not None:
            self.path = await nursery.start(self.deck.serve_unix, _socket_path())
            self.address = self.path
            if self.config.tcp:
                self.address = await nursery.start(self.deck.serve_tcp)
            return
        self.path = await self.sim.listen_unix(_socket_path())
        self.address = self.path
        if self.config.tcp:
            self.address = await self.sim.listen_tcp("127.0.0.1", 0)

    def simulated(self, what: str) -> None:
        """Refuse ``what`` when no client can reach the simulator (every connection records)."""
        if self.deck is not None and not self.deck.simulated:
            raise RuntimeError(
                f"{what}: this test records a real QEMU (record mode {self.deck.mode}, "
                f"cassette {self.deck.path}); ask the VM itself"
            )

    def report(self) -> str | None:
        """What fails a test that passed: strict mode's report, a replay's objections."""
        parts = [self.strict_report(strict=self.config.strict)]
        if self.deck is not None:
            problems = self.deck.problems(strict=self.config.strict)
            if problems:
                lines = [f"qmpsim replay of {self.deck.path}: the client did not do as recorded"]
                parts.append("\n".join([*lines, *(f"  {p}" for p in problems)]))
        text = "\n".join(p for p in parts if p)
        return text or None

    def save(self) -> None:
        """Write what was recorded to the cassette (the test passed)."""
        if self.deck is not None:
            saved = self.deck.save()
            if saved is not None:
                log.info("recorded %s", saved)

    async def start(self, nursery: trio.Nursery, scenario: Scenario, *, seed: int | None) -> None:
        """Play ``scenario`` in ``nursery`` instead of the one playing, on a fresh VM of its own."""
        from qmpsim.scenario.model import UntilStep

        self.stop()
        self.tracking.untils.clear()
        self.tracking.replies.clear()
        if self.runners or scenario is not self.config.scenario:
            from qmpsim.scenario.dryrun import build_machine

            machine = build_machine(scenario, seed)
            machine.clock = self.sim.now
            machine.strict_commands = self.config.strict_commands
            self.sim.machine = machine
        self.scenario = scenario
        tracking = self.tracking
        tracking.expected |= _commands_named(scenario)
        for step in _walk(scenario.steps, timeline=True):
            if isinstance(step, UntilStep):
                tracking.untils[id(step)] = (step, "the timeline never reached it")
        runner = _tracked_runner(self, scenario, speed=self.config.speed, seed=seed)
        self.runners.append(runner)
        await nursery.start(self._play, runner)

    async def _play(self, runner: ScenarioRunner, *, task_status: trio.TaskStatus[None]) -> None:
        import trio

        with trio.CancelScope() as scope:
            self.scopes.append(scope)
            await runner.run(task_status=task_status)

    def stop(self) -> None:
        """Stop the scenarios (they play in a nursery the simulator does not own)."""
        for scope in self.scopes:
            scope.cancel()

    def reset(self) -> None:
        self.sim.reset()
        self.claimed.clear()
        self.seen = 0

    def fresh(self) -> None:
        """Back to the state of a new fixture: between the tests sharing a session server."""
        from qmpsim.scenario.dryrun import build_machine

        self.stop()
        self.sim.disconnect()
        self.runners.clear()
        self.scopes.clear()
        self.scenario = self.config.scenario
        machine = build_machine(self.config.scenario, self.config.seed)
        machine.clock = self.sim.now
        machine.strict_commands = self.config.strict_commands
        self.sim.machine = machine
        self.reset()
        self.tracking = _Tracking.of(self.config)

    def cause(self, cause: Cause | str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.simulated("cause()")
        if isinstance(cause, str):
            from qmpsim.scenario.loader import load_steps
            from qmpsim.scenario.model import CauseStep

            (step,) = load_steps([{"cause": cause, **params}], self.scenario, "cause()")
            assert isinstance(step, CauseStep)
            cause = step.cause
        elif params:
            raise TypeError("cause(): keyword arguments go with a cause named by a string")
        return [event.to_json() for event in self.sim.cause(cause)]

    async def wait_for_command(
        self, name: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The first command ``name`` not returned before, once it has been answered.

        Read from the transcript, so it never takes a command away from a
        scenario's ``until`` step.
        """
        import trio

        while True:
            found = self._answered_command(name, arguments)
            if found is not None:
                return found
            changed = trio.Event()
            unsubscribe = self.sim.transcript.subscribe(_setter(changed))
            try:
                await changed.wait()
            finally:
                unsubscribe()

    def _answered_command(
        self, name: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        from qmpsim.qmp.transcript import Direction, arguments_match

        transcript = self.sim.transcript
        if len(transcript) < self.seen:
            self.claimed.clear()  # the transcript was cleared by a reset
        self.seen = len(transcript)
        sent = transcript.commands_sent()
        for index, command in enumerate(sent):
            if index in self.claimed or command.command != name:
                continue
            if arguments is not None and not arguments_match(command.arguments, arguments):
                continue
            # In-band replies come in order: the k-th command of a client has been
            # answered once that client received k replies.
            rank = sum(1 for c in sent[: index + 1] if c.client == command.client)
            replies = sum(
                1
                for entry in transcript
                if entry.direction is Direction.OUT and entry.client == command.client
                for m in entry.messages
                if isinstance(m, dict) and ("return" in m or "error" in m)
            )
            if replies < rank:
                return None
            self.claimed.add(index)
            return dict(command.message)
        return None

    def snapshot(self) -> Transcript:
        from qmpsim.qmp.transcript import Transcript

        return Transcript(entries=list(self.sim.transcript.entries))


def _capture(fn: Callable[[], Any], done: threading.Event, box: dict[str, Any]) -> None:
    try:
        box["value"] = fn()
    except BaseException as exc:
        box["error"] = exc
    finally:
        done.set()


def _setter(event: trio.Event) -> Callable[[object], None]:
    return lambda _entry: event.set()


class _ErrorLog(logging.Handler):
    """Collects the exceptions the simulator logs from one thread instead of raising."""

    def __init__(self, thread: int | None) -> None:
        super().__init__(logging.ERROR)
        self.thread = thread
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.thread is not None and record.thread != self.thread:
            return
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


_FAILURE = pytest.StashKey[tuple[list[BaseException], str | None]]()
"""What the trio fixture found at its teardown: server-side errors, a strict report."""
_SAVE = pytest.StashKey[Callable[[], None]]()
"""Writes what the trio fixture recorded, once the test has passed."""
_TRIO_TRANSCRIPT = pytest.StashKey["Transcript"]()
"""The trio fixture's transcript, for the report of a test that failed."""


def _raise_errors(errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup("errors inside the qmpsim simulator", errors)
