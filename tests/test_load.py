"""Load over real Unix sockets, bounded in count: many clients, a stalled reader,
disconnects at every byte of a session, half-closes and reconnect storms.

Each test has a generous hang guard (``fail_after``); nothing asserts on speed.
"""

from __future__ import annotations

import json
import logging
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from qemu_harness import mask, qmpsim_session

from qmpsim.runtime.server import Simulator

pytestmark = pytest.mark.trio

HANG_GUARD = 120  # seconds; far beyond what any of these needs on a loaded 2-core machine
EPOCH = 1_700_000_000.0


@pytest.fixture
def sock(tmp_path: Path) -> str:
    return str(tmp_path / "qmp.sock")


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for 1,000 clients and their server ends in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if want < 2200:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for 1,000 clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def io_error(i: int) -> dict[str, Any]:
    return {"device": f"disk{i}", "operation": "read", "action": "report", "reason": "EIO"}


class LineReader:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def message(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some()
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg


async def test_a_thousand_clients_each_get_every_event_in_order(sock: str, many_fds: None) -> None:
    clients, events = 1000, 12
    got: list[list[str]] = []
    with trio.fail_after(HANG_GUARD):
        async with Simulator(epoch=EPOCH, multi_client=True) as sim:
            await sim.listen_unix(sock)

            connecting = trio.Semaphore(8)  # more would overflow the listen backlog (EAGAIN)

            async def client(ready: trio.Semaphore) -> None:
                async with connecting:  # until accepted: the greeting came
                    stream = await trio.open_unix_socket(sock)
                    reader = LineReader(stream)
                    assert await reader.message() is not None
                async with stream:
                    await stream.send_all(b'{"execute": "qmp_capabilities"}')
                    assert await reader.message() == {"return": {}}
                    ready.release()
                    seen = []
                    while len(seen) < events:
                        msg = await reader.message()
                        assert msg is not None, "disconnected before every event arrived"
                        seen.append(msg["data"]["device"])
                    got.append(seen)

            async with trio.open_nursery() as nursery:
                ready = trio.Semaphore(0)
                for _ in range(clients):
                    nursery.start_soon(client, ready)
                for _ in range(clients):
                    await ready.acquire()
                for i in range(events):
                    sim.emit("BLOCK_IO_ERROR", io_error(i))
    assert len(got) == clients
    assert all(seen == [f"disk{i}" for i in range(events)] for seen in got)


async def test_a_stalled_reader_is_disconnected_alone_with_bounded_memory(
    sock: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="qmpsim.server")
    bound = 64 << 10
    readers = 3
    sim = Simulator(epoch=EPOCH, multi_client=True, max_output_buffer=bound)
    with trio.fail_after(HANG_GUARD):
        async with sim, trio.open_nursery() as nursery:
            await sim.listen_unix(sock)
            stalled = await trio.open_unix_socket(sock)
            await stalled.send_all(b'{"execute": "qmp_capabilities"}')  # then never reads
            received: list[list[str]] = [[] for _ in range(readers)]
            streams = []
            for seen in received:
                stream = await trio.open_unix_socket(sock)
                streams.append(stream)
                reader = LineReader(stream)
                await reader.message()
                await stream.send_all(b'{"execute": "qmp_capabilities"}')
                assert await reader.message() == {"return": {}}

                async def read_all(reader: LineReader, seen: list[str]) -> None:
                    while (msg := await reader.message()) is not None:
                        if msg["data"]["device"] == "end":
                            return
                        seen.append(msg["data"]["device"])

                nursery.start_soon(read_all, reader, seen)
            while len(sim.clients) < readers + 1:
                await trio.testing.wait_all_tasks_blocked()
            sent = 0
            peak = 0
            while len(sim.clients) > readers:
                assert sent < 100_000, "the stalled client was never disconnected"
                sim.emit("BLOCK_IO_ERROR", io_error(sent))
                sent += 1
                peak = max(peak, *(c.buffered for c in sim._clients.values()))
                if sent % 64 == 0:
                    await trio.testing.wait_all_tasks_blocked()
            assert peak <= bound + 256  # the bound beyond the largest message (an event)
            sim.emit("BLOCK_IO_ERROR", {**io_error(0), "device": "end"})
        for stream in streams:  # the readers have all returned
            await stream.aclose()
        await stalled.aclose()
    want = [f"disk{i}" for i in range(sent)]
    assert all(seen == want for seen in received)
    assert any("not reading" in r.getMessage() for r in caplog.records)


SESSION = (
    b'{"execute": "qmp_capabilities"}{"execute": "query-status", "id": 1}'
    b'{"execute": "stop"}{"execute": "cont", "id": "c"}'
)


async def _full_session(sock: str, session: bytes = SESSION) -> bytes:
    async with await trio.open_unix_socket(sock) as stream:
        await stream.send_all(session)
        await stream.send_eof()
        out = b""
        while data := await stream.receive_some():
            out += data
    return out


async def test_disconnect_at_every_byte_offset_then_a_full_session(sock: str) -> None:
    with trio.fail_after(HANG_GUARD):
        async with Simulator(epoch=EPOCH) as sim:
            await sim.listen_unix(sock)
            for cut in range(len(SESSION) + 1):
                stream = await trio.open_unix_socket(sock)
                assert await LineReader(stream).message() is not None  # accepted, greeted
                await stream.send_all(SESSION[:cut])
                await stream.aclose()  # without reading the answers
            await sim.wait_no_clients()
            if sim.machine.status == "paused":  # the VM outlives connections, as in QEMU
                await _full_session(sock, b'{"execute": "qmp_capabilities"}{"execute": "cont"}')
            assert mask(await _full_session(sock)) == mask(qmpsim_session([SESSION], sync=False))


async def test_half_close_at_every_byte_offset_gets_every_answer(sock: str) -> None:
    with trio.fail_after(HANG_GUARD):
        async with Simulator(epoch=EPOCH) as sim:
            await sim.listen_unix(sock)
            for cut in range(len(SESSION) + 1):
                async with await trio.open_unix_socket(sock) as stream:
                    await stream.send_all(SESSION[:cut])
                    await stream.send_eof()
                    out = b""
                    while data := await stream.receive_some():
                        out += data
                lines = out.split(b"\r\n")
                assert lines[-1] == b""
                assert all(isinstance(json.loads(line), dict) for line in lines[:-1])
                # Everything the reference answers to the same bytes, maybe followed by
                # the error QEMU gives for the value left unfinished at end of input.
                want = mask(qmpsim_session([SESSION[:cut]], sync=False))
                assert mask(out).startswith(want)
                sim.reset()  # a stop without its cont would carry over, as in QEMU
            assert sim.machine.status == "running"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_reconnect_storm_one_at_a_time_like_qemu(sock: str) -> None:
    storm = 300
    served: list[dict[str, Any]] = []
    before = _open_fds()
    with trio.fail_after(HANG_GUARD):
        async with Simulator(epoch=EPOCH) as sim:
            await sim.listen_unix(sock)

            # At most this many at once: the others would overflow the listen backlog, which
            # (like QEMU's) refuses a non-blocking connect with EAGAIN.
            at_once = trio.Semaphore(10)

            async def visitor(i: int) -> None:
                async with at_once, await trio.open_unix_socket(sock) as stream:
                    reader = LineReader(stream)
                    if await reader.message() is None:
                        return  # (never happens: everyone is served in turn)
                    await stream.send_all(
                        b'{"execute": "qmp_capabilities"}'
                        + json.dumps({"execute": "query-status", "id": i}).encode()
                    )
                    await reader.message()
                    reply = await reader.message()
                    assert reply is not None
                    served.append(reply)

            async with trio.open_nursery() as nursery:
                for i in range(storm):
                    nursery.start_soon(visitor, i)
            await sim.wait_no_clients()
            assert sorted(r["id"] for r in served) == list(range(storm))
            assert all(r["return"]["status"] == "running" for r in served)
            assert mask(await _full_session(sock)) == mask(qmpsim_session([SESSION], sync=False))
    assert _open_fds() <= before


async def test_a_client_flooding_commands_without_reading_is_bounded(
    sock: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="qmpsim.server")
    sim = Simulator(epoch=EPOCH, multi_client=True, max_output_buffer=64 << 10)
    flood = b'{"execute": "query-status"}' * 1000
    with trio.fail_after(HANG_GUARD):
        async with sim:
            await sim.listen_unix(sock)
            async with await trio.open_unix_socket(sock) as stream:
                await stream.send_all(b'{"execute": "qmp_capabilities"}')
                with pytest.raises(trio.BrokenResourceError):
                    for _ in range(10_000):  # ~270 MB unless the server cuts it off
                        await stream.send_all(flood)
            await sim.wait_no_clients()
            assert mask(await _full_session(sock)) == mask(qmpsim_session([SESSION], sync=False))
    assert any("not reading" in r.getMessage() for r in caplog.records)
