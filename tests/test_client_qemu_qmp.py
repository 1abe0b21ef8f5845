"""QEMU's own clients against qmpsim: ``qemu.qmp.QMPClient`` and ``qmp-shell``."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError, QMPClient

from qmpsim.runtime.background import BackgroundSimulator

TIMEOUT = 20.0
QMP_SHELL = Path(sys.executable).with_name("qmp-shell")


@pytest.fixture
def server() -> Iterator[BackgroundSimulator]:
    with (
        tempfile.TemporaryDirectory(prefix="qs-") as tmp,
        BackgroundSimulator(unix=str(Path(tmp) / "qmp.sock")) as threaded,
    ):
        yield threaded


def test_qmpclient_full_session(server: BackgroundSimulator) -> None:
    async def main() -> None:
        qmp = QMPClient("qmpsim-test")
        await asyncio.wait_for(qmp.connect(str(server.address)), TIMEOUT)
        try:
            assert qmp.greeting is not None
            assert "oob" in qmp.greeting.QMP.capabilities
            listener = qmp.events
            status = await qmp.execute("query-status")
            assert status == {"status": "running", "singlestep": False, "running": True}
            assert await qmp.execute("stop") == {}
            assert await qmp.execute("cont") == {}
            names = [(await listener.get())["event"] for _ in range(2)]
            assert names == ["STOP", "RESUME"]
            # oob was negotiated: an exec-oob is understood, and refused for stop
            with pytest.raises(ExecuteError, match="does not support OOB"):
                await qmp.execute("stop", oob=True)
            await asyncio.to_thread(server.call, server.sim.emit, "POWERDOWN")
            assert (await asyncio.wait_for(listener.get(), TIMEOUT))["event"] == "POWERDOWN"
            with pytest.raises(ExecuteError, match="has not been found"):
                await qmp.execute("no-such-command")
            assert (await qmp.execute("query-status"))["running"] is True
        finally:
            await qmp.disconnect()

    asyncio.run(main())
    commands = [c.command for c in server.call(server.sim.transcript.commands_sent)]
    assert commands[:4] == ["qmp_capabilities", "query-status", "stop", "cont"]
    (caps,) = server.call(server.sim.transcript.commands_sent, "qmp_capabilities")
    assert caps.arguments == {"enable": ["oob"]}


def test_qmpclient_reconnects_after_disconnect(server: BackgroundSimulator) -> None:
    async def main() -> None:
        for _ in range(2):
            qmp = QMPClient("again")
            await asyncio.wait_for(qmp.connect(str(server.address)), TIMEOUT)
            try:
                assert (await qmp.execute("query-status"))["status"] == "running"
            finally:
                await qmp.disconnect()

    asyncio.run(main())
    assert len(server.call(server.sim.transcript.commands_sent, "qmp_capabilities")) == 2


@pytest.fixture
def served_socket() -> Iterator[str]:
    """``qmpsim serve`` in a subprocess; its socket path."""
    with tempfile.TemporaryDirectory(prefix="qs-") as tmp:
        path = str(Path(tmp) / "qmp.sock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "qmpsim", "serve", "--unix", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            assert "listening on" in proc.stderr.readline()
            yield path
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=TIMEOUT)


@pytest.mark.skipif(shutil.which(str(QMP_SHELL)) is None, reason="qmp-shell is not installed")
def test_qmp_shell_non_interactive(served_socket: str) -> None:
    result = subprocess.run(
        [str(QMP_SHELL), served_socket],
        input="query-status\nstop\nquery-status\n\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "Connected to QEMU 7.2.22" in result.stdout
    # qmp-shell prints replies as JSON and events as Python dicts, each on its own line
    lines = [line.removeprefix("(QEMU) ") for line in result.stdout.splitlines()]
    replies = [json.loads(line) for line in lines if line.startswith('{"')]
    assert replies == [
        {"return": {"status": "running", "singlestep": False, "running": True}},
        {"return": {}},
        {"return": {"status": "paused", "singlestep": False, "running": False}},
    ]
    assert any("'event': 'STOP'" in line for line in lines)
