"""Talk to a real QEMU monitor the way the differential tests need.

Each session starts a fresh ``qemu-system-x86_64 -M none`` with a QMP Unix
socket, writes the given chunks one by one, and reads every reply until a
synchronisation reply (or end of file when the session made QEMU quit).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

QEMU = shutil.which("qemu-system-x86_64")
SYNC_ID = "qmpsim-sync"
# 0xFF can never appear in UTF-8: QEMU's lexer treats it as an error that resets
# both lexer and streamer, whatever state the case left them in.  The sync
# command that follows is then parsed from a clean state.
SYNC = b'\xff{"execute": "query-status", "id": "' + SYNC_ID.encode() + b'"}'
SAFETY_TIMEOUT = 10.0


def require_qemu() -> str:
    """The QEMU binary; skip locally when missing, fail under CI=true."""
    if QEMU is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-system-x86_64 is missing under CI=true; `make test` installs it")
        pytest.skip("qemu-system-x86_64 not installed (make qemu installs it)")
    return QEMU


@contextmanager
def qemu_process(*extra: str) -> Iterator[str]:
    """A running QEMU with a QMP socket; yields the socket path."""
    binary = require_qemu()
    with tempfile.TemporaryDirectory(prefix="qmpsim-qemu-") as tmp:
        path = os.path.join(tmp, "qmp.sock")
        ready = os.path.join(tmp, "ready.sock")
        proc = subprocess.Popen(
            [
                binary,
                "-M",
                "none",
                "-nodefaults",
                "-display",
                "none",
                "-qmp",
                f"unix:{path},server=on,wait=off",
                "-qmp",
                f"unix:{ready},server=on,wait=off",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + SAFETY_TIMEOUT
            while not os.path.exists(ready):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"qemu exited early: {err}")
                if time.monotonic() > deadline:
                    pytest.fail("qemu never created its QMP socket")
                time.sleep(0.002)  # polling for an external process's socket file, not syncing
            _wait_until_initialised(ready)
            yield path
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


def _wait_until_initialised(ready: str) -> None:
    """Return once QEMU's main loop runs, by a round trip on a second monitor.

    A client that connects while QEMU is still starting can see start-up events
    (RESUME when the VM starts) before its greeting.  Non-OOB commands run in the
    main loop, so once a ``query-status`` on this second monitor is answered,
    start-up is over and the tested monitor behaves as it does for any client.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SAFETY_TIMEOUT)
        connect_unix(sock, ready)
        sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-status", "id": "ready"}')
        data = b""
        while b'"id": "ready"' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                pytest.fail(f"qemu closed its readiness monitor early: {data!r}")
            data += chunk


def read_until_sync(sock: socket.socket, *, sync: bool) -> bytes:
    """Read until the sync reply's line, or end of file."""
    sock.settimeout(SAFETY_TIMEOUT)
    data = b""
    marker = SYNC_ID.encode()
    while True:
        if sync and marker in data and data.endswith(b"\r\n"):
            last_line = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
            if marker in last_line:
                return data
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            pytest.fail(f"no sync reply within {SAFETY_TIMEOUT}s; got so far: {data!r}")
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def unix_session(path: str, chunks: Sequence[bytes], *, sync: bool = True) -> bytes:
    """Connect, write the chunks (each a separate write), read all replies.

    The greeting is part of the output.  Each chunk is written only after the
    previous one was fully sent; with ``sync`` the sync sequence follows the
    last chunk and its reply ends the read.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        connect_unix(sock, path)
        for chunk in chunks:
            sock.sendall(chunk)
        if sync:
            try:
                sock.sendall(SYNC)
            except (BrokenPipeError, ConnectionResetError):
                sync = False
        return read_until_sync(sock, sync=sync)


def qemu_session(chunks: Sequence[bytes], *, sync: bool = True) -> bytes:
    """One session against a fresh real QEMU."""
    with qemu_process() as path:
        return unix_session(path, chunks, sync=sync)


_VERSION = re.compile(rb'"qemu": \{"micro": \d+, "minor": \d+, "major": \d+\}, "package": "[^"]*"')
_TIMESTAMP = re.compile(rb'"timestamp": \{"seconds": \d+, "microseconds": \d+\}')


def mask(data: bytes) -> bytes:
    """Hide what legitimately differs: version numbers, package string, timestamps."""
    data = _VERSION.sub(b'"qemu": {"micro": M, "minor": N, "major": J}, "package": "P"', data)
    return _TIMESTAMP.sub(b'"timestamp": {"seconds": S, "microseconds": U}', data)


def _count_lines(data: bytes) -> int:
    return data.count(b"\r\n")


def connect_unix(sock: socket.socket, path: str) -> None:
    """Connect, retrying while QEMU has bound its socket file but is not listening yet."""
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while True:
        try:
            sock.connect(path)
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)  # polling an external process's listener, not syncing


def paced_unix_session(
    path: str, steps: Sequence[tuple[bytes, int]], *, sync: bool = True
) -> bytes:
    """Like :func:`unix_session`, but after each chunk wait for a total of N reply lines.

    Out-of-band requests are answered by QEMU's I/O thread as soon as they are
    parsed, ahead of queued in-band ones; waiting for the earlier replies first
    makes such sessions deterministic.  ``N`` counts every line including the greeting;
    with N = 0 everywhere this is :func:`unix_session`, with a connect that retries.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SAFETY_TIMEOUT)
        connect_unix(sock, path)
        data = b""
        for chunk, lines in steps:
            sock.sendall(chunk)
            while _count_lines(data) < lines:
                try:
                    more = sock.recv(1 << 16)
                except TimeoutError:
                    pytest.fail(f"expected {lines} lines within {SAFETY_TIMEOUT}s; got {data!r}")
                if not more:
                    return data
                data += more
        if sync:
            sock.sendall(SYNC)
        return data + read_until_sync(sock, sync=sync)


def qemu_session_paced(steps: Sequence[tuple[bytes, int]], *, sync: bool = True) -> bytes:
    """One paced session (see :func:`paced_unix_session`) against a fresh real QEMU."""
    with qemu_process() as path:
        return paced_unix_session(path, steps, sync=sync)


def qmpsim_session(
    chunks: Sequence[bytes], *, sync: bool = True, greeting: dict[str, object] | None = None
) -> bytes:
    """The same session as :func:`qemu_session`, run through qmpsim's sans-I/O protocol.

    Each chunk is fed to a ``ServerConnection``; every request it yields runs on a
    ``Machine``, whose events are written before its reply.  The session stops
    when a command closes the connection; otherwise the sync sequence follows.
    """
    from qmpsim.catalog import DEFAULT_PROFILE, get_profile
    from qmpsim.machine import CommandError, Machine
    from qmpsim.protocol import Request, ServerConnection

    profile = get_profile(DEFAULT_PROFILE)
    conn = ServerConnection(profile, greeting=greeting)
    machine = Machine(profile=profile)
    out = [conn.greeting()]
    for chunk in [*chunks, SYNC] if sync else chunks:
        conn.receive_data(chunk)
        while (item := conn.next_request()) is not None:
            if isinstance(item, bytes):
                out.append(item)
                continue
            assert isinstance(item, Request)
            outcome = machine.execute(item.command, item.arguments)
            out.extend(conn.send_event(event.to_json()) for event in outcome.events)
            if isinstance(outcome.reply, CommandError):
                out.append(conn.send_error(item, outcome.reply.error_class, outcome.reply.desc))
            else:
                out.append(conn.send_return(item, outcome.reply))
            out.extend(conn.send_event(event.to_json()) for event in machine.poll())
            if outcome.close:
                conn.close()
                return b"".join(out)
    return b"".join(out)
