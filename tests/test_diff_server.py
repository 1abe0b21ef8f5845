"""Whole sessions through qmpsim's socket server and through each real QEMU, compared.

Each case runs the same script of socket operations against both, and the bytes
each client received must match once versions and timestamps are masked.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from qemu_harness import (
    SAFETY_TIMEOUT,
    Referee,
    connect_unix,
    mask,
    paced_unix_session,
    qemu_process,
)

from qmpsim.runtime.background import BackgroundSimulator
from qmpsim.runtime.server import Simulator

pytestmark = pytest.mark.qemu

NEGOTIATE = b'{"execute": "qmp_capabilities"}'


@contextmanager
def qmpsim_process(profile: str) -> Iterator[str]:
    with (
        tempfile.TemporaryDirectory(prefix="qs-") as tmp,
        BackgroundSimulator(Simulator(profile=profile), unix=str(Path(tmp) / "qmp.sock")) as bg,
    ):
        yield str(bg.address)


def session(path: str, chunks: list[bytes], *, sync: bool = True) -> bytes:
    """The harness's plain session, with a connect that waits for QEMU to listen."""
    return paced_unix_session(path, [(chunk, 0) for chunk in chunks], sync=sync)


def both(script: Callable[[str], object], referee: Referee) -> tuple[object, object]:
    """``script(path)`` against a fresh real QEMU, then against a fresh qmpsim."""
    with qemu_process(referee=referee) as path:
        real = script(path)
    with qmpsim_process(referee.profile) as path:
        simulated = script(path)
    return real, simulated


def _masked(value: object) -> object:
    if isinstance(value, bytes):
        return mask(value)
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def assert_same(script: Callable[[str], object], referee: Referee) -> None:
    real, simulated = both(script, referee)
    assert _masked(simulated) == _masked(real)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([NEGOTIATE, b'{"execute": "query-status", "id": 1}'], id="status"),
        pytest.param(
            [NEGOTIATE, b'{"execute": "stop", "id": "s"}{"execute": "stop"}{"execute": "cont"}'],
            id="stop-cont-pipelined",
        ),
        pytest.param(
            [b'{"execute": "query-status"}', NEGOTIATE, NEGOTIATE, b"[]", b'{"execute": 1}'],
            id="negotiation-errors",
        ),
        pytest.param(
            [NEGOTIATE, b'{"execute": "system_reset", "id": 5}', b'{"execute": "nope"}'],
            id="reset-and-unknown",
        ),
        pytest.param(
            [
                b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
                b'{"exec-oob": "stop", "id": 2}',
                b'{"execute": "stop", "id": 3}',
            ],
            id="oob-negotiated",
        ),
    ],
)
def test_sessions_match(chunks: list[bytes], referee: Referee) -> None:
    assert_same(lambda path: session(path, chunks), referee)


def test_quit_sends_shutdown_reply_and_closes(referee: Referee) -> None:
    def script(path: str) -> bytes:
        return session(path, [NEGOTIATE, b'{"execute": "quit", "id": "q"}'], sync=False)

    real, simulated = both(script, referee)
    assert _masked(simulated) == _masked(real)
    assert bytes(real).endswith(b'{"return": {}, "id": "q"}\r\n')  # type: ignore[arg-type]


def _read_lines(sock: socket.socket, count: int) -> bytes:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def _nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(SAFETY_TIMEOUT)


def second_client_script(path: str) -> list[object]:
    """A second client connects and talks while the first is on; then the first leaves."""
    seen: list[object] = []
    with socket.socket(socket.AF_UNIX) as first, socket.socket(socket.AF_UNIX) as second:
        first.settimeout(SAFETY_TIMEOUT)
        second.settimeout(SAFETY_TIMEOUT)
        connect_unix(first, path)
        seen.append(_read_lines(first, 1))
        first.sendall(NEGOTIATE)
        seen.append(_read_lines(first, 1))
        second.connect(path)  # accepted by the kernel, not by the monitor
        second.sendall(NEGOTIATE + b'{"execute": "stop", "id": "from-second"}')
        # a round trip on the first client: the monitor has had every chance to act
        first.sendall(b'{"execute": "query-status", "id": "first"}')
        seen.append(_read_lines(first, 1))
        seen.append(_nothing_pending(second))
        first.close()
        seen.append(_read_lines(second, 4))  # greeting, negotiation, STOP, stop's reply
    return seen


def test_second_client_waits_for_the_first_to_leave(referee: Referee) -> None:
    real, simulated = both(second_client_script, referee)
    assert _masked(simulated) == _masked(real)
    assert real[3] is True  # type: ignore[index]


def reconnect_script(path: str) -> list[bytes]:
    """Disconnect in the middle of a command, then connect again: a fresh session."""
    seen: list[bytes] = []
    with socket.socket(socket.AF_UNIX) as first:
        first.settimeout(SAFETY_TIMEOUT)
        connect_unix(first, path)
        first.sendall(NEGOTIATE + b'{"execute": "stop", "id": 1}{"execute": "qu')
        seen.append(_read_lines(first, 4))
    seen.append(
        session(
            path,
            [
                b'{"execute": "query-status", "id": "not-yet"}',
                NEGOTIATE,
                b'{"execute": "query-status", "id": "after"}',
            ],
        )
    )
    return seen


def test_disconnect_mid_command_then_reconnect(referee: Referee) -> None:
    assert_same(reconnect_script, referee)
