"""``qmpsim-system-x86_64``: a QEMU binary whose VM is simulated.

It reads QEMU's command line, opens the monitors it names (a socket path, or an
inherited listening fd as libvirt passes it), daemonizes with QEMU's handshake
when asked, writes the pidfile, starts one thread per vCPU and serves the VM the
command line describes, with the scenario its settings name, until the VM exits
or a signal stops it, exactly as QEMU would: SIGTERM, SIGINT and SIGHUP emit
SHUTDOWN ``{guest: false, reason: host-signal}`` and exit 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from qmpsim.qmp.profiles import DEFAULT_PROFILE, PROFILES, get_profile

from ..errors import QmpSimError
from .chardev import OpenChardev, close_all, open_chardevs
from .cmdline import Invocation, parse_command_line
from .opts import OptionError
from .process import (
    HOST_SIGNALS,
    Daemon,
    Messages,
    PidFile,
    StartError,
    VcpuThreads,
    block_host_signals,
    daemonize,
    sender_name,
)
from .settings import GuestSettings, control_socket, load_settings, run_dirs
from .texts import help_text, version_text
from .vmdesc import build_vm

if TYPE_CHECKING:
    import trio

    from qmpsim.runtime.control import ControlChannel
    from qmpsim.runtime.listen import UnixSocketFile
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario
    from qmpsim.vm.machine import GuestConfig, VmConfig

__all__ = ["main", "run"]

PROG = "qemu-system-x86_64"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: ``argv[0]`` names the program in messages, as QEMU's does.

    The process ends as QEMU's does, at once: without the interpreter's teardown,
    which takes ~0.25 s with the profile and the VM loaded, and makes a launcher
    that waits for the process after SIGTERM (libvirt's destroy) wait that long.
    """
    args = list(sys.argv if argv is None else argv)
    prog = os.path.basename(args[0]) if args and args[0] else PROG
    status = run(args[1:], prog=prog)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def run(args: Sequence[str], *, prog: str = PROG) -> int:
    """Run QEMU's command line ``args`` (without the program name); the exit status."""
    messages = Messages(prog)
    try:
        inv = parse_command_line(list(args), prog)
    except OptionError as exc:
        for line in exc.lines(prog):
            print(line, file=sys.stderr)
        return 1
    for warning in inv.warnings:
        messages.error(warning)
    try:
        settings = load_settings(inv.name)
        profile = settings.profile or DEFAULT_PROFILE
        if profile not in PROFILES:
            known = ", ".join(sorted(PROFILES))
            raise StartError(f"qmpsim: unknown profile {profile!r} (profiles: {known})")
    except QmpSimError as exc:
        messages.error(str(exc))
        return 1
    if inv.show_version:
        print(version_text(get_profile(profile)), end="")
        return 0
    if inv.show_help:
        print(help_text(get_profile(profile), prog), end="")
        return 0
    messages.timestamp = inv.msg_timestamp
    return _start(inv, settings, messages)


def _start(inv: Invocation, settings: GuestSettings, messages: Messages) -> int:
    # Signals wait for the event loop, which reports them as QEMU does; blocked now,
    # before any thread exists, so that every later thread inherits the mask.
    block_host_signals()
    daemon: Daemon | None = daemonize() if inv.daemonize else None
    pidfile: PidFile | None = None
    chardevs: list[OpenChardev] = []
    vcpus: VcpuThreads | None = None
    control: UnixSocketFile | None = None
    try:
        try:
            scenario = _load_scenario(settings)
            guest = _guest(settings, scenario)
            if inv.pidfile is not None:
                pidfile = PidFile(inv.pidfile)
            chardevs = open_chardevs(inv.chardevs, messages)
            for monitor in inv.monitors:
                if monitor.mode == "control" and _chardev(chardevs, monitor.chardev).sock is None:
                    raise StartError(f"chardev {monitor.chardev!r}: QMP needs a socket backend")
        except QmpSimError as exc:
            messages.error(str(exc))
            return 1
        vm = build_vm(
            inv,
            chardevs=[c.config(connected=_is_qmp(inv, c)) for c in chardevs],
            cpu_thread_ids=(vcpus := VcpuThreads(_vcpu_count(inv))).ids,
            guest=guest,
        )
        sim = _simulator(vm, settings, scenario)
        control = _bind_control(settings, inv.name, messages)
        if daemon is not None:
            daemon.ready()
        import trio

        trio.run(_serve, sim, inv, chardevs, control, settings, scenario, messages)
        return 0
    finally:
        if vcpus is not None:
            vcpus.stop()
        if control is not None:
            control.close()
        close_all(chardevs)
        if pidfile is not None:
            pidfile.remove()


def _vcpu_count(inv: Invocation) -> int:
    if inv.cpus is not None:
        return inv.cpus
    return 0 if inv.machine.get("type") in (None, "none") else 1


def _chardev(chardevs: list[OpenChardev], ident: str) -> OpenChardev:
    return next(c for c in chardevs if c.spec.id == ident)


def _is_qmp(inv: Invocation, chardev: OpenChardev) -> bool:
    return any(m.chardev == chardev.spec.id and m.mode == "control" for m in inv.monitors)


def _load_scenario(settings: GuestSettings) -> Scenario | None:
    if settings.scenario is None:
        return None
    from qmpsim.scenario.library import resolve
    from qmpsim.scenario.loader import load_scenario

    return load_scenario(resolve(settings.scenario))


def _guest(settings: GuestSettings, scenario: Scenario | None) -> GuestConfig:
    """How the guest OS reacts: the settings' ``[guest]``, else the scenario's ``vm.guest``,
    else a cooperative guest (it shuts down when the power button is pressed)."""
    from qmpsim.vm.machine import GuestConfig, MachineError

    if settings.guest is not None:
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in settings.guest.items()
        }
        try:
            return GuestConfig(**values)
        except (TypeError, MachineError) as exc:
            where = settings.sources[-1] if settings.sources else "settings"
            raise StartError(f"qmpsim: {where}: [guest]: {exc}") from None
    if scenario is not None and scenario.vm.guest is not None:
        return scenario.vm.guest
    return GuestConfig()


def _seed(settings: GuestSettings, scenario: Scenario | None) -> int:
    if settings.seed is not None:
        return settings.seed
    return scenario.seed if scenario is not None else 0


def _simulator(vm: VmConfig, settings: GuestSettings, scenario: Scenario | None) -> Simulator:
    import random

    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.server import Simulator
    from qmpsim.vm.machine import Machine

    profile = settings.profile or (scenario.profile if scenario is not None else DEFAULT_PROFILE)
    machine = Machine(
        vm=vm, profile=get_profile(profile), rng=random.Random(_seed(settings, scenario))
    )
    # Several monitors are served at once, each one client at a time (see _monitor).
    return Simulator(machine, multi_client=True, transcript=Transcript(max_entries=10_000))


async def _monitor(sim: Simulator, listener: trio.SocketListener) -> None:
    """One QMP monitor: one client at a time, the next one left in the backlog (QEMU's way)."""

    import trio

    from qmpsim.runtime.listen import accept_loop

    slot = trio.Semaphore(1)

    async def ready() -> None:
        await slot.acquire()

    async def serve(stream: trio.SocketStream) -> None:
        try:
            await sim.handle_stream(stream)
        finally:
            slot.release()

    await accept_loop(listener, lambda stream: functools.partial(serve, stream), ready=ready)


async def _host_signals(sim: Simulator, messages: Messages) -> None:
    """Wait for SIGTERM, SIGINT or SIGHUP; report it as QEMU does and shut the VM down."""
    import trio

    info = await trio.to_thread.run_sync(signal.sigwaitinfo, HOST_SIGNALS, abandon_on_cancel=True)
    if info.si_pid:
        sender = sender_name(info.si_pid)
        messages.error(f"terminating on signal {info.si_signo} from pid {info.si_pid} ({sender})")
    else:
        messages.error(f"terminating on signal {info.si_signo}")
    from qmpsim.vm.machine import HostSignal

    if not sim.machine.exited:
        sim.cause(HostSignal())


def _bind_control(
    settings: GuestSettings, name: str | None, messages: Messages
) -> UnixSocketFile | None:
    """This VM's control socket, bound and listening in the first usable run directory
    (before a daemonizing parent exits, so ``qmpsim ctl`` works as soon as it has)."""
    from qmpsim.runtime.listen import ListenError, bind_unix

    for directory in run_dirs(settings):
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            return bind_unix(str(control_socket(directory, name)), backlog=8)
        except (OSError, ListenError):
            continue
    messages.error("qmpsim: no usable run directory; this VM has no control socket")
    return None


async def _serve(
    sim: Simulator,
    inv: Invocation,
    chardevs: list[OpenChardev],
    control: UnixSocketFile | None,
    settings: GuestSettings,
    scenario: Scenario | None,
    messages: Messages,
) -> None:
    import trio

    from qmpsim.runtime.listen import accept_loop

    async with sim, trio.open_nursery() as nursery:
        listeners = []
        for monitor in inv.monitors:
            chardev = _chardev(chardevs, monitor.chardev)
            if monitor.mode == "control" and chardev.sock is not None:
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(chardev.sock)))
                nursery.start_soon(_monitor, sim, listeners[-1])
        nursery.start_soon(_host_signals, sim, messages)
        session = _Control(nursery, sim, settings, scenario)
        if scenario is not None:
            await session.session()
        if control is not None:
            nursery.start_soon(
                accept_loop,
                control.listener(),
                lambda stream: functools.partial(session.handle, stream),
            )
        await sim.wait_exited()
        for listener in listeners:  # QEMU's monitors go away as it exits
            listener.socket.close()
        with trio.move_on_after(1.0):  # a client that does not read cannot hold QEMU up
            await sim.wait_no_clients()
        nursery.cancel_scope.cancel()


class _Control:
    """The scenario session and the control channel, started on first use: an idle VM
    nobody drives never loads the scenario language."""

    def __init__(
        self,
        nursery: trio.Nursery,
        sim: Simulator,
        settings: GuestSettings,
        scenario: Scenario | None,
    ) -> None:
        self.nursery = nursery
        self.sim = sim
        self.settings = settings
        self.scenario = scenario
        self._channel: ControlChannel | None = None

    async def session(self) -> ControlChannel:
        """Start playing the scenario (idle without one); the control channel driving it."""
        if self._channel is None:
            from qmpsim.runtime.control import ControlChannel
            from qmpsim.runtime.session import IDLE, start_session

            seed = _seed(self.settings, self.scenario)
            base = self.scenario if self.scenario is not None else IDLE
            played = dataclasses.replace(
                base, profile=self.sim.machine.profile.name, vm=self.sim.machine.vm, seed=seed
            )
            session = await start_session(
                self.nursery, self.sim, played, speed=self.settings.speed, seed=self.settings.seed
            )
            self._channel = ControlChannel(self.sim, played, lambda: session.runner, session.reset)
        return self._channel

    async def handle(self, stream: trio.SocketStream) -> None:
        """One control connection."""
        channel = await self.session()
        await channel.handle_stream(stream)
