"""One client connection: its reader, dispatcher and writer, and parking when idle.

A :class:`Connection` serves one stream for a :class:`~qmpsim.runtime.server.Simulator`
(its :class:`ConnectionHost`): the reader turns the bytes the peer sends into the
protocol's events (:meth:`Connection.receive` is the one place bytes come in), the
dispatcher runs the requests in order, the writer sends what is queued.  The writer
and the dispatcher run only while they have work, since a fleet holds thousands of
connections that are idle nearly all the time; a connection with an
:class:`IdleWatcher` goes further: while idle it has no task at all (it is parked).
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
from qmpsim.qmp.transcript import Direction, Entry, Transcript
from qmpsim.runtime.ancillary import Received, receive
from qmpsim.runtime.faults import WriteFault

__all__ = ["UNPARSED", "Connection", "ConnectionHost", "IdleConnection", "IdleWatcher"]

log = logging.getLogger("qmpsim.server")

_REQUEST_QUEUE = 8  # QEMU's QMP_REQ_QUEUE_LEN_MAX: reading pauses while this many wait
_RECEIVE_SIZE = 1 << 16

UNPARSED: Any = object()
"""Queued bytes whose message the transcript must lex itself."""


class IdleWatcher(Protocol):
    """Watches the sockets of idle connections, so that no task waits on each one.

    A fleet holds thousands of connections that are idle nearly all the time; a
    task waiting on each costs ~5 KB (the task, its nursery, its stack, trio's
    registration), a socket in one epoll set ~0.2 KB.  See
    :meth:`~qmpsim.runtime.server.Simulator.handle_socket_stream`.
    """

    def watch(self, fd: int, idle: IdleConnection) -> None:
        """Call ``idle.wake()`` once ``fd`` is readable (or hung up)."""

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (its connection is served again, or ends)."""


class ConnectionHost(Protocol):
    """What a connection needs of the simulator that serves it: its private side,
    kept out of the simulator's public methods."""

    transcript: Transcript
    max_input_buffer: int | None
    max_output_buffer: int

    def now(self) -> float:
        """The simulated wall clock, which stamps the transcript."""

    _nursery: trio.Nursery | None
    """Where a parked connection is served again (``None``: the simulator stopped)."""

    async def _execute(self, client: Connection, request: Request) -> None:
        """Run ``request`` and queue its reply (and the events it produced)."""

    def _state_changed(self) -> None:
        """Something happened that those waiting on the simulator may look for."""

    def _take_write_fault(self) -> WriteFault | None:
        """The fault the next write suffers, if one is pending (it is taken)."""

    def _forget(self, client: Connection, *, notify: bool = True) -> None:
        """The connection has ended: it is no longer a client."""


@dataclass(eq=False, slots=True)  # slots: a fleet holds thousands
class Connection:
    """One connection.  Its task reads; a writer and a dispatcher task run beside it
    only while they have work (output queued, requests waiting).  A connection with
    a watcher goes further: while idle it has no task at all (it is parked)."""

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
                self.host._forget(self)
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

    def close_after_output(self) -> None:
        """End the connection once what is queued for it is written."""
        self.conn.close()
        self.closing = True
        if self.room is not None:
            self.room.set()
        self.write_soon()

    # --- parking ----------------------------------------------------------------------

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

    # --- the writer -------------------------------------------------------------------

    def enqueue(self, data: bytes, parsed: Any = UNPARSED) -> None:
        """Queue ``data`` (the message it holds when known) to be written."""
        if not data or self.dropped or self.scope.cancel_called:
            return
        size = len(data)
        buffered = self.buffered + size
        largest = max(self.largest, size)
        # The bound is on what the client leaves unread, not on what QEMU may say in
        # one message (a 1 MiB id is echoed whole): the largest message does not count.
        limit = self.host.max_output_buffer
        if buffered - largest > limit:
            log.warning(
                "client %d: not reading (more than %d bytes queued); disconnecting it",
                self.id,
                limit,
            )
            self.drop()
            return
        self.outbox.append((data, parsed))
        self.buffered = buffered
        self.largest = largest
        self.write_soon()

    def write_soon(self) -> None:
        """Write the queued output, in a task started if none runs."""
        if self.more is not None:
            self.more.set()
        if self.parked:
            self._unpark()  # the connection's task starts the writer
            return
        if not self.writing and self.tasks is not None and not self.scope.cancel_called:
            self.writing = True
            self.tasks.start_soon(self._write)

    async def _next_message(self) -> tuple[bytes, Any] | None:
        # The bytes stay counted in ``buffered`` until they are written (see _write).
        while not self.outbox:
            if self.closing:
                return None
            self.more = trio.Event()
            await self.more.wait()
        return self.outbox.pop(0)

    def _greeted(self) -> None:
        if not self.greeted:
            self.greeted = True
            if self.room is not None:
                self.room.set()  # the reader waits for it

    async def _write(self) -> None:
        """Write until nothing is queued; then end, or end the connection if it is closing."""
        host = self.host
        try:
            while self.outbox:
                fault = host._take_write_fault()
                if fault is None:
                    # Everything queued goes out in one write: a system call and a trip
                    # through the scheduler per batch instead of per message.
                    chunks, self.outbox = self.outbox, []
                else:
                    chunks = [self.outbox.pop(0)]
                if fault is not None and fault.kind == "coalesce":
                    self._greeted()  # the message it waits for may need a request
                    following = await self._next_message()
                    if following is not None:
                        chunks.append(following)
                now = host.now()
                for chunk, parsed in chunks:
                    if parsed is UNPARSED:
                        host.transcript.record(Direction.OUT, self.id, now, chunk)
                    else:
                        host.transcript.append(Entry(Direction.OUT, self.id, now, chunk, (parsed,)))
                joined = b"".join(chunk for chunk, _ in chunks)
                if fault is not None and fault.kind == "split":
                    for start in range(0, len(joined), fault.size):
                        await self.stream.send_all(joined[start : start + fault.size])
                else:
                    await self.stream.send_all(joined)
                self.buffered -= len(joined)
                self._greeted()
                self.largest = max((len(chunk) for chunk, _ in self.outbox), default=0)
            if not self.closing:
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("client %d: went away while being written to", self.id)
        finally:
            self.writing = False
            if self.room is not None:
                self.room.set()
            self._idle()
        self.scope.cancel()


@dataclass(eq=False, slots=True)
class IdleConnection:
    """A parked connection, as an :class:`IdleWatcher` holds it."""

    client: Connection

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
            client.host._forget(client, notify=False)  # its nursery is gone: nothing may start
            log.info("client %d: disconnected", client.id)
            if client.ended_callback is not None:
                client.ended_callback()
