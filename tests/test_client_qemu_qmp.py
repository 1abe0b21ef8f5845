"""QEMU's own clients against qmpsim: ``qemu.qmp.QMPClient`` and ``qmp-shell``."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from qemu.qmp import ExecuteError, QMPClient

from qmpsim.server import Simulator

TIMEOUT = 20.0
QMP_SHELL = Path(sys.executable).with_name("qmp-shell")


class ThreadedSimulator:
    """A simulator on a Unix socket, run by trio in a thread (qemu.qmp needs asyncio)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self.failure = exc
            self.ready.set()

    async def _main(self) -> None:
        async with Simulator() as sim:
            self.sim = sim
            self.token = trio.lowlevel.current_trio_token()
            self.scope = trio.CancelScope()
            await sim.listen_unix(self.path)
            self.ready.set()
            with self.scope:
                await trio.sleep_forever()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the simulator's trio thread."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def __enter__(self) -> ThreadedSimulator:
        self.thread.start()
        assert self.ready.wait(TIMEOUT), "the simulator did not start"
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self.failure is None:
            self.call(self.scope.cancel)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


@pytest.fixture
def server() -> Iterator[ThreadedSimulator]:
    with (
        tempfile.TemporaryDirectory(prefix="qs-") as tmp,
        ThreadedSimulator(str(Path(tmp) / "qmp.sock")) as threaded,
    ):
        yield threaded


def test_qmpclient_full_session(server: ThreadedSimulator) -> None:
    async def main() -> None:
        qmp = QMPClient("qmpsim-test")
        await asyncio.wait_for(qmp.connect(server.path), TIMEOUT)
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
    commands = [c.command for c in server.sim.transcript.commands_sent()]
    assert commands[:4] == ["qmp_capabilities", "query-status", "stop", "cont"]
    (caps,) = server.sim.transcript.commands_sent("qmp_capabilities")
    assert caps.arguments == {"enable": ["oob"]}


def test_qmpclient_reconnects_after_disconnect(server: ThreadedSimulator) -> None:
    async def main() -> None:
        for _ in range(2):
            qmp = QMPClient("again")
            await asyncio.wait_for(qmp.connect(server.path), TIMEOUT)
            try:
                assert (await qmp.execute("query-status"))["status"] == "running"
            finally:
                await qmp.disconnect()

    asyncio.run(main())
    assert len(server.sim.transcript.commands_sent("qmp_capabilities")) == 2


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
    assert "Connected to QEMU 7.2.0" in result.stdout
    # qmp-shell prints replies as JSON and events as Python dicts, each on its own line
    lines = [line.removeprefix("(QEMU) ") for line in result.stdout.splitlines()]
    replies = [json.loads(line) for line in lines if line.startswith('{"')]
    assert replies == [
        {"return": {"status": "running", "singlestep": False, "running": True}},
        {"return": {}},
        {"return": {"status": "paused", "singlestep": False, "running": False}},
    ]
    assert any("'event': 'STOP'" in line for line in lines)
