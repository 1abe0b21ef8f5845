"""Descriptors that arrive with a monitor connection's input (SCM_RIGHTS).

A client of a Unix-socket monitor may send open descriptors with its bytes, as
ancillary data.  QEMU's socket chardev reads with ``recvmsg`` (room for 16
descriptors, the rest are dropped by the kernel) and keeps the descriptors of its
latest read that brought any, closing those it kept before; a command that wants
one (``getfd``, ``add-fd``) takes the first and the others are closed.  What no
command took is closed when more arrive or the connection ends.
:class:`Received` is that store for one connection; :func:`receive` is the read.
"""

from __future__ import annotations

import array
import socket

import trio

from qmpsim.vm.fds import close_quietly

MAX_FDS = 16
"""QEMU's ``TCP_MAX_FDS``: descriptors one read takes in."""
_INT = array.array("i").itemsize
"""A descriptor in SCM_RIGHTS data: a C ``int``."""
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * _INT)


class Received:
    """The descriptors one connection holds for its next command that takes one."""

    __slots__ = ("fds",)

    def __init__(self) -> None:
        self.fds: list[int] = []

    def arrived(self, fds: list[int]) -> None:
        """``fds`` came with a read: they replace (and close) those still held."""
        self.close()
        self.fds = fds

    def take(self) -> int | None:
        """The first descriptor held, or ``None``; the others are closed
        (``qemu_chr_fe_get_msgfd``)."""
        if not self.fds:
            return None
        first, *rest = self.fds
        self.fds = []
        for fd in rest:
            close_quietly(fd)
        return first

    def close(self) -> None:
        """Close every descriptor held (the connection ends)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            close_quietly(fd)


def _unix(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    if isinstance(stream, trio.SocketStream) and stream.socket.family == socket.AF_UNIX:
        return stream.socket
    return None


async def receive(stream: trio.abc.Stream, size: int, received: Received) -> bytes:
    """Read up to ``size`` bytes from ``stream``; on a Unix socket, the descriptors that
    came with them go to ``received``.  Raises as ``receive_some`` does."""
    sock = _unix(stream)
    if sock is None:
        return bytes(await stream.receive_some(size))
    try:
        data, ancdata, _flags, _ = await sock.recvmsg(size, _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    except OSError as exc:  # as receive_some says it
        raise trio.BrokenResourceError from exc
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _INT
            fds.extend(array.array("i", payload[:whole]))
    if fds:
        received.arrived(fds)
    return bytes(data)
