"""Run a :class:`~qmpsim.scenario.Scenario` on a :class:`~qmpsim.runtime.server.Simulator`.

The engine walks the timeline: causes go to the machine (which emits the
conformant events), waits sleep on trio's clock (virtual under ``MockClock``),
``until`` waits for a client's command, ``reply``/``fault`` steps install the
server's hooks, and ``on`` handlers run their steps alongside the timeline each
time their command has been answered.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from qmpsim.qmp.profiles import DEFAULT_PROFILE, Alternate, Array, Builtin, Enum, Object, Type
from qmpsim.qmp.protocol import Request
from qmpsim.qmp.transcript import arguments_match
from qmpsim.qmp.wire import encode
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.dryrun import build_machine
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

__all__ = ["IDLE", "ScenarioRunner", "Session", "build_machine", "fake_data", "serve"]

log = logging.getLogger("qmpsim.engine")


_ADDRESS_KEYS = {"host", "service", "port", "family"}


def fake_data(type_: Object, fake: FakeData, given: Mapping[str, Any] | None = None) -> Any:
    """Data for an event of schema ``type_``: ``given`` members kept, the others made up.

    Required members are filled, and the address members of server/client objects;
    a union's tag is drawn (unless given) and its variant's members filled too.
    """
    out: dict[str, Any] = dict(given or {})
    family = str(out.get("family", "ipv4"))
    fields = list(type_.fields)
    if type_.tag is not None and type_.tag not in out:
        tag = type_.member(type_.tag)
        cases = list(type_.variants) or (
            list(tag.type.values) if tag is not None and isinstance(tag.type, Enum) else []
        )
        if cases:
            out[type_.tag] = fake.rng.choice(cases)
    branch = type_.variant(out)
    if branch is not None:
        fields += branch.fields
    for f in fields:
        if f.name in out:
            if isinstance(f.type, Object) and isinstance(out[f.name], Mapping):
                out[f.name] = fake_data(f.type, fake, out[f.name])
            continue
        if f.optional and f.name not in _ADDRESS_KEYS:
            continue
        out[f.name] = _fake_value(f.name, f.type, fake, family)
    return out


def _fake_value(name: str, type_: Type, fake: FakeData, family: str) -> Any:
    rng = fake.rng
    if isinstance(type_, Object):
        return fake_data(type_, fake)
    if isinstance(type_, Enum):
        if name == "family":
            return family if family in type_.values else type_.values[0]
        return rng.choice(type_.values)
    if isinstance(type_, Array):
        return [_fake_value(name, type_.of, fake, family)]
    if isinstance(type_, Alternate):
        # a scalar branch where there is one: it keeps recursive types finite
        scalars = [t for t in type_.members if isinstance(t, Builtin | Enum) and t.name != "null"]
        return _fake_value(name, scalars[0] if scalars else type_.members[0], fake, family)
    if type_.name == "bool":
        return rng.random() < 0.5
    if type_.name == "null":
        return None
    if type_.name == "any":
        return {}
    if name == "offset":
        return fake.rtc_offset()
    if name == "connection-id":
        return fake.connection_id("client")
    if type_.name in ("int", "number"):
        return rng.randint(0, 16)
    if name == "host":
        return fake.host(family)
    if name in ("service", "port"):
        return fake.ephemeral_port()
    if name == "device":
        return fake.drive_name()
    if name == "node-name":
        return fake.node_name()
    if name == "sasl_username":
        return fake.sasl_username()
    if name == "x509_dname":
        return fake.x509_dname()
    return f"{name}{rng.randint(0, 99)}"


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


IDLE = Scenario(
    name="idle",
    description="An idle VM, like qemu-system-x86_64 -M none -nodefaults",
    profile=DEFAULT_PROFILE,
    vm=m.VmConfig(),
    clock="startup",
    steps=(),
)
"""What ``qmpsim serve`` plays without a scenario: nothing but answers to commands."""


class Session:
    """A simulator playing a scenario, which :meth:`reset` restarts from the top."""

    def __init__(
        self, sim: Simulator, scenario: Scenario, *, speed: float = 1.0, seed: int | None = None
    ) -> None:
        self.sim = sim
        self.scenario = scenario
        self.speed = speed
        self.seed = seed
        self.runner = ScenarioRunner(sim, scenario, speed=speed, seed=seed)
        self._started: trio.Event | None = None
        """Set when the runner restarted after a :meth:`reset` (made by the reset)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Play the scenario until cancelled, restarting it after each :meth:`reset`."""
        while True:
            # The runner plays in this very task, and a reset cancels its nursery (a
            # fleet runs thousands of sessions: no task or cancel scope of their own).
            started = _Started(self, task_status)
            task_status = trio.TASK_STATUS_IGNORED
            await self.runner.run(task_status=started)
            self.runner = ScenarioRunner(self.sim, self.scenario, speed=self.speed, seed=self.seed)

    async def reset(self) -> None:
        """A fresh VM, no overrides, an empty transcript, and the timeline from the top."""
        nursery = self.runner._nursery
        assert nursery is not None, "reset a session that runs"
        started = self._started = trio.Event()
        nursery.cancel_scope.cancel()
        self.sim.reset()
        await started.wait()


class _Started:
    """The status a session's runner reports to: the session learns it started, and
    so does whoever started the session (the first time)."""

    def __init__(self, session: Session, outer: trio.TaskStatus[None]) -> None:
        self.session = session
        self.outer = outer

    def started(self, value: None = None) -> None:
        if self.session._started is not None:
            self.session._started.set()
            self.session._started = None
        # Let go of trio's status: it holds the nursery the session started in.
        outer, self.outer = self.outer, trio.TASK_STATUS_IGNORED
        outer.started()


async def serve(
    scenario: Scenario,
    *,
    unix: str | None = None,
    tcp: tuple[str, int] | None = None,
    allow_remote: bool = False,
    control: str | None = None,
    speed: float = 1.0,
    seed: int | None = None,
    multi_client: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``scenario`` on the given sockets until the VM exits or the task is cancelled."""
    machine = build_machine(scenario, seed)
    async with Simulator(machine, multi_client=multi_client) as sim, trio.open_nursery() as n:
        if unix is not None:
            announce(f"QMP monitor on unix:{await sim.listen_unix(unix)}")
        if tcp is not None:
            host, port = await sim.listen_tcp(*tcp, allow_remote=allow_remote)
            announce(f"QMP monitor on tcp:{host}:{port}")
        await start_session(
            n, sim, scenario, speed=speed, seed=seed, control=control, announce=announce
        )
        await sim.wait_exited()
        announce("the VM exited")
        n.cancel_scope.cancel()


async def start_session(
    nursery: trio.Nursery,
    sim: Simulator,
    scenario: Scenario | None,
    *,
    speed: float = 1.0,
    seed: int | None = None,
    control: str | None = None,
    announce: Callable[[str], None] = print,
) -> Session:
    """Play ``scenario`` (``None``: idle) on a running simulator, with its control channel.

    ``seed`` also reseeds the machine's own randomness (client ports, connection ids).
    """
    if scenario is None:
        scenario = dataclasses.replace(IDLE, profile=sim.machine.profile.name)
    if seed is not None:
        sim.machine.rng.seed(seed)
    session = Session(sim, scenario, speed=speed, seed=seed)
    await nursery.start(session.run)
    if control is not None:
        from qmpsim.runtime.control import (
            ControlChannel,  # not imported unless asked for: a faster start
        )

        channel = ControlChannel(sim, scenario, lambda: session.runner, session.reset)
        announce(f"control channel on unix:{await nursery.start(channel.serve_unix, control)}")
    return session


def _progress(step: Step) -> str:
    """A step as one line for the log: its YAML, without the steps it holds."""
    if isinstance(step, IncludeStep):
        return f"include: {step.path}"
    from qmpsim.scenario.text import step_document

    document = {k: v for k, v in step_document(step).items() if k != "steps"}
    return json.dumps(document, ensure_ascii=False)
