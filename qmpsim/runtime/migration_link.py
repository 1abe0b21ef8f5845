"""Migration between simulators over real sockets.

A simulator migrates for real where the address is on this host: ``migrate
unix:PATH`` and ``tcp:`` to a loopback address connect a socket, and
``migrate-incoming`` (or ``-incoming URI``, ``vm.incoming``) listens on one.  The
stream is QEMU's in outline: the source writes QEMU's magic and version when it
connects, and, when it completes, the end-of-stream marker (``QEMU_VM_EOF``)
before it closes; a source that fails or is cancelled closes without it.  The
destination turns what it reads into causes of its machine: the source connected
(``active``), the stream ended with the marker (RESUME, ``completed``) or without
it (``failed``, and the VM exits, as QEMU does).  A source whose destination
closes the connection fails as QEMU's does (``Unable to write to socket: Broken
pipe``).  ``migrate fd:NAME`` writes the same outline into the descriptor the
client passed with ``getfd``, and closes it when the migration ends.  A source that
switches to postcopy writes QEMU's ``POSTCOPY_LISTEN`` and ``POSTCOPY_RUN``
commands, and the destination runs (``postcopy-active``); a connection lost then
pauses both sides (``postcopy-paused``), and a source resuming to the address
``migrate-recover`` listens on reconnects them.  Other addresses (``tcp:`` to a
remote host, ``exec:``) stay simulated: they accept the stream.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import os
import socket
from typing import Any, Protocol

import trio

from qmpsim.runtime.listen import ListenError, bind_unix
from qmpsim.vm.fds import DescriptorChannel, close_quietly
from qmpsim.vm.machine import Cause, Event, Machine
from qmpsim.vm.migration import (
    Channel,
    IncomingCompleted,
    IncomingConnected,
    IncomingFailed,
    IncomingPostcopy,
    Migration,
    MigrationTargetLost,
)
from qmpsim.vm.values import MachineError


class Simulator(Protocol):
    """What the link needs of a :class:`~qmpsim.runtime.server.Simulator` (which
    imports this module)."""

    @property
    def machine(self) -> Machine: ...

    def cause(self, cause: Cause) -> list[Event]: ...

    def _require_nursery(self) -> trio.Nursery: ...


MAGIC = b"QEVM\x00\x00\x00\x03"
"""What a QEMU migration stream starts with: ``QEMU_VM_FILE_MAGIC`` and version 3."""
EOF_MARKER = b"\x00"
"""``QEMU_VM_EOF``: what a completed stream ends with (a real QEMU adds its device
description after it)."""
POSTCOPY_MARKER = b"\x08\x00\x04\x00\x00\x08\x00\x05\x00\x00"
"""``QEMU_VM_COMMAND`` ``MIG_CMD_POSTCOPY_LISTEN`` then ``MIG_CMD_POSTCOPY_RUN`` (each a
command number and an empty length): the source handed the VM over."""
_CONNECT_TIMEOUT = 5.0


def link(sim: Simulator) -> None:
    """Give ``sim``'s VM a network: its migrations go over real sockets where the
    address is local, and an ``-incoming`` URI it was started with is listened on."""
    part = sim.machine.part(Migration)
    part.connect = lambda transport, address: _connect(sim, transport, address)
    part.listen = lambda transport, address: _listen(sim, transport, address)
    problem = part.relisten()
    if problem is not None:
        raise MachineError(f"-incoming {part.incoming_uri}: {problem}")


def _local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _connect(sim: Simulator, transport: str, address: str) -> str | Channel | None:
    if transport == "fd":  # a descriptor the client passed (getfd): the stream goes there
        return DescriptorChannel.open(int(address), MAGIC, EOF_MARKER)
    if transport == "unix":
        family: socket.AddressFamily = socket.AF_UNIX
        target: Any = address
    elif transport == "tcp" and (split := _split(address)) is not None and _local(split[0]):
        family, target = (socket.AF_INET6 if ":" in split[0] else socket.AF_INET), split
    else:
        return None  # a simulated destination
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(_CONNECT_TIMEOUT)  # a local peer answers at once
    try:
        sock.connect(target)
        sock.sendall(MAGIC)
    except OSError as exc:
        sock.close()
        return f"Failed to connect to '{address}': {os.strerror(exc.errno or errno.EIO)}"
    sock.setblocking(False)
    stream = _Stream(sock)
    sim._require_nursery().start_soon(stream.watch, sim)
    return stream


class _Stream:
    """The source's end of a migration connection (a :class:`Channel`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(EOF_MARKER)
        self._close()

    def abort(self) -> None:
        self._close()

    def postcopy(self) -> None:
        """The source switched to postcopy: the destination is to run."""
        with contextlib.suppress(OSError):
            self.sock.send(POSTCOPY_MARKER)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def watch(self, sim: Simulator) -> None:
        """The destination hanging up before the end: the migration fails."""
        try:
            await trio.lowlevel.wait_readable(self.sock)
        except (trio.ClosedResourceError, OSError):
            return  # closed here: finished or aborted
        if self.closed:
            return
        with contextlib.suppress(OSError):
            if self.sock.recv(1):
                return  # a return path: QEMU's destination speaks only when asked
        part = sim.machine.part(Migration)
        if part.channel is self:
            with contextlib.suppress(MachineError):
                sim.cause(MigrationTargetLost())


def _listen(sim: Simulator, transport: str, address: str) -> str | dict[str, Any] | None:
    if transport == "unix":
        try:
            bound = bind_unix(address, backlog=1)
        except ListenError as exc:
            return str(exc)
        listener, close = bound.listener(), bound.close
        where: dict[str, Any] = {"path": address, "type": "unix"}
    elif transport == "tcp" and (split := _split(address)) is not None:
        # bound now, not with listen.bind_tcp (a coroutine): a command's handler cannot
        # wait, and QEMU's answer says the port it bound
        host, port = split
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
            sock.listen(1)
        except OSError as exc:
            sock.close()
            return f"Failed to bind socket: {os.strerror(exc.errno or errno.EIO)}"
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        close = listener.socket.close
        bound_host, bound_port = sock.getsockname()[:2]
        where = {"port": str(bound_port)}
        where["ipv6" if family == socket.AF_INET6 else "ipv4"] = True
        where |= {"host": bound_host, "type": "inet"}
    elif transport == "fd":
        return _from_descriptor(sim, address)
    else:
        return None  # simulated: nothing to listen on
    sim._require_nursery().start_soon(_receive, sim, listener, close)
    return where


def _from_descriptor(sim: Simulator, address: str) -> str | None:
    """Read the stream from a descriptor (``fd:N``: the process's own, or one taken from
    getfd's table), as QEMU's ``fd_start_incoming_migration`` does."""
    try:
        fd = int(address)
        if fd < 0:
            raise ValueError(address)
    except ValueError:
        return f"Invalid file descriptor number '{address}'"
    try:
        os.fstat(fd)
    except OSError as exc:
        return f"Unable to stat file descriptor {fd}: {os.strerror(exc.errno or errno.EBADF)}"
    sim._require_nursery().start_soon(_read_descriptor, sim, fd)
    return None


async def _read_descriptor(sim: Simulator, fd: int) -> None:
    """The source's stream from ``fd`` (a pipe or a file: read in a thread, as a file
    cannot be waited on), turned into the destination's causes; QEMU closes it after."""
    try:
        os.set_blocking(fd, True)  # as QEMU sets its channel
        _cause(sim, IncomingConnected())  # QEMU's incoming coroutine starts at once
        tail = b""
        while data := await trio.to_thread.run_sync(_read_fd, fd, abandon_on_cancel=True):
            tail = (tail + data)[-_TAIL:]
        _cause(sim, IncomingCompleted() if _complete(tail) else IncomingFailed())
    finally:
        close_quietly(fd)


def _read_fd(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""  # broken off: what came is judged


async def _receive(sim: Simulator, listener: trio.SocketListener, close: Any) -> None:
    """Accept the source (QEMU takes one), then turn its stream into the destination's
    causes."""
    try:
        stream = await listener.accept()
    finally:
        close()
    part = sim.machine.part(Migration)
    async with stream:
        part.incoming_stop = functools.partial(_hang_up, stream)
        _cause(sim, IncomingConnected())
        tail = b""
        while data := await _read(stream):
            seen = len(tail)
            tail = (tail + data)[-_TAIL:]
            # (a real QEMU's RAM could hold these bytes: heeded only with postcopy on)
            at = tail.find(POSTCOPY_MARKER, max(0, seen - len(POSTCOPY_MARKER)))
            if at >= 0 and part.caps.get("postcopy-ram") and part.incoming == "active":
                tail = tail[at + len(POSTCOPY_MARKER) :]  # (its last byte is no end marker)
                _cause(sim, IncomingPostcopy())
        part.incoming_stop = None
        _cause(sim, IncomingCompleted() if _complete(tail) else IncomingFailed())


def _hang_up(stream: trio.SocketStream) -> None:
    """The destination shuts its end (``migrate-pause``): the source sees it gone."""
    sock = stream.socket
    if sock.fileno() >= 0:
        trio.lowlevel.notify_closing(sock)
        sock.close()


_TAIL = 1 << 20
"""How much of a stream's end is kept to recognise it (QEMU's device description, which
follows its end-of-stream marker, is tens of KiB)."""
_VMDESC = b"\x06"  # QEMU_VM_VMDESCRIPTION: a 4-byte length, then JSON


def _complete(tail: bytes) -> bool:
    """Whether a stream ended as a completed migration's does: with QEMU's end-of-stream
    marker, or with the marker and then the device description a real QEMU appends."""
    if tail.endswith(EOF_MARKER):
        return True
    at = tail.rfind(EOF_MARKER + _VMDESC)
    while at >= 0:
        start = at + 2 + 4
        if int.from_bytes(tail[at + 2 : start], "big") == len(tail) - start:
            return True
        at = tail.rfind(EOF_MARKER + _VMDESC, 0, at)
    return False


async def _read(stream: trio.SocketStream) -> bytes:
    try:
        return bytes(await stream.receive_some(1 << 16))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


def _cause(sim: Simulator, cause: Any) -> None:
    with contextlib.suppress(MachineError):  # the VM was reset or has exited meanwhile
        sim.cause(cause)
