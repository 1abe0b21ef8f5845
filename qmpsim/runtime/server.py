"""The simulator's façade: the machine, its clients and what a test arms.

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
policy), :mod:`qmpsim.runtime.delivery` (events to the clients, the VM's exit,
waiting on what happened), :mod:`qmpsim.runtime.commands` (running a request: the
responder, overrides, callbacks), :mod:`qmpsim.runtime.connection` (one client's
reader, dispatcher and writer, and parking when idle), :mod:`qmpsim.runtime.faults`
(faults a test arms).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import trio

from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile
from qmpsim.qmp.protocol import Request, ServerConnection
from qmpsim.qmp.transcript import Transcript
from qmpsim.qmp.wire import JsonStreamer, ParseError
from qmpsim.runtime.clock import SimClock
from qmpsim.runtime.commands import CommandCallback, Commands, Responder
from qmpsim.runtime.connection import Connection
from qmpsim.runtime.faults import Faults, WriteFault
from qmpsim.runtime.migration_link import link as link_migration
from qmpsim.runtime.parking import IdleConnection, IdleWatcher
from qmpsim.runtime.serving import Serving
from qmpsim.runtime.writer import UNPARSED
from qmpsim.vm.fds import Descriptors
from qmpsim.vm.machine import CommandError, Machine, Outcome, VmConfig

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


class Simulator(Commands, Serving):
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
        self._commands: list[Request] = []  # the newest ones (runtime.commands)
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

    # --- what a test arms: faults and overrides -----------------------------------

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

    def override_reply(
        self, command: str, reply: Any | CommandError | Outcome, *, once: bool = True
    ) -> None:
        """Answer ``command`` with ``reply`` instead of running it on the machine.

        ``reply`` is a return value, a :class:`CommandError`, or a whole
        :class:`Outcome` (events, reply, close).  Overrides queue up per command;
        ``once=False`` keeps one in place until :meth:`reset`.
        """
        self._arm().override(command, reply, once)

    def _arm(self) -> Faults:
        """The simulator's faults, to arm one."""
        if self._faults is None:
            self._faults = Faults()
        return self._faults

    # --- a client let in ------------------------------------------------------------

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
