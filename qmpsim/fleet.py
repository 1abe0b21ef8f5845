"""Fleet mode: many simulated VMs in one process, each behind its own monitor socket.

A :class:`Fleet` of ``count`` VMs serves ``DIR/<name>.sock`` for each of them.
Every VM is independent: its own name, uuid, seed (so its own fake data), its
own :class:`~qmpsim.server.Simulator` and clock, and its own run of the
scenario.  One optional control socket reaches all of them (``qmpsim-fleet``
lists them; the ``qmpsim-*`` commands of the single-VM control channel take a
``vm`` argument).

It is built for load-testing management planes that supervise thousands of
VMs, so each VM costs as little as possible: one trio task that holds its
simulator and accepts its clients, plus the simulator's own flush task; a
scenario runner only when the scenario has something to play.  Sockets are
bound synchronously in one batch (no thread round trip per socket).

Beyond one process: fleets share nothing, so run one ``qmpsim fleet`` per core
or per host with distinct ``--dir``/``--prefix``/``--seed`` values.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import resource
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .control import (
    COMMANDS,
    ControlChannel,
    ControlError,
    serve_control_stream,
    serve_control_unix,
)
from .engine import IDLE, Session
from .errors import QmpSimError
from .scenario import Scenario, build_machine
from .server import ListenError, Simulator, UnixSocketFile, bind_unix
from .transcript import Transcript

FLEET_TRANSCRIPT_LIMIT = 1_000
"""Entries each VM of a fleet keeps in its transcript (the newest ones)."""

__all__ = [
    "FD_HEADROOM",
    "Fleet",
    "FleetVm",
    "VmIdentity",
    "fleet_identities",
    "raise_fd_limit",
    "serve_fleet",
]

log = logging.getLogger("qmpsim.fleet")

FD_HEADROOM = 256
"""File descriptors kept free beyond one per VM: clients, the control socket, trio."""

_BACKLOG = 16
_UUID_NAMESPACE = uuid.UUID("5f1c0f4e-8a53-4b8e-9a57-0c3d2f6a6d11")
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True)
class VmIdentity:
    """What tells one VM of a fleet from the others."""

    index: int
    name: str
    uuid: str
    seed: int


def fleet_identities(count: int, *, prefix: str = "vm", seed: int = 0) -> list[VmIdentity]:
    """``count`` distinct, reproducible identities: ``prefix`` + a zero-padded index.

    The uuid and seed of each VM derive from ``seed`` and its name, so two fleets
    with different seeds (or prefixes) differ everywhere.
    """
    if count < 1:
        raise ValueError("a fleet needs at least one VM")
    width = len(str(count - 1))
    out = []
    for i in range(count):
        name = f"{prefix}{i:0{width}d}"
        key = f"{seed}/{name}"
        vm_uuid = str(uuid.uuid5(_UUID_NAMESPACE, key))
        vm_seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        out.append(VmIdentity(i, name, vm_uuid, vm_seed))
    return out


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (up to the hard limit).

    Returns the new soft limit.  When the hard limit is below ``needed`` a
    :class:`~qmpsim.errors.QmpSimError` says so and what to do, before any
    socket is opened (rather than failing with EMFILE half-way).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise QmpSimError(
            f"this fleet needs {needed} file descriptors but the hard limit is {hard}: "
            f"raise it (ulimit -Hn, or LimitNOFILE= in a systemd unit), or split the "
            f"fleet over several processes"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


@dataclass(eq=False)
class FleetVm:
    """One VM of a fleet: its identity, socket, scenario and simulator."""

    identity: VmIdentity
    path: str
    scenario: Scenario
    sim: Simulator
    session: Session | None = None
    listening: bool = False
    closed: trio.Event = field(default_factory=trio.Event)
    """Set when the VM's socket is gone (the VM exited, or the fleet stopped)."""
    listener: trio.SocketListener | None = None

    @property
    def name(self) -> str:
        """The VM's name (also its socket's file name, without ``.sock``)."""
        return self.identity.name

    def summary(self) -> dict[str, Any]:
        """What ``qmpsim-fleet`` reports about this VM."""
        runner = self.session.runner if self.session is not None else None
        timeline = "idle" if runner is None else "done" if runner.done.is_set() else "running"
        return {
            "name": self.name,
            "uuid": self.identity.uuid,
            "socket": self.path,
            "status": "exited" if self.sim.exited else self.sim.machine.status,
            "clients": len(self.sim.clients),
            "timeline": timeline,
        }


def _plays_something(scenario: Scenario) -> bool:
    return bool(scenario.steps)


class Fleet:
    """``count`` simulated VMs, each on ``directory/<name>.sock``.

    ``scenario`` (``None``: an idle VM) is played by every VM on its own clock,
    with its own seed; ``speed`` scales it as in ``qmpsim serve``.
    ``multi_client`` serves several clients per VM at once.  Run it with
    :meth:`run` (``nursery.start(fleet.run)`` returns once every socket listens).
    """

    def __init__(
        self,
        count: int,
        directory: str | os.PathLike[str],
        scenario: Scenario | None = None,
        *,
        prefix: str = "vm",
        seed: int = 0,
        speed: float = 1.0,
        multi_client: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if "/" in prefix or "\0" in prefix:
            raise ValueError("the name prefix must not contain '/' or NUL")
        self.directory = os.fspath(directory)
        self.scenario = scenario if scenario is not None else IDLE
        self.speed = speed
        self.multi_client = multi_client
        self.vms: list[FleetVm] = []
        self._by_name: dict[str, FleetVm] = {}
        self._nursery: trio.Nursery | None = None
        for ident in fleet_identities(count, prefix=prefix, seed=seed):
            vm_scenario = dataclasses.replace(
                self.scenario,
                vm=dataclasses.replace(
                    self.scenario.vm, name=ident.name, uuid=ident.uuid, seed=ident.seed
                ),
            )
            path = os.path.join(self.directory, f"{ident.name}.sock")
            if len(os.fsencode(path)) > _MAX_UNIX_PATH:
                raise ListenError(
                    f"cannot listen on {path}: longer than the {_MAX_UNIX_PATH} bytes a Unix "
                    "socket path may have; choose a shorter directory"
                )
            sim = Simulator(
                build_machine(vm_scenario),
                multi_client=multi_client,
                transcript=Transcript(max_entries=FLEET_TRANSCRIPT_LIMIT),
            )
            vm = FleetVm(ident, path, vm_scenario, sim)
            self.vms.append(vm)
            self._by_name[ident.name] = vm

    def __len__(self) -> int:
        return len(self.vms)

    def vm(self, name: str) -> FleetVm:
        """The VM called ``name``; ``KeyError`` naming the range of names otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no VM named {name!r} in the fleet ({self.vms[0].name}..{self.vms[-1].name})"
            ) from None

    @property
    def paths(self) -> list[str]:
        """Every VM's monitor socket, in order."""
        return [vm.path for vm in self.vms]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve every VM until cancelled; the sockets are removed on the way out.

        Raises :class:`ListenError` (before serving anything) when a socket cannot
        be created, and :class:`QmpSimError` when the file descriptor limit is too low.
        """
        raise_fd_limit(len(self.vms) + FD_HEADROOM)
        sockets = _bind_all([vm.path for vm in self.vms])
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for vm, bound in zip(self.vms, sockets, strict=True):
                    await nursery.start(self._run_vm, vm, bound, nursery)
                    if _plays_something(vm.scenario):
                        await self.start_session(vm)
                log.info("fleet of %d VMs listening in %s", len(self.vms), self.directory)
                task_status.started()
        finally:
            self._nursery = None
            for vm, bound in zip(self.vms, sockets, strict=True):
                bound.close()
                vm.listening = False
                vm.closed.set()

    async def start_session(self, vm: FleetVm) -> Session:
        """The VM's scenario session, started now if it was not (idle VMs start lazily)."""
        if vm.session is None:
            if self._nursery is None:
                raise RuntimeError("the fleet is not running")
            vm.session = Session(vm.sim, vm.scenario, speed=self.speed)
            await self._nursery.start(vm.session.run)
            # A played scenario can end the VM with nobody connected (a guest shutdown).
            self._nursery.start_soon(self._close_on_exit, vm)
        return vm.session

    @staticmethod
    async def _close_on_exit(vm: FleetVm) -> None:
        await vm.sim.wait_exited()
        await _stop_listening(vm)

    async def _run_vm(
        self,
        vm: FleetVm,
        bound: UnixSocketFile,
        clients: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = bound.listener()
        vm.listener = listener
        async with vm.sim:
            vm.listening = True
            task_status.started()
            while not vm.sim.exited:
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    break  # the VM exited: _stop_listening closed the listener
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                        log.error("%s: accept failed (%s); retrying shortly", vm.name, exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                if vm.sim.exited:
                    await trio.aclose_forcefully(stream)
                    break
                clients.start_soon(self._serve_client, vm, stream)
        # Like QEMU's process ending: the monitor socket goes away with the VM.
        vm.listening = False
        bound.close()
        vm.closed.set()

    @staticmethod
    async def _serve_client(vm: FleetVm, stream: trio.SocketStream) -> None:
        await vm.sim.handle_stream(stream)
        if vm.sim.exited:
            await _stop_listening(vm)

    # --- the control channel ---------------------------------------------------------

    async def serve_control(
        self, path: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the fleet's control channel on the Unix socket ``path`` until cancelled."""
        await serve_control_unix(path, self.handle_control, task_status=task_status)

    async def handle_control(self, stream: trio.abc.Stream) -> None:
        """One control connection: QMP framing, then ``qmpsim-fleet`` and ``qmpsim-*``."""
        version = self.vms[0].sim.machine.profile.greeting()["QMP"]["version"]
        await serve_control_stream(stream, version, self._control_command)

    async def _control_command(self, command: str, arguments: dict[str, Any]) -> Any:
        if command == "query-commands":
            return [{"name": name} for name in ("qmpsim-fleet", *COMMANDS)]
        if command == "qmpsim-fleet":
            return [vm.summary() for vm in self.vms]
        if command not in COMMANDS:
            raise ControlError(f"The command {command} has not been found", "CommandNotFound")
        if "vm" not in arguments:
            raise ControlError("Parameter 'vm' is missing")
        name = arguments["vm"]
        if not isinstance(name, str):
            raise ControlError("Parameter 'vm' expects string")
        if name not in self._by_name:
            raise ControlError(_unknown(name, self.vms))
        vm = self._by_name[name]
        session = await self.start_session(vm)
        channel = ControlChannel(vm.sim, vm.scenario, lambda: session.runner, session.reset)
        return await channel.execute(command, {k: v for k, v in arguments.items() if k != "vm"})


async def _stop_listening(vm: FleetVm) -> None:
    """The VM exited: close its listener, which ends its accept loop and its socket."""
    if vm.listening and vm.listener is not None:
        vm.listening = False
        log.info("%s: the VM exited", vm.name)
        await vm.listener.aclose()


def _unknown(name: str, vms: Sequence[FleetVm]) -> str:
    return f"no VM named {name!r} in the fleet ({vms[0].name}..{vms[-1].name})"


def _bind_all(paths: Sequence[str]) -> list[UnixSocketFile]:
    """Bind and listen on every path (mode 0600 from birth), or on none of them."""
    bound: list[UnixSocketFile] = []
    try:
        for path in paths:
            bound.append(bind_unix(path, _BACKLOG))
    except BaseException:
        for b in bound:
            b.close()
        raise
    return bound


async def serve_fleet(
    fleet: Fleet,
    *,
    control: str | None = None,
    announce: Callable[[str], None] = print,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fleet`` (and its control channel at ``control``) until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        first, last = fleet.vms[0], fleet.vms[-1]
        what = f"scenario {fleet.scenario.name!r}" if fleet.scenario is not IDLE else "idle VMs"
        announce(
            f"fleet of {len(fleet)} VMs ({what}) listening on "
            f"{first.path} … {os.path.basename(last.path)}"
        )
        if control is not None:
            announce(f"control channel on unix:{await nursery.start(fleet.serve_control, control)}")
        task_status.started()
