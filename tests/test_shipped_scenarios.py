"""The shipped scenario library: every file loads, covers the spec, and plays end to end
under `qmpsim serve` with QEMU's own Python client (qemu.qmp) watching."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.scenario.dryrun import show_timeline
from qmpsim.scenario.library import shipped_scenarios
from qmpsim.scenario.loader import load_scenario

SHIPPED = shipped_scenarios()
HANG_GUARD = 20.0  # seconds; only a guard against a hang, never an assertion on timing

# What a client sees: an event name, "!command" to send (its events are expected
# next; "!?command" when it fails; a JSON object after a space is its arguments),
# "?query" to ask a query whose answer CHECKS judges, "=status" for query-status's
# answer, "@PATH=a,b" for the children qom-list names under PATH, "-" for no event
# pending, "...S" for S real seconds in which nothing is expected (the guest's
# default delays are at most half a second), "~" for the connection to drop, "*NAME"
# for any number of NAME events from then on (how many depends on the real time
# the client takes: a migration's passes).
# fmt: off
SCRIPTS: dict[str, list[str]] = {
    "tour": [
        "RTC_CHANGE", "VNC_CONNECTED", "VNC_INITIALIZED", "VNC_DISCONNECTED",
        "BLOCK_IO_ERROR", "STOP", "=io-error", "!cont", "RESUME", "RESET", "=running",
    ],
    "disk-read-error-stop": [
        "BLOCK_IO_ERROR", "STOP", "=io-error", "!cont", "RESUME", "BLOCK_IO_ERROR", "STOP",
        "=io-error", "!cont", "RESUME", "=running",
    ],
    "disk-write-error-report": ["BLOCK_IO_ERROR"] * 3 + ["=running"],
    "enospc-thin-disk": [
        "BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "STOP", "=io-error", "!cont", "RESUME", "=running",
    ],
    "watchdog-reset": ["WATCHDOG", "RESET", "=running"],
    "watchdog-pause": ["WATCHDOG", "STOP", "=watchdog", "!cont", "RESUME", "=running"],
    "watchdog-shutdown": ["WATCHDOG", "POWERDOWN", "SHUTDOWN", "STOP", "=shutdown"],
    "guest-shutdown": ["SHUTDOWN", "~"],
    "guest-shutdown-no-shutdown": [
        "SHUTDOWN", "STOP", "=shutdown", "!system_reset", "RESET", "!cont", "RESUME", "=running",
    ],
    "guest-acpi-reboot": [
        "!system_powerdown", "POWERDOWN", "SHUTDOWN", "STOP", "=shutdown", "!system_reset",
        "RESET", "!cont", "RESUME", "=running",
    ],
    "hot-unplug-ignored": [
        '!device_add {"driver": "virtio-net-pci", "id": "nic1"}', "@/machine/peripheral=nic1",
        '!device_del {"id": "nic1"}', "...1", "@/machine/peripheral=nic1", "-",
        '!device_del {"id": "nic1"}', "=running", "-",
    ],
    "guest-panic": [
        "GUEST_PANICKED", "STOP", "=guest-panicked", "!system_reset", "RESET", "!cont",
        "RESUME", "=running",
    ],
    # the first write, then the last one when the one-second window closes
    "rtc-drift": ["RTC_CHANGE", "RTC_CHANGE"],
    "vnc-sasl-x509": [
        "VNC_CONNECTED", "VNC_INITIALIZED", "VNC_CONNECTED", "VNC_INITIALIZED",
        "VNC_DISCONNECTED", "VNC_DISCONNECTED",
    ],
    "vnc-probe": ["VNC_CONNECTED", "VNC_DISCONNECTED"] * 3,
    "spice-channels": ["SPICE_CONNECTED", "SPICE_INITIALIZED"] * 4 + ["SPICE_DISCONNECTED"] * 4,
    "reboot-loop": ["RESET"] * 4 + ["=running"],
    # one round at --speed 100; its throttled RTC_CHANGE comes a real second later
    "soak": [
        "RTC_CHANGE", "VNC_CONNECTED", "VNC_INITIALIZED", "BLOCK_IO_ERROR", "VNC_DISCONNECTED",
        "SPICE_CONNECTED", "SPICE_INITIALIZED", "SPICE_DISCONNECTED", "WATCHDOG", "RESET",
        "=running",
    ],
    "qemu-0.14-spec": [
        "BLOCK_IO_ERROR", "STOP", "=paused", "!cont", "RESUME", "RTC_CHANGE", "VNC_CONNECTED",
        "VNC_INITIALIZED", "VNC_DISCONNECTED", "SPICE_CONNECTED", "SPICE_INITIALIZED",
        "SPICE_DISCONNECTED", "WATCHDOG", "RESET", "SHUTDOWN", "STOP", "=paused",
    ],
    "mirror-ready-complete": [
        '!drive-mirror {"device": "drive-virtio-disk0", "target": "/srv/new/web01.qcow2", '
        '"sync": "full"}',
        "JOB_STATUS_CHANGE", "JOB_STATUS_CHANGE", "?query-jobs", "?query-block-jobs",
        "JOB_STATUS_CHANGE", "BLOCK_JOB_READY", "?query-jobs", "?query-named-block-nodes",
        '!job-complete {"id": "drive-virtio-disk0"}',
        "JOB_STATUS_CHANGE", "JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "JOB_STATUS_CHANGE",
        "JOB_STATUS_CHANGE", "?query-jobs", "?query-block", "?query-named-block-nodes",
        "=running",
    ],
    "thin-disk-resize": [
        "BLOCK_IO_ERROR", "STOP", "=io-error", "?query-block",
        '!block_resize {"device": "drive-virtio-disk0", "size": 17179869184}',
        "?query-block", "?query-named-block-nodes", "!cont", "RESUME", "=running",
        "?query-block",
    ],
    "flaky-monitor": ["=running", "RESUME", "STOP", "=running", "!?query-version", "~"],
    # the first size half a second after the request, then one a second until 512M
    "memory-balloon-slow": [
        "?query-balloon", '!balloon {"value": 536870912}', "BALLOON_CHANGE", "?query-balloon",
        *["BALLOON_CHANGE"] * 16, "?query-balloon", "=running",
    ],
    "guest-suspend-wakeup": [
        "SUSPEND", "=suspended", "!cont", "=suspended", "-", "?query-current-machine",
        "!system_wakeup", "WAKEUP", "=running", "!?system_wakeup",
    ],
    "live-migration": [
        "=inmigrate",
        '!migrate-set-capabilities {"capabilities": [{"capability": "events", "state": true}]}',
        '!migrate-incoming {"uri": "tcp:127.0.0.1:0"}', "MIGRATION", "?query-migrate",
        "=inmigrate",
    ],
    "migration-bandwidth-raised": [
        '!migrate-set-capabilities {"capabilities": [{"capability": "events", "state": true}]}',
        '!migrate {"uri": "tcp:10.0.0.2:4444"}', "MIGRATION", "MIGRATION_PASS", "MIGRATION",
        "*MIGRATION_PASS", "?query-migrate", "...0.3", "?query-migrate", "=running",
        '!migrate-set-parameters {"max-bandwidth": 1073741824}', "STOP", "MIGRATION",
        "=postmigrate", "?query-migrate",
    ],
    "postcopy-paused-recover": [
        '!migrate-set-capabilities {"capabilities": [{"capability": "events", "state": true},'
        ' {"capability": "postcopy-ram", "state": true}]}',
        '!migrate-set-parameters {"max-bandwidth": 50000, "max-postcopy-bandwidth": 50000}',
        '!migrate {"uri": "tcp:10.0.0.2:4444"}', "MIGRATION", "MIGRATION_PASS", "MIGRATION",
        "!migrate-start-postcopy", "MIGRATION", "STOP", "MIGRATION_PASS", "=finish-migrate",
        "?query-migrate", "MIGRATION", "?query-migrate", "=finish-migrate",
        '!migrate {"uri": "tcp:10.0.0.3:4444", "resume": true}', "MIGRATION", "MIGRATION",
        '!migrate-set-parameters {"max-postcopy-bandwidth": 0}', "MIGRATION", "=postmigrate",
        "?query-migrate",
    ],
}
# fmt: on


def test_the_library_has_at_least_twelve_scenarios_each_scripted() -> None:
    assert len(SHIPPED) >= 12
    assert {p.stem for p in SHIPPED} == set(SCRIPTS)


def test_the_library_covers_every_event_of_the_spec() -> None:
    spec_events = set(get_profile("qemu-0.14").events)
    seen = {item for script in SCRIPTS.values() for item in script if item.isupper()}
    assert spec_events <= seen


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_loads_and_says_what_it_mimics(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description
    assert path.read_text().startswith("# "), "each file opens with a comment on what it mimics"
    assert show_timeline(scenario).startswith(f"{scenario.name}: ")


@contextmanager
def serving(path: Path, sock: Path) -> Iterator[subprocess.Popen[str]]:
    cmd = [sys.executable, "-m", "qmpsim", "serve", str(path), "--unix", str(sock)]
    proc = subprocess.Popen(
        [*cmd, "--speed", "100"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the server says where it listens once it does
        assert "listening on" in line, line
        yield proc
    finally:
        proc.terminate()
        proc.communicate(timeout=HANG_GUARD)


def _request(text: str) -> tuple[str, dict[str, Any] | None]:
    command, _, arguments = text.partition(" ")
    return command, json.loads(arguments) if arguments else None


async def play(sock: Path, script: list[str], answers: list[Any] | None = None) -> list[str]:
    from qemu.qmp import ExecuteError, QMPClient

    qmp = QMPClient("shipped")
    seen: list[str] = []
    skipped: set[str] = set()
    answers = [] if answers is None else answers
    await qmp.connect(str(sock))
    try:
        for item in script:
            if item == "~":
                # the server (or the VM) ends the session: qemu.qmp's reader stops
                await asyncio.wait_for(_dropped(qmp), HANG_GUARD)
                seen.append("~")
            elif item.startswith("!?"):
                with pytest.raises(ExecuteError):
                    await asyncio.wait_for(qmp.execute(*_request(item[2:])), HANG_GUARD)
                seen.append(item)
            elif item.startswith("!"):
                await asyncio.wait_for(qmp.execute(*_request(item[1:])), HANG_GUARD)
                seen.append(item)
            elif item.startswith("?"):
                answers.append(await asyncio.wait_for(qmp.execute(item[1:]), HANG_GUARD))
                seen.append(item)
            elif item.startswith("@"):
                path = item[1:].partition("=")[0]
                listed: Any = await asyncio.wait_for(
                    qmp.execute("qom-list", {"path": path}), HANG_GUARD
                )
                children = ",".join(p["name"] for p in listed if p["name"] != "type")
                seen.append(f"@{path}={children}")
            elif item.startswith("..."):
                await asyncio.sleep(float(item[3:]))  # an absence of events takes time to show
                seen.append(item)
            elif item.startswith("*"):
                skipped.add(item[1:])
                seen.append(item)
            elif item == "-":
                seen.append("-" if qmp.events.empty() else "events pending")
            elif item.startswith("="):
                status: Any = await asyncio.wait_for(qmp.execute("query-status"), HANG_GUARD)
                # QEMU 0.14 answers only `running`; later ones add the run state
                state = status.get("status", "running" if status["running"] else "paused")
                assert status["running"] == (state == "running")
                seen.append(f"={state}")
            else:
                event = await asyncio.wait_for(qmp.events.get(), HANG_GUARD)
                while event["event"] in skipped:
                    event = await asyncio.wait_for(qmp.events.get(), HANG_GUARD)
                seen.append(event["event"])
    finally:
        try:
            await qmp.disconnect()
        except Exception:
            # qemu.qmp re-raises what killed its reader (the garbage of a faulty monitor)
            if script[-1] != "~":
                raise
    return seen


async def _dropped(qmp: Any) -> None:
    from qemu.qmp import Runstate

    while qmp.runstate is Runstate.RUNNING:
        await qmp.runstate_changed()


def _mirror(answers: list[Any]) -> None:
    started, started_blocks, ready, graph, done, block, pivoted = answers
    (job,) = started
    # copying: offset on its way to len, on the virtual clock
    assert (job["id"], job["type"], job["status"]) == ("drive-virtio-disk0", "mirror", "running")
    assert job["current-progress"] < job["total-progress"] == 6 << 30
    assert started_blocks[0]["ready"] is False and started_blocks[0]["len"] == 6 << 30
    (job,) = ready
    assert job["status"] == "ready" and job["current-progress"] == job["total-progress"]
    # while it runs, the mirror's filter sits on the source; the target is open
    assert [n["drv"] for n in graph][:3] == ["mirror_top", "qcow2", "file"]
    assert graph[1]["file"] == "/srv/new/web01.qcow2"
    assert done == []
    (disk,) = block
    assert disk["inserted"]["file"] == "/srv/new/web01.qcow2"
    assert {n["file"] for n in pivoted} == {"/srv/new/web01.qcow2"}
    assert disk["inserted"]["node-name"] == pivoted[0]["node-name"]


def _thin(answers: list[Any]) -> None:
    full, grown, nodes, resumed = answers
    assert full[0]["io-status"] == "nospace"
    assert full[0]["inserted"]["image"]["virtual-size"] == 8 << 30
    assert grown[0]["inserted"]["image"]["virtual-size"] == 16 << 30
    fmt = next(n for n in nodes if n["node-name"] == grown[0]["inserted"]["node-name"])
    assert fmt["image"]["virtual-size"] == 16 << 30
    assert resumed[0]["io-status"] == "ok"


def _balloon(answers: list[Any]) -> None:
    before, on_its_way, done = (a["actual"] for a in answers)
    assert before == 1 << 30 and done == 512 << 20
    assert done <= on_its_way < before and on_its_way % 4096 == 0


def _wakeup(answers: list[Any]) -> None:
    assert answers == [{"wakeup-suspend-support": True}]


def _migration(answers: list[Any]) -> None:
    early, later, done = answers
    # 200 MiB/s dirtied, 128 MiB/s sent: each pass finds the guest's RAM dirty again
    for info in (early, later):
        assert info["status"] == "active"
        assert info["expected-downtime"] > 300 or info["ram"]["dirty-sync-count"] == 1
    assert later["ram"]["dirty-sync-count"] > early["ram"]["dirty-sync-count"] >= 1
    assert later["ram"]["transferred"] > early["ram"]["transferred"]
    assert later["ram"]["dirty-pages-rate"] == (200 << 20) // 4096
    assert later["total-time"] > early["total-time"]
    assert done["status"] == "completed"
    assert done["ram"]["remaining"] == 0
    assert done["ram"]["transferred"] > later["ram"]["transferred"]


def _postcopy(answers: list[Any]) -> None:
    switched, paused, done = answers
    assert switched["status"] == "postcopy-active"
    assert switched["ram"]["postcopy-requests"] >= 1  # the destination's first fault
    assert paused["status"] == "postcopy-paused"
    assert paused["ram"]["remaining"] > 0  # most of the RAM is still to come
    assert done["status"] == "completed" and done["ram"]["remaining"] == 0
    assert done["ram"]["postcopy-bytes"] > paused["ram"]["postcopy-bytes"]


def _listening(answers: list[Any]) -> None:
    (info,) = answers  # the source comes in tests/test_migration_serve.py
    (where,) = info["socket-address"]
    assert where["host"] == "127.0.0.1" and where["type"] == "inet"
    assert int(where["port"]) > 0  # port 0 asked: the one bound


# the answers of a script's "?query" items, judged in order
CHECKS: dict[str, Callable[[list[Any]], None]] = {
    "live-migration": _listening,
    "migration-bandwidth-raised": _migration,
    "postcopy-paused-recover": _postcopy,
    "mirror-ready-complete": _mirror,
    "thin-disk-resize": _thin,
    "memory-balloon-slow": _balloon,
    "guest-suspend-wakeup": _wakeup,
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_plays_to_qemu_qmp(path: Path, tmp_path: Path) -> None:
    script = SCRIPTS[path.stem]
    sock = tmp_path / "qmp.sock"
    answers: list[Any] = []
    with serving(path, sock):
        seen = asyncio.run(play(sock, script, answers))
    assert seen == script
    if path.stem in CHECKS:
        CHECKS[path.stem](answers)
    else:
        assert answers == []
