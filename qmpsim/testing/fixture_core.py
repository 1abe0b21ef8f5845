"""The one fixture core both fixtures share: the simulator, the scenario it plays, the
cassette, strict mode's expectations, and what a failing test is told (runs in trio)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any

import pytest

from qmpsim.testing.fixture_config import DEFAULT_ALLOW, _Config, _Expectation, _socket_path

if TYPE_CHECKING:
    import trio

    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.runtime.vcr import CassetteDeck
    from qmpsim.scenario.model import Scenario, Step
    from qmpsim.vm.machine import Cause

# --- the simulator side, shared by both fixtures (runs in trio) ---------------------

log = logging.getLogger("qmpsim.pytest")


@dataclass
class _Tracking:
    """What strict mode compares the traffic with."""

    expected: set[str] = field(default_factory=lambda: {"qmp_capabilities"})
    allowed: tuple[str, ...] = DEFAULT_ALLOW
    """Patterns of commands strict mode tolerates (fnmatch)."""
    expectations: list[_Expectation] = field(default_factory=list)
    in_order: bool = False

    def tolerates(self, command: str) -> bool:
        return command in self.expected or any(fnmatch(command, p) for p in self.allowed)

    untils: dict[int, tuple[Any, str]] = field(default_factory=dict)  # id(step) -> step, state
    replies: list[tuple[Any, int]] = field(default_factory=list)  # (step, sent before it)


def _where(step: Any) -> str:
    where = step.where
    return f"{where.file or '<scenario>'}:{where.line}"


def _walk(steps: Any, *, timeline: bool) -> Iterator[Any]:
    """Every step, nested ones included; ``timeline``: only those the timeline itself runs."""
    from qmpsim.scenario.model import IncludeStep, OnStep, RepeatStep

    for step in steps:
        yield step
        if isinstance(step, IncludeStep):
            yield from _walk(step.steps, timeline=timeline)
        elif isinstance(step, RepeatStep):
            if not timeline or step.count is not None:
                yield from _walk(step.steps, timeline=timeline)
        elif isinstance(step, OnStep) and not timeline:
            yield from _walk(step.steps, timeline=timeline)


def _commands_named(scenario: Scenario) -> set[str]:
    from qmpsim.scenario.model import FaultStep, OnStep, ReplyStep, UntilStep

    names: set[str] = set()
    blocks = [scenario.steps, *scenario.actions.values()]
    for block in blocks:
        for step in _walk(block, timeline=False):
            command = getattr(step, "command", None)
            if isinstance(step, UntilStep | OnStep | ReplyStep | FaultStep) and command:
                names.add(command)
    return names


class _Core:
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
        self.tracking = _Tracking(
            allowed=config.allow,
            expectations=list(config.expect),
            in_order=config.in_order,
        )
        self.tracking.expected |= {e.command for e in config.expect}
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

    def expect(
        self, command: str, arguments: Mapping[str, Any] | None, count: int | None, origin: str
    ) -> None:
        if count is not None and count < 0:
            raise ValueError("expect: count must not be negative")
        self.tracking.expected.add(command)
        self.tracking.expectations.append(_Expectation(command, arguments, count, origin))

    def allow(self, command: str) -> None:
        self.tracking.expected.add(command)

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
        self.tracking = _Tracking(
            allowed=self.config.allow,
            expectations=list(self.config.expect),
            in_order=self.config.in_order,
        )
        self.tracking.expected |= {e.command for e in self.config.expect}

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

    def strict_report(self, *, strict: bool = True) -> str | None:
        """A readable report of what the test's expectations object to, or ``None``.

        Expectations (``expect=``, ``expect()``) are always checked; ``strict``
        adds unexpected commands and the scenario's unmet ``until``/``reply`` steps.
        """
        from qmpsim.qmp.transcript import arguments_match

        tracking = self.tracking
        transcript = self.sim.transcript
        sent = transcript.commands_sent()
        start = transcript.entries[0].time if transcript.entries else 0.0
        unexpected = [c for c in sent if not tracking.tolerates(c.command)] if strict else []
        unmet: list[str] = []
        if strict:
            unmet += self._unmet_steps(transcript)
        for expectation in tracking.expectations:
            got = [
                c
                for c in transcript.commands_sent(expectation.command)
                if expectation.arguments is None
                or arguments_match(c.arguments, expectation.arguments)
            ]
            count = expectation.count
            if (count is None and got) or len(got) == count:
                continue
            args = f" {json.dumps(expectation.arguments)}" if expectation.arguments else ""
            wanted = "at least once" if count is None else f"exactly {_n(count, 'time')}"
            unmet.append(
                f"{expectation.command}{args} ({expectation.origin}): expected {wanted}, "
                f"sent {_n(len(got), 'time')}"
            )
        if tracking.in_order and not unmet:
            from qmpsim.qmp.transcript import sequence_mismatch

            wanted_order = [(e.command, e.arguments) for e in tracking.expectations]
            problem = sequence_mismatch(sent, wanted_order)
            if problem is not None:
                unmet.append(f"in order (marker): {problem}")
        if not unexpected and not unmet:
            return None
        if self.runners:
            source = f" ({self.scenario.source})" if self.scenario.source else ""
            whose = f"scenario {self.scenario.name!r}{source}"
        else:
            whose = "the test"
        mode = "strict mode" if strict else "expectations"
        lines = [f"qmpsim {mode}: the client did not do what {whose} expects"]
        if unexpected:
            lines.append("unexpected commands:")
            lines += [f"  {_dump(c.message)}  (+{c.time - start:.3f}s)" for c in unexpected]
        if unmet:
            lines.append("unmet expectations:")
            lines += [f"  {line}" for line in unmet]
        if strict:
            allowed = f" (and {', '.join(tracking.allowed)})" if tracking.allowed else ""
            lines.append(f"commands expected: {', '.join(sorted(tracking.expected))}{allowed}")
        if sent:
            lines.append("commands sent, in order: " + ", ".join(c.command for c in sent))
        else:
            lines.append("no command was sent")
        return "\n".join(lines)

    def _unmet_steps(self, transcript: Transcript) -> list[str]:
        """The scenario's ``until`` and counted ``reply`` steps the client did not satisfy."""
        unmet: list[str] = []
        for step, state in self.tracking.untils.values():
            args = f" {json.dumps(step.arguments)}" if step.arguments else ""
            unmet.append(f"until {step.command}{args} ({_where(step)}): {state}")
        pending: dict[str, int] = {}
        for step, before in self.tracking.replies:
            pending[step.command] = pending.get(step.command, 0) + step.times
            used = len(transcript.commands_sent(step.command)) - before
            if used < pending[step.command]:
                unmet.append(
                    f"reply to {step.command} ({_where(step)}): "
                    f"{_n(step.times, 'time')} scripted, the client sent it {_n(used, 'time')}"
                )
        return unmet


def _capture(fn: Callable[[], Any], done: threading.Event, box: dict[str, Any]) -> None:
    try:
        box["value"] = fn()
    except BaseException as exc:
        box["error"] = exc
    finally:
        done.set()


def _setter(event: trio.Event) -> Callable[[object], None]:
    return lambda _entry: event.set()


def _n(count: int | None, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tracked_runner(
    core: _Core, scenario: Scenario, *, speed: float, seed: int | None
) -> ScenarioRunner:
    """A scenario runner that tells strict mode which ``until`` and ``reply`` steps it met."""
    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.scenario.model import ReplyStep, UntilStep

    tracking = core.tracking

    class Runner(ScenarioRunner):
        async def run_step(self, step: Step) -> None:
            if isinstance(step, UntilStep) and id(step) in tracking.untils:
                tracking.untils[id(step)] = (step, "the client never sent it")
                notes = len(self.notes)
                await super().run_step(step)
                if len(self.notes) > notes:
                    tracking.untils[id(step)] = (step, f"timed out after {step.timeout:g}s")
                else:
                    del tracking.untils[id(step)]
                return
            if isinstance(step, ReplyStep) and step.times is not None:
                sent = len(core.sim.transcript.commands_sent(step.command))
                tracking.replies.append((step, sent))
            await super().run_step(step)

    return Runner(core.sim, scenario, speed=speed, seed=seed)


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
