"""Talk to a real QEMU monitor the way the differential tests need.

Two real QEMUs referee qmpsim: the system's QEMU 7.2 and Debian's 10.0.2 that
``make qemu-10.0`` unpacks into ``build/``.  Each is a :class:`Referee`, paired
with the profile qmpsim speaks for it; the ``referee`` fixture (tests/conftest.py)
runs a test once per QEMU.

Each session starts a fresh QEMU (``-M none`` unless the caller says otherwise)
with a QMP Unix socket, writes the given chunks one by one, and reads every reply
until a synchronisation reply (or end of file when the session made QEMU quit).
:func:`simulator_session` runs the same session through qmpsim's server
(``Simulator.handle_stream`` over in-memory streams).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Referee:
    """A real QEMU the differential tests compare qmpsim with, and qmpsim's profile for it."""

    version: str
    """``major.minor``, checked against the greeting of every QEMU started."""
    profile: str
    binary: str | None
    install: str
    """The command that installs it."""

    def __str__(self) -> str:
        return self.profile


def _installed(path: Path) -> str | None:
    return str(path) if os.access(path, os.X_OK) else None


QEMU_7_2 = Referee("7.2", "qemu-7.2", shutil.which("qemu-system-x86_64"), "make qemu")
QEMU_10_0 = Referee(
    "10.0",
    "qemu-10.0",
    _installed(REPO / "build" / "qemu-10.0.2" / "qemu-system-x86_64"),
    "make qemu-10.0",
)
REFEREES = (QEMU_7_2, QEMU_10_0)
QEMU = QEMU_7_2.binary

SYNC_ID = "qmpsim-sync"
# 0xFF can never appear in UTF-8: QEMU's lexer treats it as an error that resets
# both lexer and streamer, whatever state the case left them in.  The sync
# command that follows is then parsed from a clean state.
SYNC = b'\xff{"execute": "query-status", "id": "' + SYNC_ID.encode() + b'"}'
SAFETY_TIMEOUT = 10.0
# Start-up gets longer: on a 2-core machine running other suites beside this one, a
# QEMU has been seen to need more than 10 s before its main loop answered.
STARTUP_TIMEOUT = 60.0


def require_qemu(referee: Referee = QEMU_7_2) -> str:
    """The referee's QEMU binary; skip locally when missing, fail under CI=true."""
    if referee.binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"QEMU {referee.version} is missing under CI=true; `make test` installs it")
        pytest.skip(f"QEMU {referee.version} not installed ({referee.install} installs it)")
    return referee.binary


class QemuExited(Exception):
    """QEMU exited before its monitor came up; ``stderr`` says why."""

    def __init__(self, stderr: str) -> None:
        super().__init__(f"qemu exited early: {stderr}")
        self.stderr = stderr


@contextmanager
def qemu_process(*extra: str, referee: Referee = QEMU_7_2) -> Iterator[str]:
    """A running QEMU with a QMP socket; yields the socket path.

    Raises :class:`QemuExited` when QEMU refuses its command line.
    """
    with _monitored([require_qemu(referee)], extra, referee) as path:
        yield path


@contextmanager
def dropin_process(*extra: str, referee: Referee) -> Iterator[str]:
    """qmpsim's drop-in (``qmpsim-system-x86_64``) with the command line :func:`qemu_process`
    gives QEMU, speaking the referee's profile; yields its QMP socket path."""
    with tempfile.TemporaryDirectory(prefix="qmpsim-dropin-") as settings:
        Path(settings, "default.toml").write_text(f'profile = "{referee.profile}"\n')
        env = {**os.environ, "QMPSIM_CONFIG_DIR": settings, "QMPSIM_RUN_DIR": settings}
        with _monitored([sys.executable, "-m", "qmpsim.qemu"], extra, referee, env) as path:
            yield path


@contextmanager
def _monitored(
    command: list[str],
    extra: Sequence[str],
    referee: Referee,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    for attempt in range(_START_ATTEMPTS):
        with tempfile.TemporaryDirectory(prefix="qmpsim-qemu-") as tmp:
            path = os.path.join(tmp, "qmp.sock")
            ready = os.path.join(tmp, "ready.sock")
            proc = subprocess.Popen(
                [
                    *command,
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
                env=env,
            )
            try:
                deadline = time.monotonic() + STARTUP_TIMEOUT
                while not os.path.exists(ready):
                    if proc.poll() is not None:
                        raise QemuExited(proc.stderr.read().decode() if proc.stderr else "")
                    if time.monotonic() > deadline:
                        pytest.fail(f"{command[-1]} never created its QMP socket")
                    time.sleep(0.002)  # polling an external process's socket file, not syncing
                try:
                    _wait_until_initialised(ready, referee, proc)
                except _Stalled as exc:
                    if attempt + 1 == _START_ATTEMPTS:
                        pytest.fail(f"{command[-1]} never answered its readiness query: {exc}")
                    continue  # a fresh process; this one never got its main loop going
                yield path
                return
            finally:
                proc.kill()
                proc.wait()
                if proc.stderr:
                    proc.stderr.close()


class _Stalled(Exception):
    """The readiness query got no answer while the process runs on."""


# On a 2-core machine under a load of 10, a QEMU 7.2 has twice greeted on its
# readiness monitor and then not answered query-status within 60 s.
_START_ATTEMPTS = 3


@contextmanager
def qemu_on_free_port(
    args: Callable[[int], Sequence[str]], *, referee: Referee = QEMU_7_2
) -> Iterator[tuple[str, int]]:
    """A running QEMU whose command line ``args(port)`` makes it listen on a TCP port.

    For listeners QEMU cannot choose a port for itself (SPICE): the port is one
    the kernel just had free; when another process took it in the meantime, QEMU
    says it cannot bind, and a new port is tried.  Yields the QMP socket path and
    the port.
    """
    for _ in range(_PORT_ATTEMPTS):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        with ExitStack() as stack:
            try:
                path = stack.enter_context(qemu_process(*args(port), referee=referee))
            except QemuExited as exc:
                if "Address already in use" in exc.stderr or f":{port} failed" in exc.stderr:
                    continue  # taken between the probe and QEMU's bind
                raise
            yield path, port
            return
    pytest.fail(f"every one of {_PORT_ATTEMPTS} free ports was taken before QEMU could bind it")


_PORT_ATTEMPTS = 20


def _wait_until_initialised(ready: str, referee: Referee, proc: subprocess.Popen[bytes]) -> None:
    """Return once QEMU's main loop runs, by a round trip on a second monitor.

    A client that connects while QEMU is still starting can see start-up events
    (RESUME when the VM starts) before its greeting.  Non-OOB commands run in the
    main loop, so once a ``query-status`` on this second monitor is answered,
    start-up is over and the tested monitor behaves as it does for any client.
    Its greeting must name the referee's version.
    """
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(STARTUP_TIMEOUT)
            connect_unix(sock, ready)
            sock.sendall(
                b'{"execute": "qmp_capabilities"}{"execute": "query-status", "id": "ready"}'
            )
            while b'"id": "ready"' not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError
                data += chunk
    except (ConnectionError, FileNotFoundError, TimeoutError):
        # QEMU opens its monitors before it sets up the rest of its command line,
        # and exits when that fails (a port it cannot bind).
        try:
            proc.wait(timeout=SAFETY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise _Stalled(repr(data)) from None
        raise QemuExited(proc.stderr.read().decode() if proc.stderr else "") from None
    major, minor = referee.version.split(".")
    # The greeting is the first line that is not a start-up event (see above).
    greeting = next((line for line in data.split(b"\r\n") if line.startswith(b'{"QMP"')), b"")
    if f'"minor": {minor}, "major": {major}}}'.encode() not in greeting:
        pytest.fail(f"{referee.binary} is not QEMU {referee.version}: {data!r}")


def ask_each(path: str, requests: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """Negotiate, then send each request and read its reply: the greeting and the replies.

    One request at a time, each after the previous reply; events are left out.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(SAFETY_TIMEOUT)
        connect_unix(sock, path)
        with sock.makefile("rb") as reader:
            greeting = reader.readline()
            replies = []
            for request in [b'{"execute": "qmp_capabilities"}', *requests]:
                sock.sendall(request)
                while "event" in json.loads(line := reader.readline()):
                    pass
                replies.append(line)
    return greeting, replies[1:]


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


def qemu_session(
    chunks: Sequence[bytes], *, sync: bool = True, referee: Referee = QEMU_7_2
) -> bytes:
    """One session against a fresh real QEMU."""
    with qemu_process(referee=referee) as path:
        return unix_session(path, chunks, sync=sync)


def assert_same_bytes(simulated: bytes, real: bytes) -> None:
    """Fail with where qmpsim's bytes leave QEMU's; pytest's own diff of long byte
    strings (a 200 KB schema) can take minutes."""
    if simulated == real:
        return
    at = next(
        (i for i, (a, b) in enumerate(zip(simulated, real, strict=False)) if a != b),
        min(len(simulated), len(real)),
    )
    start = max(0, at - 80)
    pytest.fail(
        f"qmpsim differs from QEMU at byte {at} (lengths {len(simulated)} and {len(real)}):\n"
        f"  qemu:   {real[start : at + 120]!r}\n  qmpsim: {simulated[start : at + 120]!r}",
        pytrace=False,
    )


def assert_same_message(simulated: object, real: object) -> None:
    """Parsed messages equal, member order included; reported like :func:`assert_same_bytes`."""
    assert_same_bytes(json.dumps(simulated).encode(), json.dumps(real).encode())


@cache
def profile_schema(profile: str) -> list[dict[str, Any]]:
    """qmpsim's answer to ``query-qmp-schema`` with this profile: the introspected schema."""
    session = simulator_session(
        [(b'{"execute": "qmp_capabilities"}{"execute": "query-qmp-schema"}', 3)],
        sync=False,
        profile=profile,
    )
    schema: list[dict[str, Any]] = json.loads(session.split(b"\r\n")[2])["return"]
    return schema


def ordered(value: object) -> object:
    """A comparable form of a parsed message that keeps member order (dict equality does not)."""
    if isinstance(value, dict):
        return [(key, ordered(member)) for key, member in value.items()]
    if isinstance(value, list):
        return [ordered(item) for item in value]
    return value


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


def qemu_session_paced(
    steps: Sequence[tuple[bytes, int]], *, sync: bool = True, referee: Referee = QEMU_7_2
) -> bytes:
    """One paced session (see :func:`paced_unix_session`) against a fresh real QEMU."""
    with qemu_process(referee=referee) as path:
        return paced_unix_session(path, steps, sync=sync)


def simulator_session(
    steps: Sequence[tuple[bytes, int]], *, sync: bool = True, profile: str
) -> bytes:
    """The session of :func:`qemu_session_paced`, through qmpsim's server.

    ``Simulator.handle_stream`` serves one end of an in-memory stream pair.  Each
    chunk is a separate write that the server handles before the next one comes;
    after it the session waits for a total of N reply lines, as the QEMU side does.
    Without ``sync`` the client half-closes after the last chunk and reads to the
    end, as it does after a command that closes the connection.
    """
    return trio.run(_simulator_session, steps, sync, profile)


async def _simulator_session(steps: Sequence[tuple[bytes, int]], sync: bool, profile: str) -> bytes:
    from qmpsim.runtime.server import Simulator

    out = bytearray()
    async with Simulator(profile=profile) as sim, trio.open_nursery() as nursery:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(sim.handle_stream, server)
        with trio.fail_after(SAFETY_TIMEOUT):
            open_ = True
            for chunk, lines in steps:
                open_ = await _send(client, chunk)
                await trio.testing.wait_all_tasks_blocked()
                while open_ and out.count(b"\r\n") < lines:
                    data = await client.receive_some()
                    open_ = bool(data)
                    out += data
                if not open_:
                    break
            if sync and open_:
                await _send(client, SYNC)
            elif open_:
                await client.send_eof()
            while not (sync and _synced(out)):
                data = await client.receive_some()
                if not data:
                    break
                out += data
        await client.aclose()
        await sim.wait_no_clients()
        nursery.cancel_scope.cancel()
    assert sim.errors == []
    return bytes(out)


def _synced(data: bytes | bytearray) -> bool:
    """Whether the last complete line is the sync reply."""
    last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
    return data.endswith(b"\r\n") and SYNC_ID.encode() in last


async def _send(client: trio.abc.Stream, data: bytes) -> bool:
    """Write; False when the server has closed the connection."""
    try:
        await client.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def qmpsim_session(
    chunks: Sequence[bytes], *, sync: bool = True, greeting: dict[str, object] | None = None
) -> bytes:
    """The sans-I/O reference: the same session through qmpsim's protocol and machine alone.

    Each chunk is fed to a ``ServerConnection``; every request it yields runs on a
    ``Machine``, whose events are written before its reply.  No server loop is
    involved, so tests of the server (robustness, load) use this as their oracle;
    the differential tests run the server itself (:func:`simulator_session`).
    """
    from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile
    from qmpsim.qmp.protocol import Request, ServerConnection
    from qmpsim.vm.machine import CommandError, Machine

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
