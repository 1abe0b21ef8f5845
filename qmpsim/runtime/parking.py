"""Parking an idle connection: no task serves it until its peer sends again.

A fleet holds thousands of connections that are idle nearly all the time; a task
waiting on each costs ~5 KB (the task, its nursery, its stack, trio's
registration), a socket in one epoll set ~0.2 KB.  So a connection served with an
:class:`IdleWatcher` parks once it is idle: its task ends, the watcher holds it as
an :class:`IdleConnection`, and wakes it when its socket turns readable.
:class:`Parking` is that part of :class:`~qmpsim.runtime.connection.Connection`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from qmpsim.qmp.protocol import ProtocolEvent

__all__ = ["IdleConnection", "IdleWatcher", "Parking", "ParkingHost"]

log = logging.getLogger("qmpsim.server")


class IdleWatcher(Protocol):
    """Watches the sockets of idle connections, so that no task waits on each one.

    See :meth:`~qmpsim.runtime.server.Simulator.handle_socket_stream`.
    """

    def watch(self, fd: int, idle: IdleConnection) -> None:
        """Call ``idle.wake()`` once ``fd`` is readable (or hung up)."""

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (its connection is served again, or ends)."""


class ParkingHost(Protocol):
    """What parking needs of the simulator that serves the connection."""

    _nursery: trio.Nursery | None
    """Where a parked connection is served again (``None``: the simulator stopped)."""


class Parking:
    """Parking and waking a connection (a base of the connection, not used alone; its
    state is the connection's fields)."""

    if not TYPE_CHECKING:  # mypy would ask the slots here for the connection's fields
        __slots__ = ()  # the connection keeps its slots, and no __dict__: a fleet holds thousands

    host: ParkingHost
    id: int
    stream: trio.abc.Stream
    scope: trio.CancelScope
    watcher: IdleWatcher | None
    ended_callback: Callable[[], None] | None
    context: contextvars.Context | None
    parked: bool
    woken: bool
    dropped: bool
    read_scope: trio.CancelScope | None
    outbox: list[tuple[bytes, Any]]
    requests: list[ProtocolEvent]
    writing: bool
    dispatching: bool
    ended: bool
    closing: bool
    greeted: bool

    async def serve(self) -> None:
        """Serve the connection until it ends, or until it parks."""
        raise NotImplementedError

    def _end(self, *, notify: bool = True) -> None:
        """The connection has ended: it is no longer a client (``notify``: tell who waits)."""
        raise NotImplementedError

    def _may_park(self) -> bool:
        """Whether the connection is idle: nothing to read but what the peer sends next."""
        return (
            self.watcher is not None
            and self.greeted
            and not (self.writing or self.dispatching or self.outbox or self.requests)
            and not (self.closing or self.ended or self.dropped)
            and not self.scope.cancel_called
            and self.host._nursery is not None
        )

    def _park(self) -> None:
        assert self.watcher is not None and isinstance(self.stream, trio.SocketStream)
        if self.context is None:
            self.context = contextvars.copy_context()
        self.parked = True
        self.watcher.watch(self.stream.socket.fileno(), IdleConnection(self))

    def _unpark(self) -> None:
        """Serve a parked connection again, in a task of the simulator's nursery."""
        nursery = self.host._nursery
        assert self.watcher is not None and self.context is not None
        assert isinstance(self.stream, trio.SocketStream) and nursery is not None
        self.parked = False
        self.watcher.unwatch(self.stream.socket.fileno())
        # Started in the connection's own context, as its first task was.
        self.context.run(nursery.start_soon, self.serve)

    def _idle(self) -> None:
        """The writer or the dispatcher is done: a connection now idle parks (its reader,
        waiting for input, is interrupted, and parks instead)."""
        if self.read_scope is not None and self._may_park():
            self.read_scope.cancel()


@dataclass(eq=False, slots=True)
class IdleConnection:
    """A parked connection, as an :class:`IdleWatcher` holds it."""

    client: Parking

    def wake(self) -> None:
        """Its socket is readable: serve it again (the watcher has forgotten it)."""
        if self.client.parked:
            self.client.woken = True
            self.client._unpark()

    def close(self) -> None:
        """The watcher stops (the fleet stops): end the connection now, without a task."""
        client = self.client
        if client.parked:
            client.parked = False
            assert isinstance(client.stream, trio.SocketStream)
            client.stream.socket.close()
            client._end(notify=False)  # its nursery is gone: nothing may start
            log.info("client %d: disconnected", client.id)
            if client.ended_callback is not None:
                client.ended_callback()
