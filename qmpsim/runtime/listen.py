"""Listening sockets, written once for every server qmpsim runs.

The simulator, the control channel, the recording proxy, the cassette socket, the
fleet and the drop-in all bind with :func:`bind_unix` (the socket file private,
mode 0600, from birth; a stale socket replaced, anything else refused) or
:func:`bind_tcp` (loopback unless asked), and accept with :func:`accept_loop`.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import os
import socket as stdsocket
import stat
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import trio

from qmpsim.errors import QmpSimError

__all__ = [
    "ListenError",
    "UnixSocketFile",
    "accept_loop",
    "bind_tcp",
    "bind_unix",
    "clear_stale_socket",
    "path_identity",
]

log = logging.getLogger("qmpsim.server")


class ListenError(QmpSimError):
    """A listener could not be started: the message says why and what to do."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def path_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of ``path``, to tell later whether it is still our socket."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def clear_stale_socket(path: str) -> None:
    """Remove a socket nobody listens on; refuse anything else that is in the way."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(f"cannot use {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"refusing to replace {path}: it exists and is not a socket")
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: left behind by a process that is gone
        return
    except OSError as exc:
        raise ListenError(f"cannot use {path}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    raise ListenError(f"refusing to replace {path}: a server is listening on it")


_FCHMOD_SOCKET = sys.platform.startswith("linux")
"""Linux creates a socket file with the mode of the socket's own inode (less the
umask), which ``fchmod`` sets; elsewhere only the umask shapes it."""


@dataclass(eq=False, slots=True)  # slots: a fleet holds thousands
class UnixSocketFile:
    """A listening Unix socket and the identity of the file its bind created."""

    sock: stdsocket.socket
    path: str
    identity: tuple[int, int] | None
    _listener: trio.SocketListener | None = None

    def listener(self) -> trio.SocketListener:
        """The socket as a trio listener (the same one each time)."""
        if self._listener is None:
            self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        return self._listener

    def close(self) -> None:
        """Close the socket and remove its file, unless the file was replaced meanwhile.

        Idempotent, and synchronous: a task blocked in the listener's ``accept``
        wakes up with ``trio.ClosedResourceError``.
        """
        if self._listener is not None:
            self._listener.socket.close()  # trio's close tells the task waiting in accept
        elif self.sock.fileno() >= 0:
            self.sock.close()
        if self.identity is not None and path_identity(self.path) == self.identity:
            with suppress(FileNotFoundError):
                os.unlink(self.path)
        self.identity = None


def bind_unix(path: str, backlog: int = 16) -> UnixSocketFile:
    """Listen on the Unix socket ``path``, its file private (mode 0600) from birth.

    The file appears only once the socket listens, so a client that waits for it
    and connects is never refused.  A stale socket left there is replaced; anything
    else (a file, a live server) is refused with :class:`ListenError`, as is a path
    that cannot be bound.  Synchronous on purpose: when the umask has to change (not
    on Linux), nothing else of this process's trio code runs until it is restored.
    """
    clear_stale_socket(path)
    staging = _staging_name(path)
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        if _FCHMOD_SOCKET:
            os.fchmod(sock.fileno(), 0o600)  # no umask change, so no other thread sees one
            sock.bind(staging)
        else:
            old_umask = os.umask(0o177)
            try:
                sock.bind(staging)
            finally:
                os.umask(old_umask)
        sock.listen(backlog)
        if staging != path:
            _publish(staging, path)
        return UnixSocketFile(sock, path, path_identity(path))
    except OSError as exc:
        sock.close()
        if staging != path:
            with suppress(FileNotFoundError):
                os.unlink(staging)
        if isinstance(exc, FileExistsError) and staging != path:
            raise ListenError(f"refusing to replace {path}: it appeared while binding") from None
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None


_SUN_PATH_MAX = 107  # bytes of a Unix socket address, less the terminating NUL
_staged = itertools.count()


def _staging_name(path: str) -> str:
    """Where to bind before the socket listens: beside ``path`` (the same file system),
    or ``path`` itself when a longer name would not fit a socket address."""
    directory, name = os.path.split(path)
    staging = os.path.join(directory, f".{name}.{os.getpid()}.{next(_staged)}")
    return staging if len(os.fsencode(staging)) <= _SUN_PATH_MAX else path


def _publish(staging: str, path: str) -> None:
    """Give the listening socket's file its name.  A hard link never replaces a file that
    appeared meanwhile; where the file system has none, a rename does."""
    try:
        os.link(staging, path)
    except FileExistsError:
        raise
    except OSError:
        os.rename(staging, path)
        return
    os.unlink(staging)


async def bind_tcp(
    host: str, port: int, *, allow_remote: bool = False
) -> tuple[list[trio.SocketListener], tuple[str, int]]:
    """Listen on TCP: the listeners and the bound ``(host, port)`` (port 0 picks one).

    Loopback only unless ``allow_remote``: a monitor has no authentication.
    Refusals and bind failures are :class:`ListenError`.
    """
    if host == "localhost":
        host = "127.0.0.1"  # one address, so port 0 means one port
    if not allow_remote and not is_loopback(host):
        raise ListenError(
            f"refusing to listen on {host}: not a loopback address, and the monitor "
            "has no authentication; allow it explicitly (allow_remote=True, --allow-remote)"
        )
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sockname = listeners[0].socket.getsockname()
    return listeners, (str(sockname[0]), int(sockname[1]))


_ACCEPT_RETRY = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


async def accept_loop(
    listener: trio.SocketListener,
    accepted: Callable[[trio.SocketStream], Callable[[], Awaitable[None]]],
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    close: Callable[[], None] | None = None,
) -> None:
    """Accept connections until ``listener`` is closed, then wait for them to end.

    ``accepted(stream)`` runs as soon as a connection is accepted and returns what
    serves it in a task of its own; ``ready()``, when given, is awaited before each
    accept.  Running out of file descriptors or memory is logged and retried.
    ``close()`` (by default the listener's socket's) runs when accepting stops,
    before waiting for the connections: nobody is left in the backlog meanwhile.
    """
    async with trio.open_nursery() as nursery:
        try:
            while True:
                if ready is not None:
                    await ready()
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    return
                except OSError as exc:
                    if exc.errno in _ACCEPT_RETRY:
                        log.error("accept failed (%s); retrying shortly", exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(accepted(stream))
        finally:
            (close or listener.socket.close)()
