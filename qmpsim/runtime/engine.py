"""Run a :class:`~qmpsim.scenario.Scenario` on a :class:`~qmpsim.runtime.server.Simulator`.

The engine walks the timeline: causes go to the machine (which emits the
conformant events), waits sleep on trio's clock (virtual under ``MockClock``),
``until`` waits for a client's command, ``reply``/``fault`` steps install the
server's hooks, and ``on`` handlers run their steps alongside the timeline each
time their command has been answered.  A scenario played from the top, reset,
and served: :mod:`qmpsim.runtime.session`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from qmpsim.qmp.protocol import Request
from qmpsim.qmp.transcript import arguments_match
from qmpsim.qmp.wire import encode
from qmpsim.runtime.fake_events import fake_data
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.model import (
    CauseStep,
    EmitStep,
    FaultStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Scenario,
    Step,
    UntilStep,
    WaitStep,
)
from qmpsim.vm import machine as m

if TYPE_CHECKING:
    from qmpsim.fakedata import FakeData

__all__ = ["ScenarioRunner"]

log = logging.getLogger("qmpsim.engine")


@dataclass
class _Handler:
    step: OnStep
    remaining: int | None


class ScenarioRunner:
    """Plays a scenario on a simulator.

    ``speed`` scales the VM's time, the ``wait`` steps and delayed replies (2.0 runs
    twice as fast; ``until`` timeouts wait for a client and are not scaled, nor is
    QEMU's one-second event throttle); ``seed`` overrides ``vm.seed``
    for fake data.  Start :meth:`run` in a nursery; :attr:`done` is set when the
    timeline has ended (``on`` handlers stay active until the run is cancelled).
    """

    def __init__(
        self,
        sim: Simulator,
        scenario: Scenario,
        *,
        speed: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.sim = sim
        self.scenario = scenario
        self.speed = speed
        self.seed = scenario.seed if seed is None else seed
        self._fake: FakeData | None = None
        self.done = trio.Event()
        self.notes: list[str] = []
        """What did not go as written: timeouts, causes the VM refused."""
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Play the timeline, then keep the ``on`` handlers alive until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            if self.scenario.clock == "first-client":
                await self.sim.wait_negotiated()
            await self.run_steps(self.scenario.steps)
            self.done.set()
            await trio.sleep_forever()

    def trigger(self, action: str) -> None:
        """Run the named action of the scenario alongside the timeline."""
        if action not in self.scenario.actions:
            known = ", ".join(sorted(self.scenario.actions)) or "none"
            raise KeyError(f"no action named {action!r} (actions: {known})")
        self.start_steps(self.scenario.actions[action])

    def start_steps(self, steps: Sequence[Step]) -> None:
        """Run ``steps`` alongside the timeline."""
        if self._nursery is None:
            raise RuntimeError("the scenario is not running")
        self._nursery.start_soon(self.run_steps, steps)

    async def run_steps(self, steps: Sequence[Step]) -> None:
        """Run ``steps`` in order, in the caller's task."""
        for step in steps:
            await self.run_step(step)

    async def run_step(self, step: Step) -> None:
        """Run one step."""
        if log.isEnabledFor(logging.INFO):
            where = f"{step.where.file or '<scenario>'}:{step.where.line}"
            log.info("scenario %r (%s): %s", self.scenario.name, where, _progress(step))
        if isinstance(step, CauseStep):
            self._cause(step)
        elif isinstance(step, EmitStep):
            self._emit(step)
        elif isinstance(step, WaitStep):
            await trio.sleep(step.seconds / self.speed)
        elif isinstance(step, UntilStep):
            await self._until(step)
        elif isinstance(step, ReplyStep):
            self._reply(step)
        elif isinstance(step, OnStep):
            self._on(step)
        elif isinstance(step, RepeatStep):
            n = 0
            while step.count is None or n < step.count:
                await self.run_steps(step.steps)
                await trio.lowlevel.checkpoint()  # the server runs between rounds
                n += 1
        elif isinstance(step, IncludeStep):
            await self.run_steps(step.steps)
        else:
            await self._fault(step)

    def _note(self, step: Step, text: str) -> None:
        where = f"{step.where.file or '<scenario>'}:{step.where.line}"
        self.notes.append(f"{where}: {text}")
        log.info("%s: %s", where, text)

    def _cause(self, step: CauseStep) -> None:
        refused = self.sim.machine.cause_error(step.cause)
        if refused is not None:
            self._note(step, f"{step.kind} skipped: {refused}")
            return
        self.sim.cause(step.cause)

    def _emit(self, step: EmitStep) -> None:
        data = step.data
        if step.fake:
            spec = self.sim.machine.profile.events[step.event].data
            assert spec is not None  # the loader refuses `fake` on events without data
            if self._fake is None:
                from qmpsim.fakedata import FakeData  # Faker is slow to import: only when used

                self._fake = FakeData(self.seed)
            data = fake_data(spec, self._fake, data)
        self.sim.emit(step.event, data)

    async def _until(self, step: UntilStep) -> None:
        if step.timeout is None:  # no cancel scope: a fleet has thousands waiting
            await self.sim.wait_for_command(step.command, step.arguments)
            return
        # The client is not sped up: its timeout is not scaled.
        with trio.move_on_after(step.timeout):
            await self.sim.wait_for_command(step.command, step.arguments)
            return
        self._note(step, f"no {step.command} within {step.timeout:g}s, going on")

    def _reply(self, step: ReplyStep) -> None:
        reply: Any = step.result
        if step.error_class is not None:
            reply = m.CommandError(step.error_class, step.error_desc or "")
        if step.times is None:
            self.sim.override_reply(step.command, reply, once=False)
        else:
            for _ in range(step.times):
                self.sim.override_reply(step.command, reply, once=True)

    def _on(self, step: OnStep) -> None:
        handler = _Handler(step, step.times)

        def fire(request: Request) -> None:
            if handler.remaining == 0 or not arguments_match(
                request.arguments, step.arguments or {}
            ):
                return
            if handler.remaining is not None:
                handler.remaining -= 1
                if handler.remaining == 0:
                    remove()
            self.start_steps(step.steps)

        remove = self.sim.on_command(step.command, fire)

    async def _fault(self, step: FaultStep) -> None:
        sim = self.sim
        if step.kind == "disconnect":
            sim.disconnect()
        elif step.kind == "garbage":
            sim.send_raw((step.text or "}garbage{").encode() + b"\r\n")
        elif step.kind == "error-without-id":
            sim.emit_raw({"error": {"class": "GenericError", "desc": "qmpsim: error without id"}})
        elif step.kind == "unknown-id-reply":
            sim.emit_raw({"return": {}, "id": "qmpsim-unknown-id"})
        elif step.kind == "split":
            sim.split_next(step.chunk)
        elif step.kind == "coalesce":
            sim.coalesce_next()
        elif step.kind == "delayed-reply":
            assert step.command is not None
            sim.delay_reply(step.command, step.delay / self.speed)
        else:
            now = sim.now()
            seconds = int(now)
            micro = int((now - seconds) * 1_000_000)
            event = m.Event(step.text or "RESUME", None, seconds, micro).to_json()
            sim.before_greeting(encode(event))


def _progress(step: Step) -> str:
    """A step as one line for the log: its YAML, without the steps it holds."""
    if isinstance(step, IncludeStep):
        return f"include: {step.path}"
    from qmpsim.scenario.text import step_document

    document = {k: v for k, v in step_document(step).items() if k != "steps"}
    return json.dumps(document, ensure_ascii=False)
