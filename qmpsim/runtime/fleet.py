"""Fleet mode: many simulated VMs, each behind its own monitor socket, over one or more processes.

A :class:`Fleet` of ``count`` VMs serves ``DIR/<name>.sock`` for each of them.
Every VM is independent: its own name, uuid, seed (so its own fake data), its
own :class:`~qmpsim.runtime.server.Simulator` and clock, and its own run of the
scenario.  One optional control socket reaches all of them (``qmpsim-fleet``
lists them; the ``qmpsim-*`` commands of the single-VM control channel take a
``vm`` argument).

It is built for load-testing management planes, which connect to every VM and
stay connected, so a VM costs as little as possible:

- one task accepts for all the VMs of a process and watches their idle
  connections: the listening sockets, and the sockets of connections waiting
  for their client's next command, sit in one epoll (kqueue) set, which trio
  waits on as a single file descriptor;
- a VM's simulator is built and started when it is first needed (a client
  connects, the control channel drives it, or a ``clock: startup`` timeline
  plays), so idle VMs are a socket and a name;
- a connection runs tasks only while it has something to read, write or run
  (:meth:`~qmpsim.server.Simulator.handle_socket_stream`); a VM playing a
  scenario runs one task for it.

File descriptors are reserved for the connected fleet, not the listeners alone:
:data:`FD_PER_VM` a VM (its listener and one client) plus :data:`FD_HEADROOM`.
A fleet the hard limit cannot hold is refused before anything starts
(:func:`check_fd_limit`), saying how many workers would hold it.

:func:`run_fleet` spreads the VMs over several processes ("workers", contiguous
ranges of names), so a fleet uses every core and each worker has its own file
descriptor limit.  The process that runs it serves the first range itself,
owns the control socket and forwards each control request to the worker that
owns the VM; the other workers are child processes started with
:func:`subprocess`-style ``python -c`` and a socketpair.  A worker that dies is
reported and stops the fleet; a stopped fleet stops its workers, and every
socket file goes with them.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import functools
import gc
import hashlib
import json
import logging
import math
import os
import pickle
import resource
import selectors
import signal
import socket as stdsocket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio

from qmpsim.errors import QmpSimError
from qmpsim.logs import CURRENT_VM
from qmpsim.qmp.profiles import get_profile
from qmpsim.qmp.transcript import Direction, Entry, Transcript
from qmpsim.runtime.control import (
    COMMANDS,
    ControlChannel,
    ControlError,
    answer,
    serve_control_stream,
    serve_control_unix,
)
from qmpsim.runtime.engine import IDLE, Session
from qmpsim.runtime.listen import ListenError, UnixSocketFile, bind_unix, clear_stale_socket
from qmpsim.runtime.server import IdleConnection, Simulator
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.model import Scenario

__all__ = [
    "FD_HEADROOM",
    "FD_PER_VM",
    "Fleet",
    "FleetConfig",
    "FleetLimitError",
    "FleetVm",
    "VmIdentity",
    "WorkerFailed",
    "check_fd_limit",
    "default_workers",
    "fds_needed",
    "fewer_collections",
    "fleet_identities",
    "raise_fd_limit",
    "run_fleet",
    "serve_fleet",
    "split_fleet",
    "worker_main",
]

log = logging.getLogger("qmpsim.fleet")

FD_PER_VM = 2
"""File descriptors each VM of a fleet needs: its listening socket and one client."""

FD_HEADROOM = 256
"""File descriptors a fleet process keeps beyond :data:`FD_PER_VM` a VM: the control
socket and its clients, the workers' channels, trio's and Python's own."""

_BACKLOG = 16
_UUID_NAMESPACE = uuid.UUID("5f1c0f4e-8a53-4b8e-9a57-0c3d2f6a6d11")
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
_ACCEPT_RETRY = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
_ACCEPTS_PER_ROUND = 64  # a VM's burst of connections does not starve the others
_ACCEPT_BATCH = 64  # listeners served before the connections accepted get to run
_STOP_GRACE = 5.0  # seconds a worker has to stop before it is killed
_GC_YOUNG = 10_000
"""Allocations between two passes of the garbage collector over young objects in a
fleet process (Python's default: 700), so that the short-lived objects of the
connections being served die before a pass sees them (see :func:`fewer_collections`)."""


class FleetLimitError(QmpSimError):
    """The fleet cannot run within this system's limits; the message says what to do."""


@dataclass(frozen=True, slots=True)  # slots: a fleet holds thousands
class VmIdentity:
    """What tells one VM of a fleet from the others."""

    index: int
    name: str
    uuid: str
    seed: int


def fleet_identities(
    count: int, *, prefix: str = "vm", seed: int = 0, part: range | None = None
) -> list[VmIdentity]:
    """``count`` distinct, reproducible identities: ``prefix`` + a zero-padded index.

    The uuid and seed of each VM derive from ``seed`` and its name, so two fleets
    with different seeds (or prefixes) differ everywhere.  ``part`` (a range of
    indices) gives only those VMs, named as in the whole fleet.
    """
    if count < 1:
        raise ValueError("a fleet needs at least one VM")
    width = len(str(count - 1))
    out = []
    for i in range(count) if part is None else part:
        name = f"{prefix}{i:0{width}d}"
        key = f"{seed}/{name}"
        vm_uuid = str(uuid.uuid5(_UUID_NAMESPACE, key))
        vm_seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        out.append(VmIdentity(i, name, vm_uuid, vm_seed))
    return out


# --- file descriptors and workers ------------------------------------------------------


def fds_needed(vms: int) -> int:
    """File descriptors a fleet process serving ``vms`` VMs, each with a client, needs."""
    return vms * FD_PER_VM + FD_HEADROOM


def default_workers() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_fleet(count: int, workers: int) -> list[range]:
    """The VM indices of each worker: contiguous ranges, sizes within one of each other.

    Never more workers than VMs.
    """
    if count < 1 or workers < 1:
        raise ValueError("a fleet needs at least one VM and one worker")
    workers = min(workers, count)
    size, extra = divmod(count, workers)
    parts, start = [], 0
    for i in range(workers):
        stop = start + size + (1 if i < extra else 0)
        parts.append(range(start, stop))
        start = stop
    return parts


def _hard_fd_limit() -> int | None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def check_fd_limit(count: int, workers: int, hard: int | None = -1) -> None:
    """Refuse, before anything starts, a fleet whose busiest worker would run out of
    file descriptors once every VM has a client (:class:`FleetLimitError`).

    ``hard`` is the hard RLIMIT_NOFILE (``None``: unlimited); this process's by default.
    """
    if hard == -1:
        hard = _hard_fd_limit()
    busiest = len(split_fleet(count, workers)[0])
    need = fds_needed(busiest)
    if hard is None or need <= hard:
        return
    fits = (hard - FD_HEADROOM) // FD_PER_VM
    hint = (
        f"or use --workers {math.ceil(count / fits)} or more (each worker has its own limit)"
        if fits >= 1
        else f"it must be above {FD_HEADROOM + FD_PER_VM}"
    )
    per = "in one process" if workers == 1 else f"in each of {min(workers, count)} workers"
    raise FleetLimitError(
        f"{count} VMs need {need} file descriptors {per} (a listener and a client per "
        f"VM, plus {FD_HEADROOM}) but the hard limit is {hard}: raise it (ulimit -Hn, "
        f"LimitNOFILE=) {hint}"
    )


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (up to the hard limit).

    Returns the new soft limit.  When the hard limit is below ``needed`` a
    :class:`FleetLimitError` says so and what to do, before any socket is opened
    (rather than failing with EMFILE half-way).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FleetLimitError(
            f"this fleet needs {needed} file descriptors but the hard limit is {hard}: "
            f"raise it (ulimit -Hn, LimitNOFILE=) or spread the fleet over more workers"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the garbage collector less often while a fleet process runs.

    A fleet process holds ~100 long-lived objects a VM, a million at 10,000 VMs,
    and each full collection walks them all (~0.5 s here).  Python starts one
    when enough objects survived two young collections; with thousands of
    clients served at once, the tasks of the connections in flight live just
    long enough to survive them at the default threshold, and full collections
    took over half of the fleet's time.  At :data:`_GC_YOUNG` they mostly die
    first (the memory used stays the same).
    """
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], _GC_YOUNG), *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


# --- one process's VMs -------------------------------------------------------------------


@dataclass(frozen=True)
class FleetConfig:
    """What every worker of a fleet needs to build its share of the VMs."""

    count: int
    directory: str
    scenario: Scenario = IDLE
    prefix: str = "vm"
    seed: int = 0
    speed: float = 1.0
    multi_client: bool = False
    transcript: int = 0


class _NoTranscript(Transcript):
    """What a VM records when the fleet keeps no transcripts: nothing (not even the
    parsing state of each connection, or the time to lex every message)."""

    def record(self, direction: Direction, client: int, time: float, raw: bytes) -> Entry:
        return Entry(direction, client, time, raw)

    def append(self, entry: Entry) -> None:
        pass


@dataclass(eq=False, slots=True)  # slots: a fleet holds thousands
class FleetVm:
    """One VM of a fleet: its identity, socket, and (once needed) simulator and scenario run."""

    identity: VmIdentity
    path: str
    fleet: Fleet = field(repr=False)
    session: Session | None = None
    listening: bool = False
    socket: UnixSocketFile | None = None
    live: bool = False
    """Its simulator runs (it was started for a client, the control channel or a timeline)."""
    _sim: Simulator | None = None
    _scenario: Scenario | None = None
    _starting: trio.Event | None = None
    _gone: bool = False
    _closed: trio.Event | None = None

    @property
    def closed(self) -> trio.Event:
        """Set when the VM's socket is gone (the VM exited, or the fleet stopped)."""
        if self._closed is None:  # made when asked for: most VMs never are
            self._closed = trio.Event()
            if self._gone:
                self._closed.set()
        return self._closed

    def _close(self) -> None:
        self.listening = False
        self._gone = True
        if self._closed is not None:
            self._closed.set()

    @property
    def name(self) -> str:
        """The VM's name (also its socket's file name, without ``.sock``)."""
        return self.identity.name

    @property
    def scenario(self) -> Scenario:
        """The fleet's scenario with this VM's name, uuid and seed."""
        if self._scenario is None:
            base = self.fleet.scenario
            ident = self.identity
            self._scenario = dataclasses.replace(
                base,
                vm=dataclasses.replace(base.vm, name=ident.name, uuid=ident.uuid),
                seed=ident.seed,
            )
        return self._scenario

    @property
    def sim(self) -> Simulator:
        """The VM's simulator, built on first use."""
        if self._sim is None:
            keep = self.fleet.transcript
            self._sim = Simulator(
                build_machine(self.scenario),
                multi_client=self.fleet.multi_client,
                transcript=Transcript(max_entries=keep) if keep else _NoTranscript(),
            )
        return self._sim

    def summary(self) -> dict[str, Any]:
        """What ``qmpsim-fleet`` reports about this VM."""
        runner = self.session.runner if self.session is not None else None
        timeline = "idle" if runner is None else "done" if runner.done.is_set() else "running"
        sim = self._sim
        if sim is None:
            status, clients = self.fleet.scenario.vm.initial_state, 0
        else:
            status = "exited" if sim.exited else sim.machine.status
            clients = len(sim.clients)
        return {
            "name": self.name,
            "uuid": self.identity.uuid,
            "socket": self.path,
            "status": status,
            "clients": clients,
            "timeline": timeline,
        }


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
        self._acceptor: _Acceptor | None = None

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
        sockets = _bind_all([vm.path for vm in self.vms])
        acceptor = _Acceptor(self._accepted)
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
        await _FleetControl(self, []).serve(path, task_status=task_status)

    async def handle_control(self, stream: trio.abc.Stream) -> None:
        """One control connection: QMP framing, then ``qmpsim-fleet`` and ``qmpsim-*``."""
        await _FleetControl(self, []).handle(stream)

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


def _bind_all(paths: Sequence[str]) -> list[UnixSocketFile]:
    """Bind and listen on every path (mode 0600 from birth), or on none of them."""
    bound: list[UnixSocketFile] = []
    try:
        for path in paths:
            socket_file = bind_unix(path, _BACKLOG)
            socket_file.sock.setblocking(False)  # the acceptor only accepts what is ready
            bound.append(socket_file)
    except BaseException:
        for b in bound:
            b.close()
        raise
    return bound


class _Acceptor:
    """Accepts connections for every listening VM of a fleet process, and watches its
    idle connections, in one task (an :class:`~qmpsim.server.IdleWatcher`).

    The listening sockets and the sockets of idle connections are registered in
    one epoll (kqueue) set, whose own file descriptor trio waits on: a task per
    VM would cost ~2 KB each, idle, and a task per idle connection ~5 KB.
    """

    def __init__(self, accepted: Callable[[FleetVm, stdsocket.socket], None]) -> None:
        self._selector = selectors.DefaultSelector()
        self._accepted = accepted
        self._retrying = False

    def watch(self, fd: int, idle: IdleConnection) -> None:
        self._selector.register(fd, selectors.EVENT_READ, idle)

    def unwatch(self, fd: int) -> None:
        with suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def add(self, vm: FleetVm) -> None:
        assert vm.socket is not None
        with suppress(KeyError):  # already there
            self._selector.register(vm.socket.sock, selectors.EVENT_READ, vm)

    def remove(self, vm: FleetVm) -> None:
        if vm.socket is not None:
            with suppress(KeyError, ValueError):  # not there, or already closed
                self._selector.unregister(vm.socket.sock)

    async def run(self) -> None:
        fd = self._selector.fileno()
        while True:
            await trio.lowlevel.wait_readable(fd)
            # Thousands connect at once: the ready listeners are served a batch at a
            # time, and the connections of a batch get to run (and finish setting
            # up) before the next is accepted, which bounds the memory that setting
            # up takes at once.  Selecting again after each accept would scan every
            # ready listener each time.
            ready = self._selector.select(0)
            for start in range(0, len(ready), _ACCEPT_BATCH):
                for key, _ in ready[start : start + _ACCEPT_BATCH]:
                    if isinstance(key.data, IdleConnection):
                        # Unless it was served again since the selection.
                        if self._selector.get_map().get(key.fd) is key:
                            key.data.wake()
                    elif not await self._accept(key.data):
                        break
                await trio.sleep(0)

    async def _accept(self, vm: FleetVm) -> bool:
        """Accept what waits on ``vm``'s listener; ``False`` to pause accepting."""
        assert vm.socket is not None
        for _ in range(_ACCEPTS_PER_ROUND):
            if not vm.listening:
                return True  # closed since the selection
            try:
                conn, _ = vm.socket.sock.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                if not self._retrying:
                    log.error("accept failed (%s); retrying every 0.1 s", exc)
                    self._retrying = True
                await trio.sleep(0.1)
                return False
            if self._retrying:
                log.error("accepting again")
                self._retrying = False
            self._accepted(vm, conn)
            if not vm.fleet.multi_client:
                return True  # it left the set until its client leaves
        return True

    def close(self) -> None:
        """Stop: the idle connections end now, their sockets closed."""
        idle = [key.data for key in self._selector.get_map().values()]
        fd = self._selector.fileno()
        trio.lowlevel.notify_closing(fd)
        self._selector.close()
        for watched in idle:
            if isinstance(watched, IdleConnection):
                watched.close()


# --- the control channel ---------------------------------------------------------------


class _FleetControl:
    """The fleet's control channel: its own VMs answered here, the others forwarded
    to the worker that owns them."""

    def __init__(self, local: Fleet, workers: Sequence[_Worker]) -> None:
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


# --- workers -----------------------------------------------------------------------------


class WorkerFailed(QmpSimError):
    """A worker process could not start, or died."""


class _Channel:
    """JSON lines over a socketpair, between the fleet's first process and a worker."""

    def __init__(self, sock: stdsocket.socket) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._buffer = bytearray()

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        """The next message, ``None`` at the end of the channel."""
        while b"\n" not in self._buffer:
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return None
            self._buffer += data
        end = self._buffer.index(b"\n")
        message: dict[str, Any] = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return message


@dataclass(eq=False)
class _Worker:
    """A child process serving ``part`` of the fleet, and the channel to it."""

    number: int
    part: range
    names: str
    process: trio.Process
    channel: _Channel
    pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = field(default_factory=dict)
    ids: int = 0
    stopping: bool = False

    async def call(self, command: str, arguments: dict[str, Any]) -> Any:
        """Run a control command in the worker: its result, or its error as ControlError."""
        self.ids += 1
        ident = self.ids
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self.pending[ident] = send
        try:
            await self.channel.send({"execute": command, "arguments": arguments, "id": ident})
            reply = await receive.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel):
            raise ControlError(f"worker {self.number} ({self.names}) is gone") from None
        finally:
            self.pending.pop(ident, None)
        if "error" in reply:
            raise ControlError(reply["error"]["desc"], reply["error"]["class"])
        return reply["return"]

    async def dispatch(self) -> None:
        """Hand each reply to its caller until the channel ends."""
        while (message := await self.channel.receive()) is not None:
            waiter = self.pending.pop(message.get("id", -1), None)
            if waiter is not None:
                waiter.send_nowait(message)
        for waiter in self.pending.values():
            waiter.close()

    def exit_text(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"


def _names(config: FleetConfig, part: range) -> str:
    width = len(str(config.count - 1))
    return f"{config.prefix}{part[0]:0{width}d}..{config.prefix}{part[-1]:0{width}d}"


def _worker_env() -> dict[str, str]:
    # The child imports this very qmpsim, wherever this process imported it from.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


async def _start_worker(config: FleetConfig, number: int, part: range, verbose: bool) -> _Worker:
    ours, theirs = stdsocket.socketpair()
    try:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-c",
                "from qmpsim.runtime.fleet import worker_main; worker_main()",
                str(theirs.fileno()),
            ],
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
            env=_worker_env(),
            # A process group of its own: Ctrl-C reaches the first process alone,
            # which then stops the workers and waits for them.
            process_group=0,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    worker = _Worker(number, part, _names(config, part), process, _Channel(ours))
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    settings["scenario"] = base64.b64encode(pickle.dumps(config.scenario)).decode()
    setup = {"config": settings, "part": [part.start, part.stop], "number": number}
    await worker.channel.send({**setup, "verbose": verbose})
    return worker


def _announce_listening(
    config: FleetConfig, workers: int, first: str, announce: Callable[[str], None]
) -> None:
    what = f"scenario {config.scenario.name!r}" if config.scenario is not IDLE else "idle VMs"
    over = f" over {workers} workers" if workers > 1 else ""
    last = f"{config.prefix}{config.count - 1}.sock"
    announce(f"fleet of {config.count} VMs ({what}){over} listening on {first} … {last}")


def _failure(group: BaseExceptionGroup[BaseException]) -> QmpSimError | None:
    """The first :class:`QmpSimError` among the leaves of ``group``, if any."""
    for exc in group.exceptions:
        if isinstance(exc, QmpSimError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _failure(exc)
            if found is not None:
                return found
    return None


async def run_fleet(
    config: FleetConfig,
    *,
    workers: int = 1,
    control: str | None = None,
    announce: Callable[[str], None] = print,
    verbose: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fleet ``config`` describes over ``workers`` processes until cancelled.

    This process serves the first share of the VMs and the control channel; each
    other share is served by a child process.  Raises, the other workers stopped
    first: :class:`FleetLimitError` before starting anything when the file
    descriptor limit is too low, :class:`ListenError` when a socket cannot be made
    (in any worker), :class:`WorkerFailed` when a worker dies.
    """
    check_fd_limit(config.count, workers)
    parts = split_fleet(config.count, workers)
    local = Fleet.from_config(config, parts[0])
    started: list[_Worker] = []
    try:
        async with trio.open_nursery() as nursery:
            for number, part in enumerate(parts[1:], start=1):
                started.append(await _start_worker(config, number, part, verbose))
            await nursery.start(local.run)
            for worker in started:
                reply = await worker.channel.receive()
                if reply is None or "error" in reply:
                    if reply is None:
                        await worker.process.wait()
                    raise WorkerFailed(
                        reply["error"]
                        if reply is not None
                        else f"worker {worker.number} ({worker.names}) {worker.exit_text()} "
                        "while starting"
                    )
                nursery.start_soon(_watch, worker)
            _announce_listening(config, len(parts), local.vms[0].path, announce)
            if control is not None:
                channel = _FleetControl(local, started)
                announce(f"control channel on unix:{await nursery.start(channel.serve, control)}")
            task_status.started()
    except BaseExceptionGroup as group:
        failure = _failure(group)
        if failure is None:
            raise
        raise failure from None
    finally:
        with trio.CancelScope(shield=True):
            await _stop_workers(started, config)


async def _watch(worker: _Worker) -> None:
    await worker.dispatch()
    await worker.process.wait()
    if not worker.stopping:
        raise WorkerFailed(f"worker {worker.number} ({worker.names}) {worker.exit_text()}")


async def _stop_workers(workers: Sequence[_Worker], config: FleetConfig) -> None:
    for worker in workers:
        worker.stopping = True
        await worker.channel.stream.aclose()  # the end of its channel: it stops
        if worker.process.returncode is None:
            with suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        with trio.move_on_after(_STOP_GRACE):
            await worker.process.wait()
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
        if worker.process.returncode != 0:
            # It may not have removed its sockets: remove what nobody listens on.
            for ident in fleet_identities(
                config.count, prefix=config.prefix, seed=config.seed, part=worker.part
            ):
                with suppress(ListenError):
                    clear_stale_socket(os.path.join(config.directory, f"{ident.name}.sock"))


def worker_main() -> None:
    """A worker process of :func:`run_fleet` (``python -c ... FD``, FD its channel)."""
    channel = stdsocket.socket(fileno=int(sys.argv[1]))
    with fewer_collections():
        status = trio.run(_worker, channel)
    sys.exit(status)


async def _worker(sock: stdsocket.socket) -> int:
    parent = _Channel(sock)
    setup = await parent.receive()
    if setup is None:
        return 0
    settings = setup["config"]
    settings["scenario"] = pickle.loads(base64.b64decode(settings["scenario"]))
    config = FleetConfig(**settings)
    _worker_logging(setup["number"], setup["verbose"])
    fleet = Fleet.from_config(config, range(*setup["part"]))

    async def execute(command: str, arguments: dict[str, Any]) -> Any:
        if command == "qmpsim-fleet":
            return [vm.summary() for vm in fleet.vms]
        name = arguments.pop("vm")
        try:
            vm = fleet.vm(name)
        except KeyError as exc:
            raise ControlError(str(exc.args[0])) from None
        return await fleet.vm_command(vm, command, arguments)

    async def reply(request: dict[str, Any]) -> None:
        answered, _ = await answer(request, True, execute)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await parent.send(answered)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(fleet.run)
            except QmpSimError as exc:
                await parent.send({"error": str(exc)})
                return 1
            await parent.send({"ready": True})
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
            while (request := await parent.receive()) is not None:
                nursery.start_soon(reply, request)
            nursery.cancel_scope.cancel()  # the first process stops the fleet, or is gone
    return 0


async def _stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def _worker_logging(number: int, verbose: bool) -> None:
    from qmpsim.logs import stderr_handler

    root = logging.getLogger("qmpsim")
    root.handlers[:] = [stderr_handler(sys.stderr, f"qmpsim (worker {number})")]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


async def serve_fleet(
    fleet: Fleet,
    *,
    control: str | None = None,
    announce: Callable[[str], None] = print,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fleet`` (and its control channel at ``control``) in this process until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        _announce_listening(fleet.config, 1, fleet.vms[0].path, announce)
        if control is not None:
            announce(f"control channel on unix:{await nursery.start(fleet.serve_control, control)}")
        task_status.started()
