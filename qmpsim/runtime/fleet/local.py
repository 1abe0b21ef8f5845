"""One process's share of a fleet: the :class:`Fleet` that serves its VMs, and the
control channel's routing (this process's VMs answered here, the others forwarded
to the worker that owns them).
"""

from __future__ import annotations

import functools
import logging
import os
import socket as stdsocket
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from qmpsim.logs import CURRENT_VM
from qmpsim.qmp.profiles import get_profile
from qmpsim.runtime.control import (
    COMMANDS,
    ControlChannel,
    ControlError,
    serve_control_stream,
    serve_control_unix,
)
from qmpsim.runtime.fleet.accept import Acceptor, bind_all
from qmpsim.runtime.fleet.config import FleetConfig, fleet_identities
from qmpsim.runtime.fleet.limits import (
    fds_needed,
    raise_fd_limit,
)
from qmpsim.runtime.fleet.vm import FleetVm
from qmpsim.runtime.listen import ListenError
from qmpsim.runtime.server import Simulator
from qmpsim.runtime.session import IDLE, Session
from qmpsim.scenario.model import Scenario

log = logging.getLogger("qmpsim.fleet")

__all__ = ["Fleet", "FleetControl", "Remote"]

_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


def _plays_something(scenario: Scenario) -> bool:
    return bool(scenario.steps)


class Fleet:
    """``count`` simulated VMs, each on ``directory/<name>.sock``.

    ``scenario`` (``None``: an idle VM) is played by every VM on its own clock,
    with its own seed; ``speed`` scales it as in ``qmpsim serve``.
    ``multi_client`` serves several clients per VM at once.  ``transcript`` is how
    many entries each VM keeps in its transcript, the newest ones (none by
    default: each costs ~0.5 KB and the time to parse a message).  ``part`` (a range of
    indices) serves only those VMs of the fleet, as one worker of
    :func:`run_fleet` does.  Run it with :meth:`run` (``nursery.start(fleet.run)``
    returns once every socket listens).
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
        transcript: int = 0,
        part: range | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if "/" in prefix or "\0" in prefix:
            raise ValueError("the name prefix must not contain '/' or NUL")
        if transcript < 0:
            raise ValueError("transcript must be a number of entries (0: none)")
        if part is not None and (not part or part.step != 1 or part[0] < 0 or part[-1] >= count):
            raise ValueError(f"part {part} is not a range of VMs of a fleet of {count}")
        self.count = count
        self.directory = os.fspath(directory)
        self.scenario = scenario if scenario is not None else IDLE
        self.prefix = prefix
        self.seed = seed
        self.speed = speed
        self.multi_client = multi_client
        self.transcript = transcript
        self.part = range(count) if part is None else part
        self.width = len(str(count - 1))
        longest = os.path.join(self.directory, f"{prefix}{count - 1}.sock")
        if len(os.fsencode(longest)) > _MAX_UNIX_PATH:
            raise ListenError(
                f"cannot listen on {longest}: longer than the {_MAX_UNIX_PATH} bytes a Unix "
                "socket path may have; choose a shorter directory"
            )
        self.vms: list[FleetVm] = [
            FleetVm(ident, os.path.join(self.directory, f"{ident.name}.sock"), self)
            for ident in fleet_identities(count, prefix=prefix, seed=seed, part=self.part)
        ]
        self._nursery: trio.Nursery | None = None
        self._acceptor: Acceptor[FleetVm] | None = None

    @classmethod
    def from_config(cls, config: FleetConfig, part: range | None = None) -> Fleet:
        """The fleet ``config`` describes, or its VMs in ``part``."""
        return cls(
            config.count,
            config.directory,
            config.scenario,
            prefix=config.prefix,
            seed=config.seed,
            speed=config.speed,
            multi_client=config.multi_client,
            transcript=config.transcript,
            part=part,
        )

    @property
    def config(self) -> FleetConfig:
        """What describes the whole fleet (every part of it)."""
        return FleetConfig(
            self.count,
            self.directory,
            self.scenario,
            self.prefix,
            self.seed,
            self.speed,
            self.multi_client,
            self.transcript,
        )

    def __len__(self) -> int:
        return len(self.vms)

    def index_of(self, name: str) -> int | None:
        """The index in the whole fleet of the VM called ``name``; ``None`` if there is none."""
        return _index_of(name, self.prefix, self.width, self.count)

    def vm(self, name: str) -> FleetVm:
        """The VM called ``name``; ``KeyError`` naming the range of names otherwise."""
        index = self.index_of(name)
        if index is None or index not in self.part:
            raise KeyError(_unknown(name, self.vms[0].name, self.vms[-1].name))
        return self.vms[index - self.part.start]

    @property
    def paths(self) -> list[str]:
        """Every VM's monitor socket, in order."""
        return [vm.path for vm in self.vms]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve every VM until cancelled; the sockets are removed on the way out.

        Raises :class:`ListenError` (before serving anything) when a socket cannot
        be created, and :class:`FleetLimitError` when the file descriptor limit is
        too low for every VM to have a client.
        """
        raise_fd_limit(fds_needed(len(self.vms)))
        sockets = bind_all([vm.path for vm in self.vms])
        acceptor = Acceptor(self._accepted, multi_client=self.multi_client)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._acceptor = acceptor
                for vm, bound in zip(self.vms, sockets, strict=True):
                    vm.socket = bound
                    vm.listening = True
                    acceptor.add(vm)
                nursery.start_soon(acceptor.run)
                if self.scenario.clock == "startup" and _plays_something(self.scenario):
                    # The timeline runs from the start, like QEMU's, client or not.
                    for vm in self.vms:
                        await self.start(vm)
                log.info("fleet of %d VMs listening in %s", len(self.vms), self.directory)
                task_status.started()
        finally:
            self._nursery = None
            self._acceptor = None
            acceptor.close()
            for vm, bound in zip(self.vms, sockets, strict=True):
                bound.close()
                vm._close()

    async def start(self, vm: FleetVm) -> Simulator:
        """Start the VM's simulator (and its scenario, if it plays one) if it is not running."""
        if vm._starting is not None:
            await vm._starting.wait()  # another task is starting it
        elif not vm.live:
            if self._nursery is None:
                raise RuntimeError("the fleet is not running")
            starting = vm._starting = trio.Event()
            try:
                sim = vm.sim
                # Attached to the fleet's nursery rather than entered: no nursery and
                # no task per VM, only a task for a scenario that plays.
                sim.attach(self._nursery)
                vm.live = True
                sim.on_exit(functools.partial(self._exited, vm))
                if _plays_something(vm.scenario):
                    vm.session = Session(sim, vm.scenario, speed=self.speed)
                    await self._start_session(vm, vm.session)
            finally:
                vm._starting = None
                starting.set()
        return vm.sim

    async def start_session(self, vm: FleetVm) -> Session:
        """The VM's scenario session, started now if it was not (idle VMs start lazily)."""
        await self.start(vm)
        if vm.session is None:
            vm.session = Session(vm.sim, vm.scenario, speed=self.speed)
            await self._start_session(vm, vm.session)
        return vm.session

    async def _start_session(self, vm: FleetVm, session: Session) -> None:
        assert self._nursery is not None
        # The task inherits this context: its log lines name the VM.
        named = CURRENT_VM.set(vm.name)
        try:
            await self._nursery.start(session.run)
        finally:
            CURRENT_VM.reset(named)

    def _accepted(self, vm: FleetVm, conn: stdsocket.socket) -> None:
        assert self._nursery is not None and self._acceptor is not None
        if not self.multi_client:
            # Like QEMU: while a client is connected, the next waits in the backlog.
            self._acceptor.remove(vm)
        self._nursery.start_soon(self._serve_client, vm, conn)

    async def _serve_client(self, vm: FleetVm, conn: stdsocket.socket) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        CURRENT_VM.set(vm.name)  # the connection's log lines name its VM
        try:
            sim = await self.start(vm)
        except BaseException:
            await trio.aclose_forcefully(stream)
            self._client_left(vm)
            raise
        assert self._acceptor is not None
        # While it waits for its client's next command, no task serves the connection:
        # the acceptor watches its socket with the listeners.
        ended = functools.partial(self._client_left, vm)
        await sim.handle_socket_stream(stream, self._acceptor, ended)

    def _client_left(self, vm: FleetVm) -> None:
        if vm.listening and not self.multi_client and self._acceptor is not None:
            self._acceptor.add(vm)  # the next client may connect

    def _exited(self, vm: FleetVm) -> None:
        """The VM exited: like QEMU's process ending, its monitor socket goes away."""
        if not vm.listening:
            return
        log.info("%s: the VM exited", vm.name)
        if self._acceptor is not None:
            self._acceptor.remove(vm)
        vm._close()
        if vm.socket is not None:
            vm.socket.close()

    # --- the control channel ---------------------------------------------------------

    async def serve_control(
        self, path: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the fleet's control channel on the Unix socket ``path`` until cancelled."""
        await FleetControl(self, []).serve(path, task_status=task_status)

    async def handle_control(self, stream: trio.abc.Stream) -> None:
        """One control connection: QMP framing, then ``qmpsim-fleet`` and ``qmpsim-*``."""
        await FleetControl(self, []).handle(stream)

    async def vm_command(self, vm: FleetVm, command: str, arguments: dict[str, Any]) -> Any:
        """Run one single-VM control command (``qmpsim-status``, …) on ``vm``."""
        if command == "qmpsim-transcript" and not self.transcript:
            raise ControlError(
                "this fleet keeps no transcripts: start it with --transcript N to keep "
                "each VM's newest N entries"
            )
        session = await self.start_session(vm)
        channel = ControlChannel(vm.sim, vm.scenario, lambda: session.runner, session.reset)
        return await channel.execute(command, arguments)


def _index_of(name: str, prefix: str, width: int, count: int) -> int | None:
    digits = name[len(prefix) :]
    if not name.startswith(prefix) or len(digits) != width:
        return None
    if not (digits.isascii() and digits.isdigit()):
        return None
    index = int(digits)
    return index if index < count else None


def _unknown(name: str, first: str, last: str) -> str:
    return f"no VM named {name!r} in the fleet ({first}..{last})"


class Remote(Protocol):
    """A worker process as the control channel forwards to it."""

    part: range
    """The indices of the VMs it serves."""

    async def call(self, command: str, arguments: dict[str, Any]) -> Any:
        """Run a control command there: its result, or its error as ``ControlError``."""


class FleetControl:
    """The fleet's control channel: its own VMs answered here, the others forwarded
    to the worker that owns them."""

    def __init__(self, local: Fleet, workers: Sequence[Remote]) -> None:
        self.local = local
        self.workers = workers
        config = local.config
        self.first = f"{config.prefix}{0:0{local.width}d}"
        self.last = f"{config.prefix}{config.count - 1}"

    async def serve(
        self, path: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve_control_unix(path, self.handle, task_status=task_status)

    async def handle(self, stream: trio.abc.Stream) -> None:
        version = get_profile(self.local.scenario.profile).greeting()["QMP"]["version"]
        await serve_control_stream(stream, version, self.execute)

    async def execute(self, command: str, arguments: dict[str, Any]) -> Any:
        if command == "query-commands":
            return [{"name": name} for name in ("qmpsim-fleet", *COMMANDS)]
        if command == "qmpsim-fleet":
            listing = [vm.summary() for vm in self.local.vms]
            for worker in self.workers:
                listing.extend(await worker.call(command, {}))
            return listing
        if command not in COMMANDS:
            raise ControlError(f"The command {command} has not been found", "CommandNotFound")
        if "vm" not in arguments:
            raise ControlError("Parameter 'vm' is missing")
        name = arguments["vm"]
        if not isinstance(name, str):
            raise ControlError("Parameter 'vm' expects string")
        index = self.local.index_of(name)
        if index is None:
            raise ControlError(_unknown(name, self.first, self.last))
        if index in self.local.part:
            rest = {k: v for k, v in arguments.items() if k != "vm"}
            return await self.local.vm_command(self.local.vm(name), command, rest)
        (worker,) = (w for w in self.workers if index in w.part)
        return await worker.call(command, arguments)
