"""What a QEMU process does around its VM: daemonize, pidfile, signals, vCPU threads,
and error messages in QEMU's format.

Nothing here imports trio: these steps run before the event loop starts (a
process must not fork once trio's threads exist).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from ..errors import QmpSimError

__all__ = [
    "HOST_SIGNALS",
    "Daemon",
    "Messages",
    "PidFile",
    "StartError",
    "VcpuThreads",
    "block_host_signals",
    "daemonize",
    "sender_name",
]

HOST_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
"""The signals QEMU answers with SHUTDOWN (host-signal) and a clean exit."""


class StartError(QmpSimError):
    """The VM cannot start: QEMU's message for why (printed by :class:`Messages`)."""


@dataclass
class Messages:
    """QEMU's ``error_report()``: ``PROG: message`` on stderr, with a UTC timestamp in
    front under ``-msg timestamp=on``."""

    prog: str
    timestamp: bool = False
    out: TextIO | None = None

    def error(self, message: str) -> None:
        """Print one message (its continuation lines as they are)."""
        stamp = ""
        if self.timestamp:
            now = datetime.datetime.now(datetime.UTC)
            stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ ")
        out = self.out or sys.stderr
        # stderr may be gone (a daemon's, a closed pipe): QEMU carries on too
        with contextlib.suppress(OSError, ValueError):
            print(f"{stamp}{self.prog}: {message}", file=out, flush=True)


def sender_name(pid: int) -> str:
    """What QEMU prints for the process that sent a signal: its command line's first word."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "<unknown process>"
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def block_host_signals() -> None:
    """Hold SIGINT, SIGHUP and SIGTERM for :func:`signal.sigwaitinfo`, in this thread and
    in every thread started after it (call it before any other thread exists)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HOST_SIGNALS)


class Daemon:
    """The daemonized process's side of QEMU's ``-daemonize`` handshake."""

    def __init__(self, pipe: int) -> None:
        self._pipe = pipe

    def ready(self) -> None:
        """Initialisation succeeded: detach from the terminal and let the parent exit 0."""
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.write(self._pipe, b"\0")
        os.close(self._pipe)


def daemonize() -> Daemon:
    """Fork as QEMU's ``os_daemonize()`` does; returns in the daemon only.

    The parent waits on a pipe and exits 0 when the daemon reports success
    (:meth:`Daemon.ready`), 1 when the daemon exits first; an intermediate child
    forks again after ``setsid()`` so the daemon is no session leader.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        while True:
            try:
                status = os.read(read_end, 1)
                break
            except InterruptedError:
                continue
        os._exit(0 if status == b"\0" else 1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o027)
    for sig in (signal.SIGTSTP, signal.SIGTTOU, signal.SIGTTIN):
        signal.signal(sig, signal.SIG_IGN)
    return Daemon(write_end)


class PidFile:
    """QEMU's ``-pidfile``: created, locked and written at start, removed at exit."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartError(
                f"cannot create PID file: Could not create '{path}': {exc.strerror}"
            ) from None
        try:
            import fcntl

            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            reason = (
                "Resource temporarily unavailable"
                if exc.errno
                in (
                    errno.EAGAIN,
                    errno.EACCES,
                )
                else exc.strerror
            )
            raise StartError(f"cannot create PID file: Cannot lock pid file: {reason}") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def remove(self) -> None:
        """Unlink the file (if it is still ours) and release the lock."""
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)


class VcpuThreads:
    """One host thread per vCPU, as QEMU runs them: idle, and reported by
    ``query-cpus-fast`` (``thread-id``) so management software finds them in /proc."""

    def __init__(self, count: int) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        ids: list[int] = []
        started = threading.Condition()

        def vcpu() -> None:
            with started:
                ids.append(threading.get_native_id())
                started.notify()
            self._stop.wait()

        for index in range(count):
            thread = threading.Thread(target=vcpu, name=f"CPU {index}/TCG", daemon=True)
            with started:
                thread.start()
                started.wait_for(lambda n=index: len(ids) > n)  # type: ignore[misc]
            self._threads.append(thread)
        self.ids: Sequence[int] = tuple(ids)

    def stop(self) -> None:
        """Let the threads end."""
        self._stop.set()
