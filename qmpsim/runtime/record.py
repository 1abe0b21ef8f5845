"""Record a real QEMU monitor: a transparent proxy that keeps every byte, both ways, timed.

Each client that connects to the proxy gets its own connection to the upstream
monitor (a Unix socket or TCP), and every read from either side is forwarded
unchanged and appended to a :class:`~qmpsim.qmp.transcript.Transcript` (client to
QEMU is ``in``, QEMU to client ``out``, as in a simulator's transcript).  A side
that closes is recorded as an empty entry, so a replay knows when QEMU exited.
The transcript is what ``qmpsim replay`` serves back and ``qmpsim scenario-from``
turns into a scenario.

QEMU itself serves one monitor client at a time; the proxy changes nothing
about that: a second client's upstream connection waits, without a greeting,
as it would waiting for QEMU.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable

import trio

from qmpsim.qmp.transcript import Direction, Transcript
from qmpsim.runtime.listen import accept_loop, bind_tcp, bind_unix

__all__ = ["Recorder", "Upstream"]

log = logging.getLogger("qmpsim.record")

Upstream = str | tuple[str, int]
"""A monitor to record: a Unix socket path, or ``(host, port)``."""

_RECEIVE_SIZE = 1 << 16


class Recorder:
    """A proxy in front of the QEMU monitor at ``upstream`` that records its traffic.

    ``transcript`` receives the entries (subscribe to it to write them as they
    come); ``clock`` stamps them (seconds since the epoch); clients are numbered
    from ``first_client``.
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        transcript: Transcript | None = None,
        clock: Callable[[], float] = time.time,
        first_client: int = 1,
    ) -> None:
        self.upstream = upstream
        self.transcript = transcript if transcript is not None else Transcript()
        self.clock = clock
        self.qemu_exited = trio.Event()
        """Set once a recorded session shows QEMU exiting: a ``quit`` it answered, or
        a connection it closed before its client did."""
        self._ids = itertools.count(first_client)
        self._connected = 0
        self._changed = trio.Event()

    @property
    def connected(self) -> int:
        """Clients connected through the proxy now."""
        return self._connected

    async def wait_no_clients(self) -> None:
        """Wait until no client is connected through the proxy."""
        while self._connected:
            await self._changed.wait()

    # --- listening ----------------------------------------------------------------------

    async def serve_unix(
        self,
        path: str | os.PathLike[str],
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve a Unix socket (mode 0600, removed at exit) until cancelled."""
        bound = bind_unix(os.fspath(path))
        try:
            task_status.started(bound.path)
            await accept_loop(bound.listener(), self._accepted, close=bound.close)
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
        """Serve TCP (loopback only unless ``allow_remote``) until cancelled."""
        listeners, bound = await bind_tcp(host, port, allow_remote=allow_remote)
        task_status.started(bound)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(accept_loop, listener, self._accepted)

    def _accepted(self, stream: trio.SocketStream) -> Callable[[], Awaitable[None]]:
        return functools.partial(self.handle_stream, stream)

    # --- one client ---------------------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Proxy one client connection to its own upstream connection, recording both ways."""
        client = next(self._ids)
        self._connected += 1
        self._state_changed()
        try:
            try:
                upstream = await self._connect()
            except OSError as exc:
                log.error("client %d: cannot reach %s: %s", client, self._where(), _reason(exc))
                return
            log.info("client %d: connected, recording %s", client, self._where())
            async with upstream, trio.open_nursery() as nursery:
                closed: list[Direction] = []
                nursery.start_soon(self._pump, stream, upstream, client, Direction.IN, closed)
                nursery.start_soon(self._pump, upstream, stream, client, Direction.OUT, closed)
            if self._exited(client):
                log.info("client %d: QEMU exited", client)
                self.qemu_exited.set()
        finally:
            await trio.aclose_forcefully(stream)
            self.transcript.end_client(client)
            self._connected -= 1
            self._state_changed()
            log.info("client %d: disconnected", client)

    def _exited(self, client: int) -> bool:
        # The cassette's reading of a session is the one rule for "QEMU exited".
        from qmpsim.qmp.cassette import read_cassette

        mine = Transcript(entries=[e for e in self.transcript if e.client == client])
        return any(session.closed for session in read_cassette(mine).sessions)

    async def _connect(self) -> trio.abc.Stream:
        if isinstance(self.upstream, str):
            return await trio.open_unix_socket(self.upstream)
        host, port = self.upstream
        return await trio.open_tcp_stream(host, port)

    def _where(self) -> str:
        if isinstance(self.upstream, str):
            return self.upstream
        return f"{self.upstream[0]}:{self.upstream[1]}"

    async def _pump(
        self,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        client: int,
        direction: Direction,
        closed: list[Direction],
    ) -> None:
        while True:
            try:
                data = bytes(await source.receive_some(_RECEIVE_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            # Recorded before it is forwarded: the entry's time is when it arrived.
            self.transcript.record(direction, client, self.clock(), data)
            if not data:
                break
            try:
                await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
        closed.append(direction)
        # Half-close: the other side sees the end of this one, as without the proxy.
        if isinstance(sink, trio.SocketStream):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await sink.send_eof()

    def _state_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
