"""The checker's block rules: QEMU's job state machine, job events in their states, trays."""

from __future__ import annotations

from typing import Any

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events
from qmpsim.vm.machine import DiskConfig, Machine, ManualClock, TrayMoved, VmConfig

PROFILE = get_profile("qemu-7.2")
_STAMP = {"seconds": 1_700_000_000, "microseconds": 0}


def job(status: str, job_id: str = "j") -> dict[str, Any]:
    return {
        "event": "JOB_STATUS_CHANGE",
        "data": {"id": job_id, "status": status},
        "timestamp": _STAMP,
    }


def done(name: str, job_id: str = "j") -> dict[str, Any]:
    data = {"type": "mirror", "device": job_id, "len": 1, "offset": 1, "speed": 0}
    return {"event": name, "data": data, "timestamp": _STAMP}


def rules(events: list[dict[str, Any]]) -> list[str]:
    return [v.rule for v in check_events(events, PROFILE)]


def test_a_modelled_mirror_and_a_cancelled_one_pass() -> None:
    clock = ManualClock()
    m = Machine(VmConfig(disks=(DiskConfig("vda", data=1 << 20),)), PROFILE, clock)
    out = list(m.execute("drive-mirror", {"device": "vda", "target": "/t", "sync": "full"}).events)
    clock.advance(1)
    out += m.poll()
    out += m.execute("job-complete", {"id": "vda"}).events
    out += m.poll()
    out += m.execute("drive-mirror", {"device": "vda", "target": "/u", "sync": "full"}).events
    out += m.execute("job-cancel", {"id": "vda"}).events
    out += m.poll()
    assert [e.name for e in out].count("JOB_STATUS_CHANGE") == 12
    assert check_events([e.to_json() for e in out], PROFILE) == []


def test_transitions_job_c_forbids_are_flagged() -> None:
    assert rules([job("created"), job("running"), job("ready"), job("standby"), job("ready")]) == []
    assert rules([job("created"), job("ready")]) == ["job-status"]
    assert rules([job("created"), job("running"), job("concluded")]) == ["job-status"]
    assert rules([job("created"), job("null"), job("created")]) == []  # a new job, same id
    # a job met half-way is taken as the stream finds it
    assert rules([job("waiting"), job("pending"), job("concluded"), job("null")]) == []


def test_job_events_must_come_in_their_state() -> None:
    running = [job("created"), job("running")]
    assert rules([*running, job("ready"), done("BLOCK_JOB_READY")]) == []
    assert rules([*running, done("BLOCK_JOB_READY")]) == ["job-events"]
    assert rules([*running, done("BLOCK_JOB_COMPLETED")]) == ["job-events"]
    assert rules([*running, job("aborting"), done("BLOCK_JOB_CANCELLED")]) == []
    pending = {"event": "BLOCK_JOB_PENDING", "data": {"type": "mirror", "id": "j"}}
    assert rules([*running, {**pending, "timestamp": _STAMP}]) == ["job-events"]


def test_a_tray_that_does_not_move_is_flagged() -> None:
    m = Machine(
        VmConfig(disks=(DiskConfig("cd", media="cdrom", file="/a.iso", qdev="cd0", device=""),)),
        PROFILE,
        ManualClock(),
    )
    opened = m.cause(TrayMoved("cd"))
    closed = m.cause(TrayMoved("cd", open=False))
    events = [e.to_json() for e in (*opened, *closed)]
    assert rules(events) == []
    assert rules([events[0], events[0]]) == ["tray"]
