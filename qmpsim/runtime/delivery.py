"""What reaches a simulator's clients on its own: events, throttled events, the VM's exit.

:class:`Delivery` is the part of :class:`~qmpsim.runtime.server.Simulator` that
carries what the VM says to every negotiated client (causes, explicit and raw
events, throttled events once they fall due), ends the clients' connections when
the VM exits, and lets a test wait on what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from qmpsim.qmp.wire import encode, encode_message
from qmpsim.runtime.clock import SimClock
from qmpsim.runtime.connection import Connection
from qmpsim.runtime.writer import UNPARSED
from qmpsim.vm.fds import Descriptors
from qmpsim.vm.machine import Cause, Event, Machine

__all__ = ["Delivery"]

log = logging.getLogger("qmpsim.server")


class Delivery:
    """Events to the clients, the VM's exit, and waiting on them (a base of the
    simulator, not used alone)."""

    machine: Machine
    _clock: SimClock
    _clients: dict[int, Connection]
    _changed: trio.Event | None
    _exited: bool
    _exit: trio.Event | None
    _nursery: trio.Nursery | None
    _flushing: bool
    _closers: set[Callable[[], None]]

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

    # --- waiting on what happened ---------------------------------------------------

    async def wait_negotiated(self) -> int:
        """Wait until a connected client has negotiated capabilities; its id."""
        while True:
            for client in self._clients.values():
                if client.conn.negotiated:
                    return client.id
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

    # --- throttled events -----------------------------------------------------------

    def _flush_soon(self) -> None:
        """Release throttled events when they fall due, in a task that runs only while
        some are held back (a fleet keeps thousands of simulators that hold none)."""
        if self._flushing or self._nursery is None or self.machine.next_deadline() is None:
            return
        self._flushing = True
        self._nursery.start_soon(self._flush_throttled)

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
