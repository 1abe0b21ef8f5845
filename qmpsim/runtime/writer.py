"""A connection's writer: its queued output, the bound on it, and the task that writes it.

:class:`Writer` is the part of :class:`~qmpsim.runtime.connection.Connection` that
queues what the simulator says to one client (:meth:`Writer.enqueue`), disconnects a
client that leaves too much unread, and writes the queue in a task that runs only
while there is output, recording each message in the transcript and suffering the
write faults a test armed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import trio

from qmpsim.qmp.transcript import Direction, Entry, Transcript
from qmpsim.runtime.faults import WriteFault
from qmpsim.runtime.parking import Parking, ParkingHost

__all__ = ["UNPARSED", "Writer", "WriterHost"]

log = logging.getLogger("qmpsim.server")

UNPARSED: Any = object()
"""Queued bytes whose message the transcript must lex itself."""


class WriterHost(ParkingHost, Protocol):
    """What the writer needs of the simulator that serves the connection."""

    transcript: Transcript
    max_output_buffer: int

    def now(self) -> float:
        """The simulated wall clock, which stamps the transcript."""

    def _take_write_fault(self) -> WriteFault | None:
        """The fault the next write suffers, if one is pending (it is taken)."""


class Writer(Parking):
    """The writer of a connection (a base of the connection, not used alone; its state
    is the connection's fields)."""

    if not TYPE_CHECKING:  # as Parking's
        __slots__ = ()

    host: WriterHost
    tasks: trio.Nursery | None
    buffered: int
    largest: int
    more: trio.Event | None
    room: trio.Event | None

    def drop(self) -> None:
        """End the connection now; what is queued for it is discarded."""
        raise NotImplementedError

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
