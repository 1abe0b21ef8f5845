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

from qmpsim.runtime.background import BackgroundSimulator
from qmpsim.runtime.listen import ListenError
from qmpsim.runtime.server import Simulator


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


class _Broken(Exception):
    pass


def _break_the_loop(bg: BackgroundSimulator) -> None:
    """Make the simulator's background flush task fail, as a bug in it would."""

    answers: list[float | None] = [0.0]  # a throttled event is due: the flush task starts

    def broken() -> float | None:
        if answers:
            return answers.pop()
        raise _Broken("the flush task broke")

    bg.call(setattr, bg.sim.machine, "next_deadline", broken)
    bg.call(bg.sim.emit, "POWERDOWN")  # starts the flush task, which then fails


def test_a_failure_after_start_is_raised_by_run_call_and_exit(sock_dir: Path) -> None:
    with (
        pytest.raises(_Broken, match="the flush task broke"),
        BackgroundSimulator(unix=sock_dir / "q.sock") as bg,
    ):
        _break_the_loop(bg)
        with pytest.raises(_Broken):
            bg.run(trio.sleep_forever)  # returns only because the loop failed
        with pytest.raises(_Broken):
            bg.call(bg.sim.emit, "STOP")
        with pytest.raises(_Broken):
            bg.run(bg.sim.wait_negotiated)
        # __exit__ raises it once more: the body did not let it out


def test_a_failure_after_start_is_raised_by_exit(sock_dir: Path) -> None:
    with (
        pytest.raises(_Broken, match="the flush task broke"),
        BackgroundSimulator(unix=sock_dir / "q.sock") as bg,
    ):
        _break_the_loop(bg)
    assert not (sock_dir / "q.sock").exists()


def test_a_failure_comes_out_over_what_the_body_raised_because_of_it(sock_dir: Path) -> None:
    with pytest.raises(_Broken) as caught, BackgroundSimulator(unix=sock_dir / "q.sock") as bg:
        _break_the_loop(bg)
        raise KeyError("a symptom")
    assert isinstance(caught.value.__context__, KeyError)
