"""The trio transport: listeners, one task group per client, event fan-out, faults.

:class:`Simulator` is the public face: it owns a :class:`~qmpsim.vm.machine.Machine`,
a :class:`~qmpsim.qmp.transcript.Transcript` and the connected clients.  It serves any
``trio.abc.Stream`` (:meth:`Simulator.handle_stream`), Unix sockets and loopback
TCP.  By default it follows QEMU's monitor policy: one client at a time, and a
second client is left waiting, without a greeting, until the first one leaves.

Use it as an async context manager, which runs the background task that flushes
throttled events::

    async with Simulator() as sim:
        path = await sim.listen_unix("/tmp/qmp.sock")
        await sim.wait_negotiated()
        sim.cause(DiskError("disk0"))
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

import trio

from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile
from qmpsim.qmp.protocol import (
    NeedData,
    Negotiated,
    ProtocolEvent,
    Reply,
    Request,
    ServerConnection,
)
from qmpsim.qmp.transcript import Direction, Entry, Transcript, arguments_match
from qmpsim.qmp.wire import JsonStreamer, ParseError, encode, encode_message
from qmpsim.runtime.listen import accept_loop, bind_tcp, bind_unix
from qmpsim.runtime.migration_link import link as link_migration
from qmpsim.vm.machine import Cause, CommandError, Event, Machine, Outcome, VmConfig

__all__ = [
    "DEFAULT_MAX_OUTPUT_BUFFER",
    "CommandCallback",
    "IdleConnection",
    "IdleWatcher",
    "Responder",
    "Simulator",
]

log = logging.getLogger("qmpsim.server")

DEFAULT_MAX_OUTPUT_BUFFER = 1 << 20
"""Bytes a client may leave unread behind the largest queued message before it is
disconnected (one message of any size is never too big on its own)."""

_REQUEST_QUEUE = 8  # QEMU's QMP_REQ_QUEUE_LEN_MAX: reading pauses while this many wait
_RECEIVE_SIZE = 1 << 16
_REMEMBERED_COMMANDS = 1024
_UNPARSED: Any = object()  # queued bytes whose message the transcript must lex itself

CommandCallback = Callable[[Request], Awaitable[None] | None]
"""Called with a request after the machine ran it and its reply was queued."""


class Responder(Protocol):
    """Answers a client ahead of the machine: how a recorded session is replayed."""

    def greeting(self, client: int) -> Mapping[str, Any] | None:
        """The greeting for a client that just connected (``None``: the profile's)."""

    def respond(self, client: int, request: Request) -> Outcome | None:
        """The outcome of ``request`` (``None``: let the machine answer it)."""

    async def run(self) -> None:
        """Runs while the simulator does (for what the responder does on its own time)."""


class IdleWatcher(Protocol):
    """Watches the sockets of idle connections, so that no task waits on each one.

    A fleet holds thousands of connections that are idle nearly all the time; a
    task waiting on each costs ~5 KB (the task, its nursery, its stack, trio's
    registration), a socket in one epoll set ~0.2 KB.  See
    :meth:`Simulator.handle_socket_stream`.
    """

    def watch(self, fd: int, idle: IdleConnection) -> None:
        """Call ``idle.wake()`` once ``fd`` is readable (or hung up)."""

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (its connection is served again, or ends)."""


@dataclass(frozen=True)
class _WriteFault:
    kind: Literal["split", "coalesce"]
    size: int = 1


@dataclass
class _Override:
    reply: Any
    once: bool


@dataclass
class _Delay:
    seconds: float
    once: bool


@dataclass(eq=False, slots=True)  # slots: a fleet holds thousands
class _Client:
    """One connection.  Its task reads; a writer and a dispatcher task run beside it
    only while they have work (output queued, requests waiting), since a fleet holds
    thousands of connections that are idle nearly all the time.  A connection with
    a watcher goes further: while idle it has no task at all (it is parked)."""

    id: int
    conn: ServerConnection
    stream: trio.abc.Stream
    scope: trio.CancelScope
    """Cancelled to end the connection: the cancel scope of its nursery (use _drop,
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
    """Bytes to write, each with the message they hold when known (else _UNPARSED)."""
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


@dataclass(eq=False, slots=True)
class IdleConnection:
    """A parked connection, as an :class:`IdleWatcher` holds it."""

    sim: Simulator
    client: _Client

    def wake(self) -> None:
        """Its socket is readable: serve it again (the watcher has forgotten it)."""
        if self.client.parked:
            self.client.woken = True
            self.sim._unpark(self.client)

    def close(self) -> None:
        """The watcher stops (the fleet stops): end the connection now, without a task."""
        client = self.client
        if client.parked:
            client.parked = False
            assert isinstance(client.stream, trio.SocketStream)
            client.stream.socket.close()
            self.sim._forget(client, notify=False)  # its nursery is gone: nothing may start
            log.info("client %d: disconnected", client.id)
            if client.ended_callback is not None:
                client.ended_callback()


class Simulator:
    """A simulated QEMU behind a QMP monitor: the machine, its clients and their traffic.

    ``machine``: the VM to simulate (built from ``vm`` and ``profile`` when absent);
    the simulator drives its clock.  ``epoch``: the timestamp (seconds since the
    epoch) of the first clock reading, after which trio time drives the clock; the
    current wall time when ``None``.  ``multi_client``: serve several clients at once
    instead of QEMU's one at a time.  ``max_output_buffer``: bytes queued for a client
    that stops reading before it is disconnected, not counting the largest queued
    message (one message is never too big).  ``max_input_buffer``: bytes of one
    incomplete request a client may send before it is disconnected; ``None`` leaves
    only QEMU's own limits (64 MiB a token, 2 Mi tokens a value), which a hostile
    client can use to hold ~130 MB.  ``responder``: answers clients ahead of the
    machine (see :class:`Responder`).  ``strict_commands``: a command whose reply
    would be generated from its return type (neither modelled, recorded nor
    overridden) is refused with an error naming it, raised in the test.
    """

    def __init__(
        self,
        machine: Machine | None = None,
        *,
        vm: VmConfig | None = None,
        profile: str = DEFAULT_PROFILE,
        multi_client: bool = False,
        epoch: float | None = None,
        max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER,
        max_input_buffer: int | None = None,
        transcript: Transcript | None = None,
        responder: Responder | None = None,
        strict_commands: bool = False,
    ) -> None:
        if machine is None:
            machine = Machine(vm=vm or VmConfig(), profile=get_profile(profile))
        if strict_commands:  # see Machine.strict_commands
            machine.strict_commands = True
        machine.clock = self.now
        self.machine = machine
        self.transcript = transcript if transcript is not None else Transcript()
        self.multi_client = multi_client
        self.max_output_buffer = max_output_buffer
        self.max_input_buffer = max_input_buffer
        self.responder = responder
        self.errors: list[BaseException] = []
        """Exceptions raised by ``on_command`` callbacks (also logged)."""
        self._epoch = epoch
        self._wall_clock = epoch is None
        self._offset: float | None = None
        self._last = 0.0
        self._ids = itertools.count(1)
        self._clients: dict[int, _Client] = {}
        self._slot = trio.Semaphore(1)
        # Made when someone waits: a fleet holds thousands of simulators nobody waits on.
        self._changed: trio.Event | None = None
        self._exited = False
        self._exit: trio.Event | None = None
        self._commands: list[Request] = []  # the newest _REMEMBERED_COMMANDS
        self._overrides: dict[str, list[_Override]] = {}
        self._delays: dict[str, list[_Delay]] = {}
        self._callbacks: dict[str, list[CommandCallback]] = {}
        self._write_fault: _WriteFault | None = None
        self._before_greeting: list[bytes] = []
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._flushing = False
        self._closers: set[Callable[[], None]] = set()
        """Each closes one listener: called when the VM exits."""

    # --- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        if self._nursery is not None:
            raise RuntimeError("this simulator is already running")
        stack = AsyncExitStack()
        self._start(await stack.enter_async_context(trio.open_nursery()))
        self._stack = stack
        return self

    def attach(self, nursery: trio.Nursery) -> None:
        """Run in ``nursery`` instead of being entered (``async with``): the simulator's
        background work (listeners, throttled events) runs there until it ends.

        For many simulators at once, such as a fleet's: each entered simulator
        costs a nursery of its own.  A simulator attached cannot be entered.
        """
        if self._nursery is not None:
            raise RuntimeError("this simulator is already running")
        self._start(nursery)

    def _start(self, nursery: trio.Nursery) -> None:
        if self._offset is not None and not self._wall_clock:
            self._epoch = self._last  # a new trio run: time goes on from the last reading
        self._offset = None
        self._nursery = nursery
        self._flushing = False
        self._flush_soon()
        if self.responder is not None:
            nursery.start_soon(self.responder.run)
        link_migration(self)  # its migrations over real sockets where they are local

    async def __aexit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._stack is not None and self._nursery is not None
        self._nursery.cancel_scope.cancel()
        stack, self._stack, self._nursery = self._stack, None, None
        try:
            return bool(await stack.__aexit__(etype, exc, tb))
        except BaseExceptionGroup as group:
            # The nursery wraps the body's exception; give the caller the original back.
            leaves = group.exceptions
            if len(leaves) == 1:
                if leaves[0] is exc:
                    return False
                raise leaves[0] from None
            raise

    def now(self) -> float:
        """The simulated wall clock: ``epoch`` plus trio time elapsed since the first reading."""
        try:
            current = trio.current_time()
        except RuntimeError:
            return self._epoch if self._epoch is not None else time.time()
        if self._offset is None:
            start = self._epoch if self._epoch is not None else time.time()
            self._offset = start - current
        self._last = self._offset + current
        return self._last

    def _trio_time(self, wall: float) -> float:
        self.now()
        assert self._offset is not None
        return wall - self._offset

    @property
    def clients(self) -> list[int]:
        """Ids of the clients currently connected (greeted or not)."""
        return list(self._clients)

    def reset(self) -> None:
        """Back to a fresh VM: also forget overrides, delays, callbacks, faults, seen
        commands and the transcript.  Connected clients stay connected; listeners
        closed because the VM exited stay closed."""
        self.machine.reset()
        self._exited = False
        self._exit = None
        self._overrides.clear()
        self._delays.clear()
        self._callbacks.clear()
        self._write_fault = None
        self._before_greeting.clear()
        self._commands.clear()
        self.errors.clear()
        self.transcript.clear()

    # --- delivery -------------------------------------------------------------------

    def cause(self, cause: Cause) -> list[Event]:
        """Apply a cause to the machine and deliver the events it produces now."""
        events = self.machine.cause(cause)
        self.deliver(events)
        if self.machine.exited:
            self._vm_exited()
        return events

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """Deliver an explicit event, validated by the machine (``CatalogError`` otherwise)."""
        event = self.machine.emit(name, data)
        self.deliver([event])
        return event

    def deliver(self, events: Iterable[Event]) -> None:
        """Write events to every negotiated client; clients still negotiating miss them."""
        for event in events:
            data = b""
            parsed: Any = _UNPARSED
            for client in list(self._clients.values()):
                if not client.conn.events_allowed:
                    continue
                if not data:
                    # Encoded once for every client, and recorded as the message its bytes
                    # parse to instead of lexing them back: that re-lexing cost far more
                    # than everything else.
                    data, plain = encode_message(event.message())
                    parsed = _UNPARSED if plain is None else plain
                self._enqueue(client, data, _UNPARSED if client.raw_written else parsed)
        self._state_changed()

    def emit_raw(self, message: Mapping[str, Any] | bytes) -> None:
        """Write a message unvalidated to every negotiated client (for negative tests)."""
        data = message if isinstance(message, bytes) else encode(dict(message))
        for client in list(self._clients.values()):
            if client.conn.negotiated:
                client.raw_written = True
                self._enqueue(client, data)

    # --- faults ---------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every connected client, negotiated or not."""
        for client in list(self._clients.values()):
            client.raw_written = True
            self._enqueue(client, data)

    def before_greeting(self, data: bytes) -> None:
        """Write ``data`` to the next client that connects, ahead of its greeting.

        QEMU itself does this to a client that connects while it starts up: the
        start-up RESUME can arrive before the greeting.
        """
        self._before_greeting.append(data)

    def disconnect(self) -> None:
        """Drop every connected client now (queued output is discarded)."""
        for client in list(self._clients.values()):
            log.info("client %d: disconnected by the simulator", client.id)
            self._drop(client)

    def split_next(self, size: int = 1) -> None:
        """Write the next message (to whichever client) in writes of ``size`` bytes."""
        if size < 1:
            raise ValueError("split_next: size must be at least 1")
        self._write_fault = _WriteFault("split", size)

    def coalesce_next(self) -> None:
        """Hold the next message back and write it in one write with the message after it."""
        self._write_fault = _WriteFault("coalesce")

    def delay_reply(self, command: str, seconds: float, *, once: bool = True) -> None:
        """Make ``command`` take ``seconds`` before it runs and answers (in-band order kept)."""
        if seconds < 0:
            raise ValueError("delay_reply: seconds must not be negative")
        self._delays.setdefault(command, []).append(_Delay(seconds, once))

    # --- hooks ----------------------------------------------------------------------

    def override_reply(
        self, command: str, reply: Any | CommandError | Outcome, *, once: bool = True
    ) -> None:
        """Answer ``command`` with ``reply`` instead of running it on the machine.

        ``reply`` is a return value, a :class:`CommandError`, or a whole
        :class:`Outcome` (events, reply, close).  Overrides queue up per command;
        ``once=False`` keeps one in place until :meth:`reset`.
        """
        self._overrides.setdefault(command, []).append(_Override(reply, once))

    def on_command(self, command: str, callback: CommandCallback) -> Callable[[], None]:
        """Run ``callback(request)`` each time ``command`` ran and its reply was queued.

        The callback may be async; its exceptions are logged and kept in
        :attr:`errors`.  Returns a function that removes the callback.
        """
        self._callbacks.setdefault(command, []).append(callback)

        def remove() -> None:
            callbacks = self._callbacks.get(command, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    async def wait_negotiated(self) -> int:
        """Wait until a connected client has negotiated capabilities; its id."""
        while True:
            for client in self._clients.values():
                if client.conn.negotiated:
                    return client.id
            await self._change().wait()

    async def wait_for_command(
        self, command: str, arguments: Mapping[str, Any] | None = None
    ) -> Request:
        """The first unclaimed request for ``command`` whose arguments include ``arguments``.

        Requests are remembered from the start (the last 1024), so a command sent
        before the call is found; each request is returned once.  Returns after
        the command ran and its reply was queued.
        """
        while True:
            for request in self._commands:
                if request.command == command and arguments_match(
                    request.arguments, arguments or {}
                ):
                    self._commands.remove(request)
                    return request
            await self._change().wait()

    async def wait_exited(self) -> None:
        """Wait until the VM exited (``quit``, or a guest shutdown without ``-no-shutdown``).

        The listeners close at once (a Unix socket file is removed) and every
        connection is closed once its output is written; ``qmpsim serve`` then
        stops, as QEMU's process would.
        """
        if not self._exited:
            if self._exit is None:
                self._exit = trio.Event()
            await self._exit.wait()

    async def wait_no_clients(self) -> None:
        """Wait until no client is connected."""
        while self._clients:
            await self._change().wait()

    @property
    def exited(self) -> bool:
        """Whether the VM exited."""
        return self._exited

    def _change(self) -> trio.Event:
        """Set at the next change of state (a client came or went, a command ran…)."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed

    def _state_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Release throttled events when they fall due, in a task that runs only while
        some are held back (a fleet keeps thousands of simulators that hold none)."""
        if self._flushing or self._nursery is None or self.machine.next_deadline() is None:
            return
        self._flushing = True
        self._nursery.start_soon(self._flush_throttled)

    # --- listeners ------------------------------------------------------------------

    async def listen_unix(self, path: str | os.PathLike[str]) -> str:
        """Start serving a Unix socket in the background; the path it is bound to."""
        result: str = await self._require_nursery().start(self.serve_unix, path)
        return result

    async def listen_tcp(
        self, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False
    ) -> tuple[str, int]:
        """Start serving TCP in the background; the bound ``(host, port)``."""
        serve = functools.partial(self.serve_tcp, host, port, allow_remote=allow_remote)
        result: tuple[str, int] = await self._require_nursery().start(serve)
        return result

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("enter the simulator first: `async with Simulator() as sim:`")
        return self._nursery

    async def serve_unix(
        self,
        path: str | os.PathLike[str],
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve a Unix socket until cancelled or the VM exits; the socket file is mode
        0600 and removed when serving stops, as QEMU's goes away when it exits.

        Refuses (``ListenError``) a path that holds anything but a stale socket.
        """
        bound = bind_unix(os.fspath(path))
        try:
            log.debug("listening on %s", bound.path)
            task_status.started(bound.path)
            await self._accept_loop(bound.listener(), bound.close)
        finally:
            bound.close()

    async def serve_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve TCP until cancelled or the VM exits; loopback only unless ``allow_remote``."""
        listeners, bound = await bind_tcp(host, port, allow_remote=allow_remote)
        log.debug("listening on %s:%d", *bound)
        task_status.started(bound)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, listener.socket.close)

    async def _accept_loop(self, listener: trio.SocketListener, close: Callable[[], None]) -> None:
        """Accept clients until the listener is closed; ``close`` closes it when the VM exits."""
        forget = self.on_exit(close)

        async def ready() -> None:
            if not self.multi_client:
                # Like QEMU: while a client is connected, leave the next in the backlog.
                await self._slot.acquire()
                self._slot.release()

        def accepted(stream: trio.SocketStream) -> Callable[[], Awaitable[None]]:
            held = False
            if not self.multi_client:
                # Taken now, before the loop looks at the slot again.
                try:
                    self._slot.acquire_nowait()
                    held = True
                except trio.WouldBlock:
                    pass
            return functools.partial(self._run_client, stream, held)

        try:
            await accept_loop(listener, accepted, ready=ready, close=close)
        finally:
            forget()

    def on_exit(self, close: Callable[[], None]) -> Callable[[], None]:
        """Call ``close()`` when the VM exits (at once if it has): how a listener served
        outside the simulator (a fleet's) goes away with the VM, as QEMU's socket does.

        Returns a function that forgets ``close``.
        """
        if self.exited:
            close()
        self._closers.add(close)
        return functools.partial(self._closers.discard, close)

    # --- one client -----------------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection over ``stream`` until either side closes it.

        With the one-client policy this first waits, silently, for the current
        client to leave.  The stream is closed on return, at once and without a
        greeting if the VM has exited.
        """
        await self._run_client(stream, False)

    async def handle_socket_stream(
        self, stream: trio.SocketStream, watcher: IdleWatcher, ended: Callable[[], None]
    ) -> None:
        """Serve one socket connection as :meth:`handle_stream` does, except that while
        it is idle (nothing to read, write or run) no task serves it: ``watcher``
        watches its socket and wakes it, and its tasks run in the simulator's
        nursery.  Returns once it is idle or has ended; ``ended()`` is called once
        it has ended (the stream is closed by then).  For a fleet, where thousands
        of connections wait for their next command.
        """
        await self._run_client(stream, False, watcher, ended)

    async def _run_client(
        self,
        stream: trio.abc.Stream,
        slot_held: bool,
        watcher: IdleWatcher | None = None,
        ended: Callable[[], None] | None = None,
    ) -> None:
        try:
            if not self.multi_client and not slot_held:
                try:
                    await self._slot.acquire()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                slot_held = True
            # From here the connection owns the slot: released when it ends.
            held, slot_held = slot_held, False
            await self._serve_client(stream, held, watcher, ended)
        finally:
            if slot_held:
                self._slot.release()

    async def _serve_client(
        self,
        stream: trio.abc.Stream,
        slot: bool,
        watcher: IdleWatcher | None,
        ended: Callable[[], None] | None,
    ) -> None:
        if self.exited:
            # Accepted before the VM exited, served after: QEMU's process is gone by
            # now, so the connection ends without a greeting.
            if slot:
                self._slot.release()
            await trio.aclose_forcefully(stream)
            if ended is not None:
                ended()
            return
        cid = next(self._ids)
        recorded = self.responder.greeting(cid) if self.responder is not None else None
        conn = ServerConnection(self.machine.profile, greeting=recorded)
        log.info("client %d: connected", cid)
        client = _Client(cid, conn, stream, trio.CancelScope(), None, slot, watcher, ended)
        self._clients[cid] = client
        for early in self._before_greeting:
            client.raw_written = True
            self._enqueue(client, early)
        self._before_greeting.clear()
        greeting = client.conn.greeting()
        parsed = _UNPARSED if client.raw_written else _lexed_greeting(greeting)
        self._enqueue(client, greeting, parsed)
        await self._serve_connection(client)

    async def _serve_connection(self, client: _Client) -> None:
        """Serve ``client`` until it ends, or until it parks (idle, with a watcher)."""
        parked = False
        try:
            async with trio.open_nursery() as nursery:
                # The connection's own tasks run in its nursery; cancelling the
                # nursery ends the connection.
                client.scope, client.tasks = nursery.cancel_scope, nursery
                if client.dropped:
                    nursery.cancel_scope.cancel()
                if client.outbox or client.closing:
                    self._write_soon(client)
                if client.requests:
                    self._dispatch_soon(client)
                parked = await self._reader(client)
                while not parked and (client.writing or client.dispatching):
                    client.room = trio.Event()
                    await client.room.wait()
                # Nothing may start in the nursery now: it closes once this body ends
                # (or once it is cancelled, which _write_soon and _dispatch_soon check).
                client.tasks = None
        except Exception:
            parked = False
            log.exception("client %d: internal error; closing its connection", client.id)
        finally:
            client.tasks = None
            client.room = None
            if parked and self._may_park(client):
                self._park(client)
            elif parked and self._nursery is not None:
                # Work came while its nursery closed: serve it on, in a new task.
                self._nursery.start_soon(self._serve_connection, client)
            else:
                self._forget(client)
                await trio.aclose_forcefully(client.stream)
                log.info("client %d: disconnected", client.id)
                if client.ended_callback is not None:
                    client.ended_callback()

    def _forget(self, client: _Client, *, notify: bool = True) -> None:
        """The connection has ended: it is no longer a client (``notify``: tell who waits)."""
        if client.slot:
            client.slot = False
            self._slot.release()
        self._clients.pop(client.id, None)
        self.transcript.end_client(client.id)
        if notify:
            self._state_changed()

    def _may_park(self, client: _Client) -> bool:
        """Whether ``client`` is idle: nothing to read but what the peer sends next."""
        return (
            client.watcher is not None
            and client.greeted
            and not (client.writing or client.dispatching or client.outbox or client.requests)
            and not (client.closing or client.ended or client.dropped)
            and not client.scope.cancel_called
            and self._nursery is not None
        )

    def _park(self, client: _Client) -> None:
        assert client.watcher is not None and isinstance(client.stream, trio.SocketStream)
        if client.context is None:
            client.context = contextvars.copy_context()
        client.parked = True
        client.watcher.watch(client.stream.socket.fileno(), IdleConnection(self, client))

    def _unpark(self, client: _Client) -> None:
        """Serve a parked connection again, in a task of the simulator's nursery."""
        assert client.watcher is not None and client.context is not None
        assert isinstance(client.stream, trio.SocketStream) and self._nursery is not None
        client.parked = False
        client.watcher.unwatch(client.stream.socket.fileno())
        # Started in the connection's own context, as its first task was.
        client.context.run(self._nursery.start_soon, self._serve_connection, client)

    def _idle(self, client: _Client) -> None:
        """The writer or the dispatcher is done: a connection now idle parks (its reader,
        waiting for input, is interrupted, and parks instead)."""
        if client.read_scope is not None and self._may_park(client):
            client.read_scope.cancel()

    def _drop(self, client: _Client) -> None:
        """End the connection now; what is queued for it is discarded."""
        client.dropped = True
        client.scope.cancel()
        if client.parked:
            self._unpark(client)  # its task sees it dropped and ends it

    async def _reader(self, client: _Client) -> bool:
        """Read and queue the client's requests until its input ends (``False``) or it
        is idle and may park (``True``)."""
        # Nothing is read before the greeting is out, so a client that sends at once
        # is still answered, and recorded, after its greeting.
        while not client.greeted:
            client.room = trio.Event()
            await client.room.wait()
        while True:
            if client.woken:
                client.woken = False  # its socket is readable: read it first
            elif self._may_park(client):
                return True
            try:
                if client.watcher is None:
                    data = bytes(await client.stream.receive_some(_RECEIVE_SIZE))
                else:
                    # receive_some loses nothing when cancelled: what arrives waits
                    # in the socket for the watcher.
                    with trio.CancelScope() as waiting:
                        client.read_scope = waiting
                        try:
                            data = bytes(await client.stream.receive_some(_RECEIVE_SIZE))
                        finally:
                            client.read_scope = None
                    if waiting.cancelled_caught:
                        continue
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if data:
                self.transcript.record(Direction.IN, client.id, self.now(), data)
                client.conn.receive_data(data)
            else:
                # What the peer sent before it closed its side is answered first, and
                # events reach it meanwhile: a half-closed peer may be waiting for them.
                while (client.requests or client.dispatching) and not client.closing:
                    client.room = trio.Event()
                    await client.room.wait()
                client.conn.receive_data(data)
            limit = self.max_input_buffer
            if limit is not None and client.conn.buffered_input > limit:
                log.warning(
                    "client %d: more than %d bytes of one unfinished request; disconnecting it",
                    client.id,
                    limit,
                )
                client.scope.cancel()
                return False
            while not isinstance(item := client.conn.next_event(), NeedData):
                if isinstance(item, Request) and item.oob:
                    await self._execute(client, item)
                    continue
                # Like QEMU's monitor, reading pauses while the queue is full.
                while len(client.requests) >= _REQUEST_QUEUE and not client.closing:
                    client.room = trio.Event()
                    await client.room.wait()
                if client.closing:
                    return False  # the dispatcher stopped: the connection is closing
                client.requests.append(item)
                self._dispatch_soon(client)
            if not data:
                client.ended = True
                self._dispatch_soon(client)
                return False

    def _dispatch_soon(self, client: _Client) -> None:
        """Run the client's waiting requests in order, in a task started if none runs."""
        if not client.dispatching and client.tasks is not None and not client.scope.cancel_called:
            client.dispatching = True
            client.tasks.start_soon(self._dispatcher, client)

    async def _dispatcher(self, client: _Client) -> None:
        try:
            while client.requests and not client.closing:
                item = client.requests.pop(0)
                if client.room is not None:
                    client.room.set()
                if isinstance(item, Reply):
                    self._enqueue(client, item.data)
                elif isinstance(item, Negotiated):
                    self._enqueue(client, client.conn.send_negotiated(item))
                    log.info("client %d: capabilities negotiated", client.id)
                    self._state_changed()
                else:
                    await self._execute(client, item)
        finally:
            client.dispatching = False
            if client.room is not None:
                client.room.set()
        if client.closing or client.ended:
            # The rest of the output is written, then the connection ends.
            client.closing = True
            if client.room is not None:
                client.room.set()
            self._write_soon(client)
        self._idle(client)

    async def _execute(self, client: _Client, request: Request) -> None:
        delay = _take(self._delays, request.command)
        if delay is not None and delay.seconds > 0:
            await trio.sleep(delay.seconds)
        override = _take(self._overrides, request.command)
        try:
            answer = None
            if override is None and self.responder is not None:
                answer = self.responder.respond(client.id, request)
            if answer is not None:
                outcome = answer
            elif override is None:
                outcome = self.machine.execute(request.command, request.arguments)
            elif isinstance(override.reply, Outcome):
                outcome = override.reply
            else:
                outcome = Outcome(override.reply)
        except Exception as exc:
            log.exception("client %d: %s failed in the machine", client.id, request.command)
            outcome = Outcome(CommandError("GenericError", f"qmpsim internal error: {exc}"))
        self.deliver(outcome.events)
        reply = outcome.reply
        if isinstance(reply, CommandError):
            data = client.conn.send_error(request, reply.error_class, reply.desc)
        else:
            data = client.conn.send_return(request, reply)
        self._enqueue(client, data)
        if self.machine.exited:
            self._vm_exited()
        elif outcome.close:
            self._close_after_output(client)
        self._commands.append(request)
        if len(self._commands) > _REMEMBERED_COMMANDS:
            del self._commands[0]
        self._state_changed()
        for callback in list(self._callbacks.get(request.command, ())):
            try:
                result = callback(request)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("on_command callback for %s failed", request.command)
                self.errors.append(exc)

    def _close_after_output(self, client: _Client) -> None:
        client.conn.close()
        client.closing = True
        if client.room is not None:
            client.room.set()
        self._write_soon(client)

    def _vm_exited(self) -> None:
        """QEMU exits: its sockets go away, and every connection ends once its output
        is written."""
        if not self._exited:
            log.info("the VM exited")
            self._exited = True
            if self._exit is not None:
                self._exit.set()
        for close in list(self._closers):
            close()
        for client in list(self._clients.values()):
            self._close_after_output(client)

    def _enqueue(self, client: _Client, data: bytes, parsed: Any = _UNPARSED) -> None:
        if not data or client.dropped or client.scope.cancel_called:
            return
        size = len(data)
        buffered = client.buffered + size
        largest = max(client.largest, size)
        # The bound is on what the client leaves unread, not on what QEMU may say in
        # one message (a 1 MiB id is echoed whole): the largest message does not count.
        if buffered - largest > self.max_output_buffer:
            log.warning(
                "client %d: not reading (more than %d bytes queued); disconnecting it",
                client.id,
                self.max_output_buffer,
            )
            self._drop(client)
            return
        client.outbox.append((data, parsed))
        client.buffered = buffered
        client.largest = largest
        self._write_soon(client)

    def _write_soon(self, client: _Client) -> None:
        """Write the client's queued output, in a task started if none runs."""
        if client.more is not None:
            client.more.set()
        if client.parked:
            self._unpark(client)  # the connection's task starts the writer
            return
        if not client.writing and client.tasks is not None and not client.scope.cancel_called:
            client.writing = True
            client.tasks.start_soon(self._writer, client)

    @staticmethod
    async def _next_message(client: _Client) -> tuple[bytes, Any] | None:
        # The bytes stay counted in ``buffered`` until they are written (see _writer).
        while not client.outbox:
            if client.closing:
                return None
            client.more = trio.Event()
            await client.more.wait()
        return client.outbox.pop(0)

    @staticmethod
    def _greeted(client: _Client) -> None:
        if not client.greeted:
            client.greeted = True
            if client.room is not None:
                client.room.set()  # the reader waits for it

    async def _writer(self, client: _Client) -> None:
        """Write until nothing is queued; then end, or end the connection if it is closing."""
        try:
            while client.outbox:
                fault, self._write_fault = self._write_fault, None
                if fault is None:
                    # Everything queued goes out in one write: a system call and a trip
                    # through the scheduler per batch instead of per message.
                    chunks, client.outbox = client.outbox, []
                else:
                    chunks = [client.outbox.pop(0)]
                if fault is not None and fault.kind == "coalesce":
                    self._greeted(client)  # the message it waits for may need a request
                    following = await self._next_message(client)
                    if following is not None:
                        chunks.append(following)
                now = self.now()
                for chunk, parsed in chunks:
                    if parsed is _UNPARSED:
                        self.transcript.record(Direction.OUT, client.id, now, chunk)
                    else:
                        self.transcript.append(
                            Entry(Direction.OUT, client.id, now, chunk, (parsed,))
                        )
                joined = b"".join(chunk for chunk, _ in chunks)
                if fault is not None and fault.kind == "split":
                    for start in range(0, len(joined), fault.size):
                        await client.stream.send_all(joined[start : start + fault.size])
                else:
                    await client.stream.send_all(joined)
                client.buffered -= len(joined)
                self._greeted(client)
                client.largest = max((len(chunk) for chunk, _ in client.outbox), default=0)
            if not client.closing:
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("client %d: went away while being written to", client.id)
        finally:
            client.writing = False
            if client.room is not None:
                client.room.set()
            self._idle(client)
        client.scope.cancel()

    # --- throttled events -----------------------------------------------------------

    async def _flush_throttled(self) -> None:
        try:
            while (deadline := self.machine.next_deadline()) is not None:
                changed = self._change()
                with trio.move_on_at(self._trio_time(deadline)):
                    await changed.wait()
                due = self.machine.poll()
                if due:
                    self.deliver(due)
                if self.machine.exited:  # a timer's action can end the VM (a guest powering off)
                    self._vm_exited()
                elif self.machine.next_deadline() == deadline and trio.current_time() >= (
                    self._trio_time(deadline)
                ):
                    await changed.wait()  # a deadline that yields nothing would spin otherwise
        finally:
            self._flushing = False


def _lexed_greeting(data: bytes) -> Any:
    """The greeting as its bytes lex: lexed once per distinct greeting, copied per client."""
    value = _lex_once(data)
    return value if value is _UNPARSED else copy.deepcopy(value)


@functools.lru_cache(maxsize=8)
def _lex_once(data: bytes) -> Any:
    values = JsonStreamer().feed(data)
    if len(values) != 1 or isinstance(values[0], ParseError):
        return _UNPARSED
    return values[0]


def _take(table: Mapping[str, list[Any]], command: str) -> Any | None:
    entries = table.get(command)
    if not entries:
        return None
    first = entries[0]
    if first.once:
        entries.pop(0)
    return first
