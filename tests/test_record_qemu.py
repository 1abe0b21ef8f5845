"""Record a real QEMU through the proxy, replay it, make a scenario of it: the round trip.

The client is QEMU's own ``qemu.qmp``, run in a worker thread as an agent would
run it. Guest-side events come from port writes through
``human-monitor-command``: the ib700 watchdog (pause), a CMOS year write
(RTC_CHANGE) and pvpanic (GUEST_PANICKED, paused).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from qemu.qmp import QMPClient
from qemu_harness import qemu_process

from qmpsim.cli import main
from qmpsim.qmp.cassette import load_cassette
from qmpsim.qmp.transcript import Direction, Transcript
from qmpsim.runtime.engine import ScenarioRunner
from qmpsim.runtime.record import Recorder
from qmpsim.runtime.replay import replay_simulator
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.from_recording import derive_scenario
from qmpsim.scenario.loader import load_scenario

pytestmark = pytest.mark.qemu

QEMU_ARGS = (
    "-M",
    "pc",
    "-device",
    "ib700",
    "-watchdog-action",
    "pause",
    "-device",
    "pvpanic",
    "-action",
    "panic=pause",
)
# A firmware of nothing but HLT: SeaBIOS would set up the RTC while the test writes
# its CMOS index and data ports, and a busy machine lets the two interleave.
HALT = b"\xf4" * 65536


def qemu_args(tmp_path: Path) -> tuple[str, ...]:
    bios = tmp_path / "halt.bin"
    bios.write_bytes(HALT)
    return (*QEMU_ARGS, "-bios", str(bios))


TIMEOUT = 30.0  # a hang guard: generous, the machine may be loaded


def agent(address: str) -> tuple[list[Any], list[tuple[str, Any]]]:
    """The client under test: what it got back, and the events it saw (without timestamps)."""

    async def main() -> tuple[list[Any], list[tuple[str, Any]]]:
        qmp = QMPClient("agent")
        results: list[Any] = []
        seen: list[tuple[str, Any]] = []

        async def until(name: str) -> None:
            async for event in events:
                seen.append((event["event"], event.get("data")))
                if event["event"] == name:
                    return

        async def hmp(line: str) -> None:
            results.append(await qmp.execute("human-monitor-command", {"command-line": line}))

        with qmp.listener() as events:  # before connect(): no event is missed
            await asyncio.wait_for(qmp.connect(address), TIMEOUT)
            results.append(await qmp.execute("query-status"))
            await hmp("o /b 0x443 15")  # the watchdog expires at once
            await asyncio.wait_for(until("STOP"), TIMEOUT)
            results.append(await qmp.execute("query-status"))
            results.append(await qmp.execute("cont"))
            await hmp("o /b 0x70 9")
            await hmp("o /b 0x71 0x99")  # the year: far from now, so the clock changes
            await asyncio.wait_for(until("RTC_CHANGE"), TIMEOUT)
            await hmp("o /b 0x505 1")  # pvpanic
            await asyncio.wait_for(until("STOP"), TIMEOUT)
            results.append(await qmp.execute("query-status"))
            results.append(await qmp.execute("quit"))
        # QEMU hangs up as it exits: qemu.qmp's disconnect() then raises what ended
        # its reader (EOFError, or the cancellation of its tasks).
        with contextlib.suppress(EOFError, asyncio.CancelledError):
            await qmp.disconnect()
        return results, seen

    return asyncio.run(main())


def sent(transcript: Transcript) -> bytes:
    return b"".join(e.raw for e in transcript if e.direction is Direction.OUT)


@pytest.mark.trio
async def test_record_replay_and_scenario_round_trip(tmp_path: Path) -> None:
    with qemu_process(*qemu_args(tmp_path)) as monitor:
        recorder = Recorder(monitor)
        async with trio.open_nursery() as nursery:
            proxy = await nursery.start(recorder.serve_unix, str(tmp_path / "proxy.sock"))
            recorded = await trio.to_thread.run_sync(agent, proxy)
            await recorder.qemu_exited.wait()  # the quit
            await recorder.wait_no_clients()
            nursery.cancel_scope.cancel()
    session = tmp_path / "session.jsonl"
    recorder.transcript.save(session)
    assert main(["check", str(session)]) == 0
    cassette = load_cassette(session)

    # Replayed: the client gets the same answers, in the same bytes.
    sim, replayer = replay_simulator(cassette)
    async with sim:
        address = await sim.listen_unix(tmp_path / "replay.sock")
        assert await trio.to_thread.run_sync(agent, address) == recorded
        await sim.wait_no_clients()
    assert sent(sim.transcript) == sent(recorder.transcript)
    assert replayer.failures == [] and replayer.unplayed() == []
    assert sim.exited

    # As a scenario: valid, and played to the same client it gives the same events.
    path = tmp_path / "recorded.yaml"
    path.write_text(derive_scenario(cassette).to_yaml(str(session)))
    assert main(["validate", str(path)]) == 0
    scenario = load_scenario(path)
    played_sim = Simulator(build_machine(scenario))
    async with played_sim, trio.open_nursery() as nursery:
        await nursery.start(ScenarioRunner(played_sim, scenario).run)
        address = await played_sim.listen_unix(tmp_path / "played.sock")
        played = await trio.to_thread.run_sync(agent, address)
        nursery.cancel_scope.cancel()
    assert played == recorded
    played_sim.transcript.save(tmp_path / "played.jsonl")
    assert main(["check", str(tmp_path / "played.jsonl")]) == 0


@pytest.fixture
def qmpsim() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``qmpsim ARGS`` processes; any still running when the test ends is killed,
    so a failed assertion never leaves a server behind (or holds the runner's pipes)."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "qmpsim", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def wait_for_socket(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():  # polling another process's socket file, not syncing threads
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def test_the_command_line_records_and_replays(
    tmp_path: Path, qmpsim: Callable[..., subprocess.Popen[str]]
) -> None:
    session = tmp_path / "session.jsonl"
    proxy = tmp_path / "proxy.sock"
    with qemu_process(*qemu_args(tmp_path)) as monitor:
        recording = qmpsim(
            "record", "--upstream", monitor, "--unix", str(proxy), "--output", str(session)
        )
        wait_for_socket(proxy, recording)
        recorded = agent(str(proxy))
        _, err = recording.communicate(timeout=TIMEOUT)  # it stops once QEMU has exited
    assert recording.returncode == 0, err
    assert "QEMU exited, stopping" in err
    assert not proxy.exists()

    replayed_at = tmp_path / "replay.sock"
    replaying = qmpsim("replay", str(session), "--unix", str(replayed_at))
    wait_for_socket(replayed_at, replaying)
    assert agent(str(replayed_at)) == recorded
    _, err = replaying.communicate(timeout=TIMEOUT)
    assert replaying.returncode == 0, err

    scenario = tmp_path / "recorded.yaml"
    assert main(["scenario-from", str(session), "-o", str(scenario)]) == 0
    assert main(["validate", str(scenario)]) == 0
    assert os.path.getsize(scenario) > 0
