"""How clients reach a simulator: its listeners and QEMU's one-client policy.

:class:`Serving` is the part of :class:`~qmpsim.runtime.server.Simulator` that takes
connections in: Unix and TCP listeners (bound and accepted by
:mod:`qmpsim.runtime.listen`), streams handed over by the caller, and the one-client
slot that leaves a second client waiting, without a greeting, until the first leaves.
What becomes of a connection once it is let in is the simulator's
``_serve_client``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from qmpsim.runtime.listen import accept_loop, bind_tcp, bind_unix
from qmpsim.runtime.parking import IdleWatcher

__all__ = ["Serving"]

log = logging.getLogger("qmpsim.server")


class Serving:
    """Listeners and the one-client slot (a base of the simulator, not used alone)."""

    multi_client: bool
    _slot: trio.Semaphore
    _closers: set[Callable[[], None]]
    """Each closes one listener: called when the VM exits."""
    _nursery: trio.Nursery | None
    _exited: bool

    async def _serve_client(
        self,
        stream: trio.abc.Stream,
        slot: bool,
        watcher: IdleWatcher | None,
        ended: Callable[[], None] | None,
    ) -> None:
        """Serve a connection let in (``slot``: it holds the one-client slot)."""
        raise NotImplementedError

    # --- listeners --------------------------------------------------------------------

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
        if self._exited:
            close()
        self._closers.add(close)
        return functools.partial(self._closers.discard, close)

    # --- one client -------------------------------------------------------------------

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
