"""The shipped live-migration scenario from `qmpsim serve`: a second `qmpsim serve`
migrates to it over a real socket, and QEMU's Python client (qemu.qmp) watches both."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qmpsim.scenario.library import resolve

HANG_GUARD = 20.0  # seconds; only a guard against a hang, never an assertion on timing
EVENTS_ON = {"capabilities": [{"capability": "events", "state": True}]}


@contextmanager
def serving(sock: Path, *scenario: str) -> Iterator[None]:
    cmd = [sys.executable, "-m", "qmpsim", "serve", *scenario, "--unix", str(sock)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "error"}
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the server says where it listens once it does
        assert "listening on" in line, line
        yield
    finally:
        proc.terminate()
        proc.communicate(timeout=HANG_GUARD)


async def until(qmp: Any, name: str, status: str | None = None) -> list[str]:
    """Events up to ``name`` (with ``status``): name (status) each."""
    seen = []
    while True:
        event = await asyncio.wait_for(qmp.events.get(), HANG_GUARD)
        got = (event.get("data") or {}).get("status")
        seen.append(event["event"] + (f" {got}" if got else ""))
        if event["event"] == name and got == status:
            return seen


async def migrate(source: Path, destination: Path) -> dict[str, Any]:
    from qemu.qmp import QMPClient

    src, dst = QMPClient("source"), QMPClient("destination")
    await src.connect(str(source))
    await dst.connect(str(destination))
    seen: dict[str, Any] = {}
    try:
        seen["waiting"] = await dst.execute("query-status")
        for qmp in (src, dst):
            await qmp.execute("migrate-set-capabilities", EVENTS_ON)
        await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        seen["listening"] = await dst.execute("query-migrate")
        (where,) = seen["listening"]["socket-address"]
        await src.execute("migrate", {"uri": f"tcp:127.0.0.1:{where['port']}"})
        seen["source events"] = await until(src, "MIGRATION", "completed")
        seen["destination events"] = await until(dst, "MIGRATION", "completed")
        for side, qmp in (("source", src), ("destination", dst)):
            seen[f"{side} status"] = (await qmp.execute("query-status"))["status"]
            seen[f"{side} migration"] = await qmp.execute("query-migrate")
    finally:
        await src.disconnect()
        await dst.disconnect()
    return seen


def test_a_vm_migrates_into_the_shipped_destination(tmp_path: Path) -> None:
    source, destination = tmp_path / "src.sock", tmp_path / "dst.sock"
    with serving(destination, str(resolve("live-migration"))), serving(source):
        seen = asyncio.run(migrate(source, destination))
    assert seen["waiting"]["status"] == "inmigrate"
    assert seen["source events"] == [
        "MIGRATION setup",
        "MIGRATION_PASS",
        "MIGRATION active",
        "STOP",
        "MIGRATION_PASS",
        "MIGRATION completed",
    ]
    assert seen["destination events"] == [
        "MIGRATION setup",
        "MIGRATION active",
        "RESUME",
        "MIGRATION completed",
    ]
    assert seen["source status"] == "postmigrate"
    assert seen["destination status"] == "running"
    assert seen["destination migration"] == {"status": "completed"}
    info = seen["source migration"]
    assert info["status"] == "completed" and info["ram"]["remaining"] == 0
