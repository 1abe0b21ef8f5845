"""One client connection: its task, its reader and its dispatcher.

A :class:`Connection` serves one stream for a :class:`~qmpsim.runtime.server.Simulator`
(its :class:`ConnectionHost`): the reader turns the bytes the peer sends into the
protocol's events (:meth:`Connection.receive` is the one place bytes come in), the
dispatcher runs the requests in order, the writer sends what is queued.  The writer
and the dispatcher run only while they have work, since a fleet holds thousands of
connections that are idle nearly all the time; a connection with an
:class:`~qmpsim.runtime.parking.IdleWatcher` goes further: while idle it has no task
at all (it is parked).  The writer and parking are the connection's bases, beside it:
:mod:`qmpsim.runtime.writer` and :mod:`qmpsim.runtime.parking`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from qmpsim.qmp.protocol import (
    NeedData,
    Negotiated,
    ProtocolEvent,
    Reply,
    Request,
    ServerConnection,
)
from qmpsim.qmp.transcript import Direction
from qmpsim.runtime.ancillary import Received, receive
from qmpsim.runtime.parking import IdleWatcher
from qmpsim.runtime.writer import Writer, WriterHost

__all__ = ["Connection", "ConnectionHost"]

log = logging.getLogger("qmpsim.server")

_REQUEST_QUEUE = 8  # QEMU's QMP_REQ_QUEUE_LEN_MAX: reading pauses while this many wait
_RECEIVE_SIZE = 1 << 16


class ConnectionHost(WriterHost, Protocol):
    """What a connection needs of the simulator that serves it: its private side,
    kept out of the simulator's public methods (the writer's and parking's share
    are :class:`~qmpsim.runtime.writer.WriterHost` and
    :class:`~qmpsim.runtime.parking.ParkingHost`)."""

    max_input_buffer: int | None

    async def _execute(self, client: Connection, request: Request) -> None:
        """Run ``request`` and queue its reply (and the events it produced)."""

    def _state_changed(self) -> None:
        """Something happened that those waiting on the simulator may look for."""

    def _forget(self, client: Connection, *, notify: bool = True) -> None:
        """The connection has ended: it is no longer a client."""


@dataclass(eq=False, slots=True)  # slots: a fleet holds thousands
class Connection(Writer):
    """One connection.  Its task reads; a writer and a dispatcher task run beside it
    only while they have work (output queued, requests waiting).  A connection with
    a watcher goes further: while idle it has no task at all (it is parked).  The
    writer and parking are its bases (:class:`~qmpsim.runtime.writer.Writer`,
    :class:`~qmpsim.runtime.parking.Parking`), which work on these fields."""

    host: ConnectionHost
    id: int
    conn: ServerConnection
    stream: trio.abc.Stream
    scope: trio.CancelScope
    """Cancelled to end the connection: the cancel scope of its nursery (use drop(),
    which also ends a parked connection)."""
    tasks: trio.Nursery | None
    """Where the writer and the dispatcher run; ``None`` while no task serves it."""
    slot: bool = False
    """It holds the one-client slot, released when the connection ends."""
    watcher: IdleWatcher | None = None
    """Watches the socket while the connection is idle (it parks); ``None``: never parks."""
    ended_callback: Callable[[], None] | None = None
    """Called once the connection has ended (for a connection that may park)."""
    context: contextvars.Context | None = None
    """The context a parked connection is served in again (its log lines name its VM)."""
    parked: bool = False
    """Idle and served by no task: the watcher wakes it when the peer sends."""
    woken: bool = False
    """Woken because its socket is readable: read before parking again."""
    dropped: bool = False
    """Ended by the simulator (not reading, disconnect()): no more output is queued."""
    read_scope: trio.CancelScope | None = None
    """Around the reader's wait for input, cancelled when the connection turns idle."""
    outbox: list[tuple[bytes, Any]] = field(default_factory=list)
    """Bytes to write, each with the message they hold when known (else UNPARSED)."""
    buffered: int = 0
    """Bytes queued and not yet written."""
    largest: int = 0
    """The size of the largest message counted in ``buffered``."""
    raw_written: bool = False
    """Raw bytes went out: the transcript must parse what follows as a client would."""
    requests: list[ProtocolEvent] = field(default_factory=list)
    """Requests read and not yet run: reading pauses while _REQUEST_QUEUE wait."""
    writing: bool = False
    dispatching: bool = False
    ended: bool = False
    """The client's input ended: once its requests ran, the connection closes."""
    more: trio.Event | None = None
    """Set when output is queued or the connection is closing (a writer waits for it)."""
    room: trio.Event | None = None
    """Set when a waiting request was taken or the connection is closing (the reader waits)."""
    closing: bool = False
    greeted: bool = False
    """The greeting is written: QEMU writes it before it reads anything."""
    descriptors: Received = field(default_factory=Received)
    """Descriptors the client sent (SCM_RIGHTS) that no command has taken yet."""

    # --- its task ---------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve the connection until it ends, or until it parks (idle, with a watcher)."""
        parked = False
        try:
            async with trio.open_nursery() as nursery:
                # The connection's own tasks run in its nursery; cancelling the
                # nursery ends the connection.
                self.scope, self.tasks = nursery.cancel_scope, nursery
                if self.dropped:
                    nursery.cancel_scope.cancel()
                if self.outbox or self.closing:
                    self.write_soon()
                if self.requests:
                    self.dispatch_soon()
                parked = await self._read()
                while not parked and (self.writing or self.dispatching):
                    self.room = trio.Event()
                    await self.room.wait()
                # Nothing may start in the nursery now: it closes once this body ends
                # (or once it is cancelled, which write_soon and dispatch_soon check).
                self.tasks = None
        except Exception:
            parked = False
            log.exception("client %d: internal error; closing its connection", self.id)
        finally:
            self.tasks = None
            self.room = None
            nursery_ = self.host._nursery
            if parked and self._may_park():
                self._park()
            elif parked and nursery_ is not None:
                # Work came while its nursery closed: serve it on, in a new task.
                nursery_.start_soon(self.serve)
            else:
                self._end()
                await trio.aclose_forcefully(self.stream)
                log.info("client %d: disconnected", self.id)
                if self.ended_callback is not None:
                    self.ended_callback()

    def drop(self) -> None:
        """End the connection now; what is queued for it is discarded."""
        self.dropped = True
        self.scope.cancel()
        if self.parked:
            self._unpark()  # its task sees it dropped and ends it

    def _end(self, *, notify: bool = True) -> None:
        """The connection has ended: it is no longer a client (``notify``: tell who waits)."""
        self.host._forget(self, notify=notify)

    def close_after_output(self) -> None:
        """End the connection once what is queued for it is written."""
        self.conn.close()
        self.closing = True
        if self.room is not None:
            self.room.set()
        self.write_soon()

    # --- the reader -------------------------------------------------------------------

    async def receive(self) -> bytes | None:
        """The next bytes the peer sent (``b""``: its input ended), or ``None`` when the
        wait was interrupted because the connection turned idle and may park."""
        try:
            if self.watcher is None:
                return await receive(self.stream, _RECEIVE_SIZE, self.descriptors)
            # receive_some loses nothing when cancelled: what arrives waits in the
            # socket for the watcher.
            with trio.CancelScope() as waiting:
                self.read_scope = waiting
                try:
                    return await receive(self.stream, _RECEIVE_SIZE, self.descriptors)
                finally:
                    self.read_scope = None
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def _read(self) -> bool:
        """Read and queue the client's requests until its input ends (``False``) or it
        is idle and may park (``True``)."""
        host = self.host
        # Nothing is read before the greeting is out, so a client that sends at once
        # is still answered, and recorded, after its greeting.
        while not self.greeted:
            self.room = trio.Event()
            await self.room.wait()
        while True:
            if self.woken:
                self.woken = False  # its socket is readable: read it first
            elif self._may_park():
                return True
            data = await self.receive()
            if data is None:
                continue
            if data:
                host.transcript.record(Direction.IN, self.id, host.now(), data)
                self.conn.receive_data(data)
            else:
                # What the peer sent before it closed its side is answered first, and
                # events reach it meanwhile: a half-closed peer may be waiting for them.
                while (self.requests or self.dispatching) and not self.closing:
                    self.room = trio.Event()
                    await self.room.wait()
                self.conn.receive_data(data)
            limit = host.max_input_buffer
            if limit is not None and self.conn.buffered_input > limit:
                log.warning(
                    "client %d: more than %d bytes of one unfinished request; disconnecting it",
                    self.id,
                    limit,
                )
                self.scope.cancel()
                return False
            while not isinstance(item := self.conn.next_event(), NeedData):
                if isinstance(item, Request) and item.oob:
                    await host._execute(self, item)
                    continue
                # Like QEMU's monitor, reading pauses while the queue is full.
                while len(self.requests) >= _REQUEST_QUEUE and not self.closing:
                    self.room = trio.Event()
                    await self.room.wait()
                if self.closing:
                    return False  # the dispatcher stopped: the connection is closing
                self.requests.append(item)
                self.dispatch_soon()
            if not data:
                self.ended = True
                self.dispatch_soon()
                return False

    # --- the dispatcher ---------------------------------------------------------------

    def dispatch_soon(self) -> None:
        """Run the waiting requests in order, in a task started if none runs."""
        if not self.dispatching and self.tasks is not None and not self.scope.cancel_called:
            self.dispatching = True
            self.tasks.start_soon(self._dispatch)

    async def _dispatch(self) -> None:
        try:
            while self.requests and not self.closing:
                item = self.requests.pop(0)
                if self.room is not None:
                    self.room.set()
                if isinstance(item, Reply):
                    self.enqueue(item.data)
                elif isinstance(item, Negotiated):
                    self.enqueue(self.conn.send_negotiated(item))
                    log.info("client %d: capabilities negotiated", self.id)
                    self.host._state_changed()
                else:
                    await self.host._execute(self, item)
        finally:
            self.dispatching = False
            if self.room is not None:
                self.room.set()
        if self.closing or self.ended:
            # The rest of the output is written, then the connection ends.
            self.closing = True
            if self.room is not None:
                self.room.set()
            self.write_soon()
        self._idle()
