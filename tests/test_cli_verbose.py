"""``-v``: timestamped lines, in the order things happened, naming the scenario step and the VM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
import trio.testing
from test_server_peer import Peer

from qmpsim.qmp.transcript import Direction
from qmpsim.runtime.server import Simulator

QMPSIM = [sys.executable, "-m", "qmpsim"]
TIMEOUT = 20
STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ")


@pytest.mark.trio
async def test_a_client_that_sends_at_once_is_read_after_its_greeting(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator() as sim, trio.open_nursery() as nursery:
        client, server = trio.testing.memory_stream_pair()
        await client.send_all(b'{"execute": "qmp_capabilities"}')  # before any greeting
        nursery.start_soon(sim.handle_stream, server)
        peer = Peer(client)
        assert "QMP" in await peer.recv()
        assert await peer.recv() == {"return": {}}
        nursery.cancel_scope.cancel()
    directions = [entry.direction for entry in sim.transcript]
    assert directions[:3] == [Direction.OUT, Direction.IN, Direction.OUT]


def test_serve_v_lines_are_timestamped_in_order_with_scenario_steps(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nsteps:\n  - emit: POWERDOWN\n  - until: stop\n")
    path = str(tmp_path / "qmp.sock")
    proc = subprocess.Popen(
        [*QMPSIM, "serve", str(scenario), "--unix", path, "-v"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        while "listening on" not in (line := proc.stderr.readline()):  # readiness, no polling
            assert line, "serve ended before it listened"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            # Sent at once, without waiting for the greeting, as `printf … | socat` does.
            sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "stop"}')
            received = b""
            while received.count(b"\r\n") < 5:  # greeting, return, POWERDOWN, STOP, return
                received += sock.recv(65536)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    logged = [STAMP.sub("", line) for line in err.splitlines() if STAMP.match(line)]
    assert logged, err
    traffic = [line for line in logged if line.startswith("qmpsim: client 1 ")]
    assert traffic[0].startswith('qmpsim: client 1 <- {"QMP": ')
    assert traffic[1] == 'qmpsim: client 1 -> {"execute": "qmp_capabilities"}'
    steps = [line for line in logged if line.startswith("qmpsim: scenario 's'")]
    assert steps == [
        f"qmpsim: scenario 's' ({scenario}:3): " + '{"emit": "POWERDOWN"}',
        f"qmpsim: scenario 's' ({scenario}:4): " + '{"until": "stop"}',
    ]
    # One stream of lines, in the order things happened: the timeline starts once
    # the client has negotiated (clock: first-client).
    assert logged.index("qmpsim: client 1: capabilities negotiated") < logged.index(steps[0])


def test_fleet_v_names_the_vm(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="qs-") as directory:
        proc = subprocess.Popen(
            [*QMPSIM, "fleet", "--count", "2", "--dir", directory, "--workers", "2", "-v"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            # The announcement comes once every worker listens (log lines come before it).
            while not (line := proc.stderr.readline()).startswith("qmpsim: fleet of 2 VMs"):
                assert line, "the fleet ended before it listened"
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(TIMEOUT)
                sock.connect(str(Path(directory) / "vm1.sock"))
                assert b"QMP" in sock.recv(65536)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert re.search(
        r"^\d\d:\d\d:\d\d\.\d{3} qmpsim \(worker 1\): vm1: client 1: connected$", err, re.M
    ), err
