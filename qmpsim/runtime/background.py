"""A :class:`~qmpsim.runtime.server.Simulator` served in a thread of its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, TypeVar

import trio

from qmpsim.runtime.server import Simulator

__all__ = ["BackgroundSimulator"]

T = TypeVar("T")


class BackgroundSimulator:
    """A :class:`Simulator` served by trio in a daemon thread, for synchronous or asyncio code.

    ``with BackgroundSimulator(unix=path) as bg:`` returns once the socket listens;
    :attr:`address` is where (a path, or ``(host, port)`` for ``tcp=``).  Reach the
    simulator only through :meth:`call` and :meth:`run`, which execute in its thread.
    If the simulator's loop fails, :meth:`call`, :meth:`run` and leaving the
    ``with`` block raise its exception.
    """

    def __init__(
        self,
        sim: Simulator | None = None,
        *,
        unix: str | os.PathLike[str] | None = None,
        tcp: tuple[str, int] | None = None,
        allow_remote: bool = False,
        start_timeout: float = 10.0,
    ) -> None:
        if (unix is None) == (tcp is None):
            raise ValueError("BackgroundSimulator: give exactly one of unix= or tcp=")
        self.sim = sim if sim is not None else Simulator()
        self.address: str | tuple[str, int] | None = None
        self._unix = unix
        self._tcp = tcp
        self._allow_remote = allow_remote
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop = trio.CancelScope()
        self._thread = threading.Thread(target=self._main, name="qmpsim", daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with self.sim:
            self._token = trio.lowlevel.current_trio_token()
            if self._unix is not None:
                self.address = await self.sim.listen_unix(self._unix)
            else:
                assert self._tcp is not None
                host, port = self._tcp
                self.address = await self.sim.listen_tcp(
                    host, port, allow_remote=self._allow_remote
                )
            self._ready.set()
            with self._stop:
                await trio.sleep_forever()

    def __enter__(self) -> BackgroundSimulator:
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError("the simulator thread did not start in time")
        if self._failure is not None:
            self._thread.join()
            raise self._failure
        return self

    def __exit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the simulator; a failure of its loop is raised here, unless the
        ``with`` body is already raising it."""
        if self._thread.is_alive() and self._token is not None:
            with suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.cancel, trio_token=self._token)
        self._thread.join()
        if self._failure is not None and self._failure is not exc:
            raise self._failure

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run in the simulator's thread: ``bg.call(bg.sim.emit, "STOP")``.

        Raises the failure of the simulator's loop if it has stopped because of one.
        """
        assert self._token is not None, "enter the BackgroundSimulator first"
        self._raise_failure()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):
            failure = self._ended_with()
            if failure is None:
                raise
        raise failure  # outside the handler: trio's exception is not its context

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` in the simulator's thread: ``bg.run(bg.sim.wait_negotiated)``.

        Raises the failure of the simulator's loop if it stops because of one,
        also while ``fn`` is waiting.
        """
        assert self._token is not None, "enter the BackgroundSimulator first"
        self._raise_failure()
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):
            failure = self._ended_with()
            if failure is None:
                raise
        raise failure  # outside the handler: trio's exception is not its context

    def _ended_with(self) -> BaseException | None:
        """The failure the loop, which is ending, ended with."""
        self._thread.join()
        return self._failure

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
