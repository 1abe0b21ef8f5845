"""The control channel, driven from a separate process (socat) while a client watches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from test_server_peer import Peer

from qmpsim.runtime.session import serve
from qmpsim.scenario.loader import loads_scenario

SCENARIO = """
vm:
  disks: [{name: vda, on_read_error: stop}]
actions:
  fail-disk:
    - cause: disk-error
      device: vda
"""

if shutil.which("socat") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("socat is missing under CI=true; `make test` installs it")
    pytestmark = pytest.mark.skip(reason="socat is not installed (make qemu installs it)")


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, Peer]]:
    qmp, control = tmp_path / "qmp.sock", tmp_path / "control.sock"
    lines: list[str] = []
    ready = trio.Event()

    def announce(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            ready.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: serve(
                loads_scenario(SCENARIO),
                unix=str(qmp),
                control=str(control),
                announce=announce,
            )
        )
        await ready.wait()
        assert lines == [f"QMP monitor on unix:{qmp}", f"control channel on unix:{control}"]
        async with await trio.open_unix_socket(str(qmp)) as stream:
            monitor = Peer(stream)
            assert "QMP" in await monitor.recv()
            assert await monitor.execute("qmp_capabilities") == {"return": {}}
            yield control, monitor
        nursery.cancel_scope.cancel()


async def socat(path: Path, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send requests with socat, a separate process; the replies after the greeting."""
    text = "".join(json.dumps(r) + "\n" for r in requests)
    result = await trio.run_process(
        ["socat", "-t", "5", "-", f"UNIX-CONNECT:{path}"],
        stdin=text.encode(),
        capture_stdout=True,
    )
    replies = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert replies[0]["QMP"]["capabilities"] == []
    return replies[1:]


CAPS = {"execute": "qmp_capabilities"}
HANG_GUARD = 20.0  # seconds; a guard against a hang, not an assertion on timing


@pytest.mark.trio
async def test_trigger_an_action_from_another_process(tmp_path: Path) -> None:
    async with served(tmp_path) as (control, monitor):
        replies = await socat(
            control, CAPS, {"execute": "qmpsim-trigger", "arguments": {"action": "fail-disk"}}
        )
        assert replies == [{"return": {}}, {"return": {}}]
        assert (await monitor.recv())["event"] == "BLOCK_IO_ERROR"
        assert (await monitor.recv())["event"] == "STOP"


@pytest.mark.trio
async def test_run_steps_emit_status_and_transcript(tmp_path: Path) -> None:
    async with served(tmp_path) as (control, monitor):
        run = {"execute": "qmpsim-run", "arguments": {"steps": [{"cause": "guest-reset"}]}}
        emit = {"execute": "qmpsim-emit", "arguments": {"event": "RTC_CHANGE", "fake": True}}
        assert await socat(control, CAPS, run, emit) == [{"return": {}}] * 3
        assert (await monitor.recv())["event"] == "RESET"
        assert (await monitor.recv())["event"] == "RTC_CHANGE"
        replies = await socat(
            control, CAPS, {"execute": "qmpsim-status", "id": 7}, {"execute": "qmpsim-transcript"}
        )
        status, transcript = replies[1:]
        assert status["id"] == 7 and status["return"]["status"] == "running"
        sent = [m for e in transcript["return"] if e["dir"] == "in" for m in e["json"]]
        assert sent == [{"execute": "qmp_capabilities"}]


@pytest.mark.trio
async def test_bad_requests_get_qmp_errors(tmp_path: Path) -> None:
    async with served(tmp_path) as (control, _monitor):
        early, *rest = await socat(
            control,
            {"execute": "qmpsim-status"},
            CAPS,
            {"execute": "qmpsim-trigger", "arguments": {"action": "nope"}},
            {"execute": "qmpsim-run", "arguments": {"steps": [{"cause": "disk-error"}]}},
            {"execute": "qmpsim-fly"},
        )
        assert early["error"]["class"] == "CommandNotFound"
        assert rest[0] == {"return": {}}
        assert rest[1]["error"]["desc"] == "no action named 'nope' (actions: fail-disk)"
        assert "needs the key 'device'" in rest[2]["error"]["desc"]
        assert rest[3]["error"]["class"] == "CommandNotFound"


@pytest.mark.trio
async def test_reset_restarts_the_vm_and_is_not_on_the_monitor(tmp_path: Path) -> None:
    async with served(tmp_path) as (control, monitor):
        reply = await monitor.execute("qmpsim-reset")
        assert reply["error"]["class"] == "CommandNotFound"
        assert (await monitor.execute("stop"))["return"] == {}
        assert await socat(control, CAPS, {"execute": "qmpsim-reset"}) == [{"return": {}}] * 2
        assert (await monitor.execute("query-status"))["return"]["status"] == "running"


DOC = (Path(__file__).resolve().parent.parent / "docs" / "scenarios.md").read_text()


def _block(lang: str, containing: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.DOTALL)
    return next(b for b in blocks if containing in b)


def test_the_documented_socat_and_python_examples_drive_qmpsim_serve(tmp_path: Path) -> None:
    (tmp_path / "scenario.yaml").write_text(_block("yaml", "fail-disk:"))
    cmd = ["serve", "scenario.yaml", "--unix", "qmp.sock", "--control", "control.sock"]
    server = subprocess.Popen(
        [sys.executable, "-m", "qmpsim", *cmd], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        while "control channel on" not in server.stderr.readline():
            assert server.poll() is None, "qmpsim serve ended early"
        shell = subprocess.run(
            ["sh", "-c", _block("sh", "socat")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            check=True,
        )
        replies = [json.loads(line) for line in shell.stdout.splitlines()]
        assert replies[1:3] == [{"return": {}}, {"return": {}}]
        assert isinstance(replies[3]["return"], list)
        python = subprocess.run(
            [sys.executable, "-c", _block("python", "qmpsim-trigger")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            check=True,
        )
        lines = [line for line in python.stdout.splitlines() if line.strip()]
        assert [json.loads(line) for line in lines] == [{"return": {}}] * 2
    finally:
        server.terminate()
        server.communicate(timeout=HANG_GUARD)
