"""BackgroundSimulator (a simulator in a thread) and a simulator reused across trio runs."""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from test_server_peer import EPOCH, connect

from qmpsim.server import BackgroundSimulator, ListenError, Simulator


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qs-") as tmp:
        yield Path(tmp)


def _lines(sock: socket.socket, count: int) -> list[dict[str, object]]:
    reader = sock.makefile("rb")
    try:
        return [json.loads(reader.readline()) for _ in range(count)]
    finally:
        reader.close()


def test_background_unix_call_and_run(sock_dir: Path) -> None:
    with BackgroundSimulator(unix=sock_dir / "q.sock") as bg:
        assert bg.address == str(sock_dir / "q.sock")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(bg.address))
            sock.sendall(b'{"execute": "qmp_capabilities"}')
            assert bg.run(bg.sim.wait_negotiated) == 1
            bg.call(bg.sim.emit, "POWERDOWN")
            greeting, ok, event = _lines(sock, 3)
            assert "QMP" in greeting and ok == {"return": {}} and event["event"] == "POWERDOWN"
    assert not (sock_dir / "q.sock").exists()


def test_background_tcp() -> None:
    with BackgroundSimulator(Simulator(multi_client=True), tcp=("127.0.0.1", 0)) as bg:
        assert isinstance(bg.address, tuple)
        with socket.create_connection(bg.address, timeout=10) as sock:
            assert "QMP" in _lines(sock, 1)[0]
        assert bg.sim.multi_client


def test_background_reports_listen_errors(sock_dir: Path) -> None:
    (sock_dir / "file").write_text("")
    with (
        pytest.raises(ListenError, match="not a socket"),
        BackgroundSimulator(unix=sock_dir / "file"),
    ):
        pass
    with pytest.raises(ValueError, match="exactly one of"):
        BackgroundSimulator()


def test_one_simulator_across_trio_runs_keeps_time_moving_forward() -> None:
    sim = Simulator(epoch=EPOCH)
    stamps: list[float] = []

    async def session(advance: float) -> None:
        async with sim, trio.open_nursery() as nursery:
            peer, _ = connect(sim, nursery)
            await peer.negotiate()
            await trio.sleep(advance)
            assert await peer.execute("system_reset") == {"return": {}}
            (event,) = peer.events
            stamps.append(event["timestamp"]["seconds"] + event["timestamp"]["microseconds"] / 1e6)
            nursery.cancel_scope.cancel()

    for advance in (5.0, 2.0):
        trio.run(session, advance, clock=trio.testing.MockClock(autojump_threshold=0))
    assert stamps == [pytest.approx(EPOCH + 5.0), pytest.approx(EPOCH + 7.0)]


@pytest.mark.trio
async def test_a_running_simulator_cannot_be_entered_twice() -> None:
    async with Simulator() as sim:
        with pytest.raises(RuntimeError, match="already running"):
            await sim.__aenter__()
