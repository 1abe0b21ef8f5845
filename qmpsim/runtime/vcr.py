"""Cassettes for test suites: replay a recorded QEMU session, or record one first.

vcrpy's record modes, for QMP.  An *episode* is one client connection: the k-th
connection replays the k-th recorded session.

- ``none``: replay only; the cassette must exist, and a request it does not hold
  is answered with an error naming what it expected next;
- ``once``: record every connection against a real QEMU when the cassette does
  not exist yet, replay it (as ``none``) when it does;
- ``new_episodes``: replay the recorded sessions, leniently (a request a session
  does not hold is answered by the simulator), and record connections beyond
  them against a real QEMU, appending them to the cassette;
- ``all``: record everything again.

Recording needs a real QEMU: a command line (``qemu``), started for the first
recorded connection with its monitor on a socket qmpsim binds first, or the
monitor of a QEMU already running (``upstream``).  :class:`CassetteDeck` serves
one socket and hands each connection to the replay or to the recording proxy.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from qmpsim.qmp.cassette import Cassette, CassetteError, load_cassette
from qmpsim.qmp.transcript import Transcript
from qmpsim.qmp.wire import JsonStreamer
from qmpsim.runtime.listen import accept_loop, bind_tcp, bind_unix
from qmpsim.runtime.record import Recorder
from qmpsim.runtime.replay import Replayer, replay_simulator
from qmpsim.runtime.server import Simulator

__all__ = ["RECORD_MODES", "CassetteDeck", "check_mode"]

log = logging.getLogger("qmpsim.vcr")

RECORD_MODES = ("none", "once", "new_episodes", "all")
"""vcrpy's record modes, in the order of how much they record."""

QEMU_READY_TIMEOUT = 10.0
"""Seconds a started QEMU has to answer on its monitor."""


def check_mode(path: Path, mode: str, *, can_record: bool) -> None:
    """:class:`~qmpsim.qmp.cassette.CassetteError` unless ``mode`` can be honoured for ``path``."""
    if mode not in RECORD_MODES:
        raise CassetteError(f"unknown record mode {mode!r} (modes: {', '.join(RECORD_MODES)})")
    exists = path.exists()
    how = "to record it, give a real QEMU: --qmpsim-qemu=COMMAND or --qmpsim-upstream=SOCKET"
    if mode == "none" and not exists:
        raise CassetteError(f"no cassette at {path} (record mode none); {how}")
    if (mode == "all" or (mode == "once" and not exists)) and not can_record:
        what = str(path) if exists else f"no cassette at {path}"
        raise CassetteError(f"{what} (record mode {mode}) and no QEMU to record with; {how}")


class CassetteDeck:
    """One socket: connections the cassette holds are replayed, later ones recorded.

    ``qemu``: the command line of a QEMU to record with (its monitor is added);
    ``upstream``: the monitor socket of a QEMU already running.  Raises
    :class:`~qmpsim.qmp.cassette.CassetteError` when the mode cannot be honoured (no
    cassette to replay, no QEMU to record with).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "none",
        *,
        qemu: Sequence[str] | None = None,
        upstream: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        **simulator: Any,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.qemu = tuple(qemu) if qemu else None
        self.upstream = upstream
        self.workdir = Path(workdir) if workdir is not None else self.path.parent
        can_record = self.qemu is not None or upstream is not None
        check_mode(self.path, mode, can_record=can_record)
        exists = self.path.exists()
        replaying = exists and mode != "all"
        cassette = load_cassette(self.path) if replaying else Cassette((), str(self.path))
        self.original: Transcript | None = Transcript.read(self.path) if replaying else None
        self.recording = can_record and mode != "none" and (mode != "once" or not exists)
        self.replayed = len(cassette.sessions)
        self.sim: Simulator
        self.replayer: Replayer
        self.sim, self.replayer = replay_simulator(
            cassette,
            strict=mode != "new_episodes",
            **simulator,
        )
        used = {e.client for e in self.original} if self.original is not None else set()
        self.recorder: Recorder | None = None
        self._first_recorded = max(used, default=0) + 1
        self._connections = itertools.count(1)
        self._qemu_process: trio.Process | None = None
        self._qemu_socket: Path | None = None
        self._starting = trio.Lock()

    # --- serving -------------------------------------------------------------------------

    async def serve_unix(
        self,
        path: str | os.PathLike[str],
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve a Unix socket until cancelled (replayed and recorded connections alike)."""
        bound = bind_unix(os.fspath(path))
        try:
            task_status.started(bound.path)
            await accept_loop(bound.listener(), self._accepted, close=bound.close)
        finally:
            bound.close()
            await self.aclose()

    async def serve_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve loopback TCP until cancelled."""
        listeners, bound = await bind_tcp(host, port)
        task_status.started(bound)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(accept_loop, listener, self._accepted)

    def _accepted(self, stream: trio.SocketStream) -> Callable[[], Awaitable[None]]:
        number = next(self._connections)
        if self.recording and number > self.replayed:
            return functools.partial(self._record, stream)
        return functools.partial(self.sim.handle_stream, stream)

    async def _record(self, stream: trio.abc.Stream) -> None:
        recorder = await self._recorder()
        if recorder is None:
            await trio.aclose_forcefully(stream)
            return
        await recorder.handle_stream(stream)

    async def _recorder(self) -> Recorder | None:
        async with self._starting:
            if self.recorder is None:
                upstream = self.upstream
                if upstream is None:
                    try:
                        upstream = await self._start_qemu()
                    except CassetteError as exc:
                        log.error("%s", exc)
                        self.sim.errors.append(exc)
                        return None
                # One transcript for replayed and recorded connections: waits and
                # assertions on the simulator's transcript see both.
                self.recorder = Recorder(
                    upstream, transcript=self.sim.transcript, first_client=self._first_recorded
                )
            return self.recorder

    # --- a QEMU to record with --------------------------------------------------------------

    async def _start_qemu(self) -> str:
        """Start ``qemu`` with a monitor on a socket bound here first; its path once ready."""
        assert self.qemu is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f".qmpsim-qemu-{os.getpid()}-{id(self)}.sock"
        bound = bind_unix(str(path))
        fd = bound.sock.fileno()
        argv = [
            *self.qemu,
            "-chardev",
            f"socket,id=qmpsim,fd={fd},server=on,wait=off",
            "-mon",
            "chardev=qmpsim,mode=control",
        ]
        try:
            self._qemu_process = await trio.lowlevel.open_process(
                argv,
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            bound.close()
            raise CassetteError(f"cannot start QEMU ({argv[0]}): {exc.strerror or exc}") from None
        bound.sock.close()  # QEMU holds it now; the file stays until aclose()
        self._qemu_socket = path
        log.info("started %s (pid %d) to record", argv[0], self._qemu_process.pid)
        await self._wait_ready(str(path))
        return str(path)

    async def _wait_ready(self, path: str) -> None:
        """One round trip on the monitor: QEMU's start-up is over (its start-up events
        would otherwise reach the recorded client before its greeting)."""
        try:
            with trio.fail_after(QEMU_READY_TIMEOUT):
                stream = await trio.open_unix_socket(path)
                async with stream:
                    streamer = JsonStreamer()
                    seen = 0

                    async def read(count: int) -> None:
                        nonlocal seen
                        while seen < count:
                            data = await stream.receive_some(1 << 16)
                            if not data:
                                raise EOFError
                            seen += len(streamer.feed(data))

                    await read(1)
                    await stream.send_all(
                        b'{"execute": "qmp_capabilities"}{"execute": "query-status"}'
                    )
                    await read(3)
        except (OSError, EOFError, trio.TooSlowError, trio.BrokenResourceError):
            why = await self._why()
            raise CassetteError(f"QEMU did not answer on its monitor: {why}") from None

    async def _why(self) -> str:
        process = self._qemu_process
        if process is None or process.returncode is None:
            return f"no greeting within {QEMU_READY_TIMEOUT:g}s"
        stderr = b""
        if process.stderr is not None:
            with trio.move_on_after(1):
                stderr = bytes(await process.stderr.receive_some(4096))
        text = stderr.decode(errors="replace").strip().splitlines()
        return f"it exited with status {process.returncode}" + (f": {text[0]}" if text else "")

    async def aclose(self) -> None:
        """Stop the QEMU started for recording, and remove its socket."""
        process, self._qemu_process = self._qemu_process, None
        if process is not None:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                if process.stderr is not None:
                    await process.stderr.aclose()
        if self._qemu_socket is not None:
            self._qemu_socket.unlink(missing_ok=True)
            self._qemu_socket = None

    # --- the cassette ---------------------------------------------------------------------------

    @property
    def simulated(self) -> bool:
        """Whether a client can reach the simulator (no: every connection is recorded)."""
        return not self.recording or self.replayed > 0

    def save(self) -> Path | None:
        """Write the cassette when something was recorded: what was recorded (once,
        all), or the recorded sessions and the new ones (new_episodes)."""
        recorded = [e for e in self.sim.transcript if e.client >= self._first_recorded]
        if self.recorder is None or not recorded:
            return None
        entries = list(self.original.entries) if self.original is not None else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        Transcript(entries=[*entries, *recorded]).save(self.path)
        return self.path

    def problems(self, *, strict: bool) -> list[str]:
        """What the replay objected to; with ``strict``, also recorded requests never sent."""
        out = list(self.replayer.failures)
        if strict:
            out += [f"never sent: {line}" for line in self.replayer.unplayed()]
        return out
