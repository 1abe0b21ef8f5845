"""A scenario in play: a :class:`Session` restarts it after a reset, :func:`serve` and
:func:`start_session` put it (and its control channel) on a simulator, :data:`IDLE` is
what plays without one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import trio

from qmpsim.qmp.profiles import DEFAULT_PROFILE
from qmpsim.runtime.engine import ScenarioRunner
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.model import Scenario
from qmpsim.vm import machine as m

__all__ = ["IDLE", "Session", "serve", "start_session"]


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
