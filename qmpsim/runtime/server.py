"""The simulator's façade: the machine, its clients, event fan-out and hooks.

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

Its parts live beside it: :mod:`qmpsim.runtime.serving` (listeners, the one-client
policy), :mod:`qmpsim.runtime.connection` (one client's reader, dispatcher and writer,
and parking when idle), :mod:`qmpsim.runtime.faults` (faults a test arms).
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Protocol

import trio

from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile
from qmpsim.qmp.protocol import Request, ServerConnection
from qmpsim.qmp.transcript import Transcript, arguments_match
from qmpsim.qmp.wire import JsonStreamer, ParseError, encode, encode_message
from qmpsim.runtime.clock import SimClock
from qmpsim.runtime.connection import UNPARSED, Connection, IdleConnection, IdleWatcher
from qmpsim.runtime.faults import Faults, WriteFault
from qmpsim.runtime.migration_link import link as link_migration
from qmpsim.runtime.serving import Serving
from qmpsim.vm.fds import Descriptors, receiving
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

_REMEMBERED_COMMANDS = 1024

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


class Simulator(Serving):
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
        self._clock = SimClock(epoch)
        machine.clock = self._clock.now
        self.machine = machine
        self.transcript = transcript if transcript is not None else Transcript()
        self.multi_client = multi_client
        self.max_output_buffer = max_output_buffer
        self.max_input_buffer = max_input_buffer
        self.responder = responder
        self.errors: list[BaseException] = []
        """Exceptions raised by ``on_command`` callbacks (also logged)."""
        self._ids = itertools.count(1)
        self._clients: dict[int, Connection] = {}
        self._slot = trio.Semaphore(1)
        # Made when someone waits: a fleet holds thousands of simulators nobody waits on.
        self._changed: trio.Event | None = None
        self._exited = False
        self._exit: trio.Event | None = None
        self._commands: list[Request] = []  # the newest _REMEMBERED_COMMANDS
        # Made when first armed or added: a fleet holds thousands of simulators with none.
        self._faults: Faults | None = None
        self._callbacks: dict[str, list[CommandCallback]] | None = None
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
        self._clock.restart()
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
        finally:
            # the simulator stops as QEMU's process ends: the files it holds close
            self.machine.part(Descriptors).close_all()

    def now(self) -> float:
        """The simulated wall clock: ``epoch`` plus trio time elapsed since the first reading."""
        return self._clock.now()

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
        self._faults = None
        self._callbacks = None
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
            parsed: Any = UNPARSED
            for client in list(self._clients.values()):
                if not client.conn.events_allowed:
                    continue
                if not data:
                    # Encoded once for every client, and recorded as the message its bytes
                    # parse to instead of lexing them back: that re-lexing cost far more
                    # than everything else.
                    data, plain = encode_message(event.message())
                    parsed = UNPARSED if plain is None else plain
                client.enqueue(data, UNPARSED if client.raw_written else parsed)
        self._state_changed()

    def emit_raw(self, message: Mapping[str, Any] | bytes) -> None:
        """Write a message unvalidated to every negotiated client (for negative tests)."""
        data = message if isinstance(message, bytes) else encode(dict(message))
        for client in list(self._clients.values()):
            if client.conn.negotiated:
                client.raw_written = True
                client.enqueue(data)

    # --- faults ---------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every connected client, negotiated or not."""
        for client in list(self._clients.values()):
            client.raw_written = True
            client.enqueue(data)

    def before_greeting(self, data: bytes) -> None:
        """Write ``data`` to the next client that connects, ahead of its greeting.

        QEMU itself does this to a client that connects while it starts up: the
        start-up RESUME can arrive before the greeting.
        """
        self._arm().before_greeting.append(data)

    def disconnect(self) -> None:
        """Drop every connected client now (queued output is discarded)."""
        for client in list(self._clients.values()):
            log.info("client %d: disconnected by the simulator", client.id)
            client.drop()

    def split_next(self, size: int = 1) -> None:
        """Write the next message (to whichever client) in writes of ``size`` bytes."""
        self._arm().split_next(size)

    def coalesce_next(self) -> None:
        """Hold the next message back and write it in one write with the message after it."""
        self._arm().coalesce_next()

    def delay_reply(self, command: str, seconds: float, *, once: bool = True) -> None:
        """Make ``command`` take ``seconds`` before it runs and answers (in-band order kept)."""
        self._arm().delay(command, seconds, once)

    # --- hooks ----------------------------------------------------------------------

    def override_reply(
        self, command: str, reply: Any | CommandError | Outcome, *, once: bool = True
    ) -> None:
        """Answer ``command`` with ``reply`` instead of running it on the machine.

        ``reply`` is a return value, a :class:`CommandError`, or a whole
        :class:`Outcome` (events, reply, close).  Overrides queue up per command;
        ``once=False`` keeps one in place until :meth:`reset`.
        """
        self._arm().override(command, reply, once)

    def on_command(self, command: str, callback: CommandCallback) -> Callable[[], None]:
        """Run ``callback(request)`` each time ``command`` ran and its reply was queued.

        The callback may be async; its exceptions are logged and kept in
        :attr:`errors`.  Returns a function that removes the callback.
        """
        if self._callbacks is None:
            self._callbacks = {}
        self._callbacks.setdefault(command, []).append(callback)

        def remove() -> None:
            callbacks = (self._callbacks or {}).get(command, [])
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
        client = Connection(self, cid, conn, stream, trio.CancelScope(), None, slot, watcher, ended)
        self._clients[cid] = client
        if self._faults is not None:
            for early in self._faults.take_greeting_prefix():
                client.raw_written = True
                client.enqueue(early)
        greeting = client.conn.greeting()
        parsed = UNPARSED if client.raw_written else _lexed_greeting(greeting)
        client.enqueue(greeting, parsed)
        await client.serve()

    # --- what a connection needs of its simulator (ConnectionHost) ----------------------

    def _arm(self) -> Faults:
        """The simulator's faults, to arm one."""
        if self._faults is None:
            self._faults = Faults()
        return self._faults

    def _take_write_fault(self) -> WriteFault | None:
        """The fault the next write suffers, if one is armed (see :meth:`split_next`)."""
        return None if self._faults is None else self._faults.take_write()

    def _forget(self, client: Connection, *, notify: bool = True) -> None:
        """The connection has ended: it is no longer a client (``notify``: tell who waits)."""
        if client.slot:
            client.slot = False
            self._slot.release()
        self._clients.pop(client.id, None)
        client.descriptors.close()
        self.machine.part(Descriptors).monitor_closed(len(self._clients))
        self.transcript.end_client(client.id)
        if notify:
            self._state_changed()

    async def _execute(self, client: Connection, request: Request) -> None:
        """Run ``request`` for ``client`` and queue its reply (and the events it made)."""
        faults = self._faults
        delay = None if faults is None else faults.take_delay(request.command)
        if delay is not None and delay.seconds > 0:
            await trio.sleep(delay.seconds)
        faults = self._faults  # reset() may have dropped them while it waited
        override = None if faults is None else faults.take_override(request.command)
        try:
            answer = None
            if override is None and self.responder is not None:
                answer = self.responder.respond(client.id, request)
            if answer is not None:
                outcome = answer
            elif override is None:
                with receiving(self.machine.part(Descriptors), client.descriptors.take):
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
        client.enqueue(data)
        if self.machine.exited:
            self._vm_exited()
        elif outcome.close:
            client.close_after_output()
        self._commands.append(request)
        if len(self._commands) > _REMEMBERED_COMMANDS:
            del self._commands[0]
        self._state_changed()
        for callback in list((self._callbacks or {}).get(request.command, ())):
            try:
                result = callback(request)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("on_command callback for %s failed", request.command)
                self.errors.append(exc)

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
        self.machine.part(Descriptors).close_all()  # QEMU's process is gone, and its files
        for client in list(self._clients.values()):
            client.close_after_output()

    # --- throttled events -----------------------------------------------------------

    async def _flush_throttled(self) -> None:
        try:
            while (deadline := self.machine.next_deadline()) is not None:
                changed = self._change()
                with trio.move_on_at(self._clock.trio_time(deadline)):
                    await changed.wait()
                due = self.machine.poll()
                if due:
                    self.deliver(due)
                if self.machine.exited:  # a timer's action can end the VM (a guest powering off)
                    self._vm_exited()
                elif self.machine.next_deadline() == deadline and trio.current_time() >= (
                    self._clock.trio_time(deadline)
                ):
                    await changed.wait()  # a deadline that yields nothing would spin otherwise
        finally:
            self._flushing = False


def _lexed_greeting(data: bytes) -> Any:
    """The greeting as its bytes lex: lexed once per distinct greeting, copied per client."""
    value = _lex_once(data)
    return value if value is UNPARSED else copy.deepcopy(value)


@functools.lru_cache(maxsize=8)
def _lex_once(data: bytes) -> Any:
    values = JsonStreamer().feed(data)
    if len(values) != 1 or isinstance(values[0], ParseError):
        return UNPARSED
    return values[0]
