"""One task that accepts for every VM of a fleet process and watches its idle connections.

The listening sockets and the sockets of idle connections sit in one epoll
(kqueue) set, whose own file descriptor trio waits on (:class:`Acceptor`).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket as stdsocket
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Generic, Protocol, TypeVar

import trio

from qmpsim.runtime.listen import UnixSocketFile, bind_unix
from qmpsim.runtime.server import IdleConnection

log = logging.getLogger("qmpsim.fleet")

__all__ = ["Acceptor", "Listening", "bind_all"]

_BACKLOG = 16
_ACCEPT_RETRY = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
_ACCEPTS_PER_ROUND = 64  # a VM's burst of connections does not starve the others
_ACCEPT_BATCH = 64  # listeners served before the connections accepted get to run


def bind_all(paths: Sequence[str]) -> list[UnixSocketFile]:
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


class Listening(Protocol):
    """A VM as the acceptor sees it: its listening socket, while it listens."""

    socket: UnixSocketFile | None
    listening: bool


_Vm = TypeVar("_Vm", bound=Listening)


class Acceptor(Generic[_Vm]):
    """Accepts connections for every listening VM of a fleet process, and watches its
    idle connections, in one task (an :class:`~qmpsim.runtime.parking.IdleWatcher`).

    The listening sockets and the sockets of idle connections are registered in
    one epoll (kqueue) set, whose own file descriptor trio waits on: a task per
    VM would cost ~2 KB each, idle, and a task per idle connection ~5 KB.
    ``accepted(vm, conn)`` takes each connection; with ``multi_client`` false a VM
    leaves the set once it accepted one (the fleet adds it back when it leaves).
    """

    def __init__(
        self, accepted: Callable[[_Vm, stdsocket.socket], None], *, multi_client: bool
    ) -> None:
        self._selector = selectors.DefaultSelector()
        self._accepted = accepted
        self._multi_client = multi_client
        self._retrying = False

    def watch(self, fd: int, idle: IdleConnection) -> None:
        self._selector.register(fd, selectors.EVENT_READ, idle)

    def unwatch(self, fd: int) -> None:
        with suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def add(self, vm: _Vm) -> None:
        assert vm.socket is not None
        with suppress(KeyError):  # already there
            self._selector.register(vm.socket.sock, selectors.EVENT_READ, vm)

    def remove(self, vm: _Vm) -> None:
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

    async def _accept(self, vm: _Vm) -> bool:
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
            if not self._multi_client:
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
