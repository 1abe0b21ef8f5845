"""Block jobs without a real QEMU: progress on the virtual clock and I/O errors mid-job.

(The events, their order and data are compared with QEMU in tests/test_diff_block_jobs.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.machine import (
    DiskConfig,
    ImageConfig,
    JobError,
    Machine,
    MachineError,
    ManualClock,
    VmConfig,
)

MIB = 1 << 20


def machine(profile: str = "qemu-7.2") -> tuple[Machine, ManualClock]:
    disk = DiskConfig("vda", file="/srv/vda.qcow2", virtual_size=64 * MIB, data=32 * MIB)
    target = ImageConfig("/srv/target.qcow2", virtual_size=64 * MIB)
    clock = ManualClock()
    vm = VmConfig(disks=(disk,), images=(target,))
    return Machine(vm, get_profile(profile), clock), clock


def statuses(events: Any) -> list[str]:
    return [
        e.data["status"] if e.name == "JOB_STATUS_CHANGE" else e.name
        for e in events
        if e.data is None or e.name != "BLOCK_JOB_ERROR"
    ] + [f"ERROR:{e.data['action']}" for e in events if e.name == "BLOCK_JOB_ERROR"]


def run_until_idle(m: Machine, clock: ManualClock, limit: float = 600.0) -> list[Any]:
    out: list[Any] = []
    while (deadline := m.next_deadline()) is not None and deadline - clock.now < limit:
        clock.now = max(clock.now, deadline)
        out += m.poll()
    return out


def add_target(m: Machine) -> None:
    file = {"driver": "file", "filename": "/srv/target.qcow2"}
    assert (
        m.execute("blockdev-add", {"driver": "qcow2", "node-name": "t", "file": file}).reply == {}
    )


def test_offset_grows_with_speed_on_the_virtual_clock() -> None:
    m, clock = machine()
    add_target(m)
    args = {"device": "vda", "job-id": "j", "target": "t", "sync": "full", "speed": 8 * MIB}
    started = m.execute("blockdev-mirror", args)
    assert statuses(started.events) == ["created", "running"]
    # the first 16 MiB buffer goes before the rate limit applies; then the disk's 32 MiB
    # of data (spread over its 64 MiB) at 8 MiB/s: a quarter of the disk a second
    (job,) = m.execute("query-block-jobs", {}).reply
    assert (job["offset"], job["len"], job["speed"]) == (16 * MIB, 64 * MIB, 8 * MIB)
    clock.advance(2)
    (job,) = m.execute("query-jobs", {}).reply
    assert job["current-progress"] == 48 * MIB
    m.execute("block-job-set-speed", {"device": "j", "speed": 16 * MIB})
    clock.advance(0.25)
    assert m.execute("query-jobs", {}).reply[0]["current-progress"] == 56 * MIB
    events = run_until_idle(m, clock)
    assert statuses(events) == ["ready", "BLOCK_JOB_READY"]
    assert m.next_deadline() is None  # ready until completed


def test_a_paused_job_makes_no_progress() -> None:
    m, clock = machine()
    add_target(m)
    m.execute(
        "blockdev-mirror",
        {"device": "vda", "job-id": "j", "target": "t", "sync": "full", "speed": MIB},
    )
    paused = m.execute("job-pause", {"id": "j"})
    assert statuses(paused.events) == ["paused"]
    before = m.execute("query-jobs", {}).reply[0]["current-progress"]
    clock.advance(100)
    assert m.execute("query-jobs", {}).reply[0]["current-progress"] == before
    assert m.execute("query-block-jobs", {}).reply[0]["paused"] is True
    assert statuses(m.execute("job-resume", {"id": "j"}).events) == ["running"]


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("report", ["ERROR:report", "aborting", "BLOCK_JOB_COMPLETED", "concluded", "null"]),
        ("ignore", ["ERROR:ignore"]),
        ("stop", ["ERROR:stop", "paused"]),
    ],
)
def test_a_job_that_fails_half_way_follows_its_error_policy(
    policy: str, expected: list[str]
) -> None:
    m, clock = machine()
    add_target(m)
    m.execute(
        "blockdev-mirror",
        {"device": "vda", "job-id": "j", "target": "t", "sync": "full", "on-target-error": policy},
    )
    clock.advance(0.01)
    events = m.cause(JobError("j", "write")) + m.poll()
    assert sorted(statuses(events)) == sorted(expected)
    completed = [e for e in events if e.name == "BLOCK_JOB_COMPLETED"]
    if completed:
        assert completed[0].data["error"] == "Input/output error"
    if policy == "stop":
        (job,) = m.execute("query-block-jobs", {}).reply
        assert (job["io-status"], job["paused"], job["status"]) == ("failed", True, "paused")
        resumed = m.execute("block-job-resume", {"device": "j"})
        assert statuses(resumed.events) == ["running"]
        assert m.execute("query-block-jobs", {}).reply[0]["io-status"] == "ok"
        assert statuses(run_until_idle(m, clock)) == ["ready", "BLOCK_JOB_READY"]


def test_job_errors_need_a_running_job() -> None:
    m, _clock = machine()
    with pytest.raises(MachineError, match="no block job 'j'"):
        m.cause(JobError("j"))
    add_target(m)
    m.execute("blockdev-mirror", {"device": "vda", "job-id": "j", "target": "t", "sync": "full"})
    m.execute("job-pause", {"id": "j"})
    m.poll()
    with pytest.raises(MachineError, match="only a running job does I/O"):
        m.cause(JobError("j"))


def test_a_mirror_completes_to_its_target_and_the_graph_follows() -> None:
    m, clock = machine("qemu-10.0")
    m.execute("drive-mirror", {"device": "vda", "target": "/srv/new.qcow2", "sync": "full"})
    assert "BLOCK_JOB_READY" in statuses(run_until_idle(m, clock))
    m.execute("job-complete", {"id": "vda"})
    assert statuses(m.poll()) == [
        "waiting",
        "pending",
        "BLOCK_JOB_COMPLETED",
        "concluded",
        "null",
    ]
    (disk,) = m.execute("query-block", {}).reply
    assert disk["inserted"]["file"] == "/srv/new.qcow2"
    files = {n["file"] for n in m.execute("query-named-block-nodes", {}).reply}
    assert files == {"/srv/new.qcow2"}
    assert m.execute("query-jobs", {}).reply == []
