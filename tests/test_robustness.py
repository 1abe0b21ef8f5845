"""Byte-level fuzzing of the whole server: random bytes, random splits, mutated sessions.

Whatever a client writes, however it is split, the simulator answers exactly what
the sans-I/O reference answers (that reference is checked against QEMU 7.2 in
tests/test_diff_server.py), never raises, never logs an error, never hangs, and
the connection stays usable: the sync sequence (0xFF, which resets QEMU's lexer,
then a command) always gets its reply.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qemu_harness import SYNC, SYNC_ID, mask, qemu_session, qmpsim_session, require_qemu

from qmpsim.runtime.server import Simulator
from qmpsim.vm.machine import Machine, Outcome

# Commands that keep the VM alive: quit and power-offs end the session by design.
_FRAGMENTS = [
    b'{"execute": "qmp_capabilities"}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
    b'{"execute": "query-status", "id": 1}',
    b'{"execute": "stop"}',
    b'{"execute": "cont", "id": "c"}',
    b'{"exec-oob": "query-status", "id": [1]}',
    b'{"execute": "query-name"}',
    b'{"execute": "no-such-command", "id": {"a": null}}',
    b'{"execute": "stop", "arguments": {"x": 1}}',
    b"{'execute': 'query-version'}",
    b'{"id": 3}',
    b"[1, {",
    b"}}",
    b'"\\u00',
    b"\xff",
    b"\xc3",
    b"\r\n",
    b"1e999",
    b"nul",
]
_VALID_SESSION = (
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
    b'{"execute": "query-status", "id": "s1"}{"execute": "stop", "id": 2}'
    b'{"exec-oob": "query-name", "id": "o"}{"execute": "cont"}{"execute": "query-kvm"}'
)

_chunks = st.lists(
    st.one_of(st.sampled_from(_FRAGMENTS), st.binary(min_size=1, max_size=16)), max_size=10
)


@st.composite
def _mutated_session(draw: st.DrawFn) -> bytes:
    data = bytearray(_VALID_SESSION)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
        if not data:
            data = bytearray(b"{")
    return bytes(data)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _no_error_logged() -> Iterator[None]:
    """Fail if qmpsim logs an error meanwhile: the server logs the exceptions it
    survives (a crash in a command, in a client's tasks) instead of raising them."""
    handler = _ErrorRecords()
    logger = logging.getLogger("qmpsim")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert handler.lines == [], "qmpsim logged an error:\n" + "\n".join(handler.lines)


async def _serve(chunks: list[bytes], machine: Machine | None = None) -> bytes:
    """Write ``chunks`` then the sync sequence to a simulator; everything it answered."""
    out = bytearray()
    with _no_error_logged():
        async with Simulator(machine, epoch=1_700_000_000.0) as sim:
            await _session(sim, chunks, out)
            assert sim.errors == []
    return bytes(out)


async def _session(sim: Simulator, chunks: list[bytes], out: bytearray) -> None:
    async with trio.open_nursery() as nursery:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(sim.handle_stream, server)
        with trio.fail_after(600):  # virtual time: only a hang gets here
            for chunk in [*chunks, SYNC]:
                await client.send_all(chunk)
                await trio.testing.wait_all_tasks_blocked()
            marker = SYNC_ID.encode()
            while not (marker in out and out.endswith(b"\r\n")):
                data = await client.receive_some()
                assert data, f"the server closed the connection; got {bytes(out)!r}"
                out += data
        await client.aclose()
        await sim.wait_no_clients()
        nursery.cancel_scope.cancel()


def _check(chunks: list[bytes]) -> None:
    got = trio.run(_serve, chunks, clock=trio.testing.MockClock(autojump_threshold=0))
    want = qmpsim_session(chunks)
    assert mask(got) == mask(want)
    last = got.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
    assert b'"id": "' + SYNC_ID.encode() + b'"' in last  # the connection is still usable


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@_settings(300)
@given(pieces=_chunks, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_random_bytes_any_split_answer_like_the_reference(
    pieces: list[bytes], cuts: list[int]
) -> None:
    _check(_split(b"".join(pieces), cuts))


@_settings(300)
@given(session=_mutated_session(), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_mutated_sessions_answer_like_the_reference(session: bytes, cuts: list[int]) -> None:
    _check(_split(session, cuts))


@_settings(30)
@given(size=st.integers(1, 7))
def test_a_valid_session_byte_by_byte_is_the_same_session(size: int) -> None:
    data = _VALID_SESSION
    _check([data[i : i + size] for i in range(0, len(data), size)])


def test_nesting_beyond_qemus_limit_gets_qemus_error_and_the_session_goes_on() -> None:
    deep = b'{"execute": "qmp_capabilities"}' + b"[" * 1100 + b"]" * 1100
    got = trio.run(_serve, [deep], clock=trio.testing.MockClock(autojump_threshold=0))
    assert b"JSON nesting depth limit exceeded" in got  # (diff-tested against QEMU below)
    assert mask(got) == mask(qmpsim_session([deep]))


@pytest.mark.qemu
@pytest.mark.parametrize("depth", [1024, 1025])
def test_nesting_limit_is_qemus(depth: int) -> None:
    require_qemu()
    deep = b'{"execute": "qmp_capabilities"}' + b"[" * depth + b"]" * depth
    assert mask(qemu_session([deep])) == mask(qmpsim_session([deep]))


class _Faulty(Machine):
    """A machine with a bug in query-kvm; the server survives it and logs it."""

    def execute(self, command: str, arguments: Mapping[str, Any]) -> Outcome:
        if command == "query-kvm":
            raise ZeroDivisionError("a bug in the machine")
        return super().execute(command, arguments)


def test_an_error_the_server_survives_fails_the_session() -> None:
    with pytest.raises(AssertionError, match=r"(?s)logged an error.*ZeroDivisionError"):
        trio.run(
            _serve,
            [_VALID_SESSION],
            _Faulty(),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
