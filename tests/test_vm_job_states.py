"""A block job's states (qmpsim.vm.job_states): one table, asked by the jobs and the checker."""

from __future__ import annotations

from typing import Any

import pytest
from test_conformance import ev

from qmpsim.qmp.profiles import get_profile
from qmpsim.qmp.schema import Enum
from qmpsim.qmp.wire import encode_message
from qmpsim.testing.conformance import check_events
from qmpsim.vm import job_states
from qmpsim.vm.job_states import BLOCK_JOB_EVENTS, JOB_MOVES, Job, JobStatus
from qmpsim.vm.jobs import Jobs
from qmpsim.vm.machine import DiskConfig, Machine, ManualClock, VmConfig
from qmpsim.vm.values import MachineError

S = JobStatus


def violations(events: list[dict[str, Any]]) -> list[str]:
    return [v.rule for v in check_events(events, "qemu-7.2", initial_status="running")]


def statuses(job: str, *names: str) -> list[dict[str, Any]]:
    return [ev("JOB_STATUS_CHANGE", t, {"id": job, "status": name}) for t, name in enumerate(names)]


def mirror(machine: Machine) -> list[dict[str, Any]]:
    """Mirror an empty disk: synchronised at once, so ready before the reply."""
    outcome = machine.execute(
        "drive-mirror", {"device": "drive0", "target": "/tmp/copy.qcow2", "sync": "full"}
    )
    assert outcome.reply == {}
    return [dict(e.message()) for e in outcome.events]


def empty_disk_vm() -> Machine:
    return Machine(VmConfig(cpus=1, disks=(DiskConfig("drive0"),)), clock=ManualClock())


def test_the_statuses_are_qemus() -> None:
    schema = get_profile("qemu-7.2").events["JOB_STATUS_CHANGE"].data
    assert schema is not None
    (status,) = (f.type for f in schema.fields if f.name == "status")
    assert isinstance(status, Enum)
    assert tuple(JobStatus) == status.values
    assert set(JOB_MOVES) == set(JobStatus)


def test_the_wire_carries_plain_strings() -> None:
    machine = empty_disk_vm()
    events = mirror(machine)
    changes = [e["data"] for e in events if e["event"] == "JOB_STATUS_CHANGE"]
    assert [type(c["status"]) for c in changes] == [str, str, str]
    assert encode_message(events[0])[0].endswith(
        b'"event": "JOB_STATUS_CHANGE", "data": {"status": "created", "id": "drive0"}}\r\n'
    )
    reply = machine.execute("query-jobs", {}).reply
    assert isinstance(reply, list)
    (info,) = reply
    assert type(info["status"]) is str and info["status"] == "ready"


def test_a_move_the_table_forbids_is_refused_by_the_jobs_and_the_checker() -> None:
    assert S.CONCLUDED not in JOB_MOVES[S.RUNNING]
    job = Job(id="j", type="mirror", length=1, data=1, status=S.RUNNING)
    jobs = empty_disk_vm().part(Jobs)
    with pytest.raises(MachineError, match="cannot go from running to concluded"):
        jobs._status(job, S.CONCLUDED)
    assert violations(statuses("j", "created", "running", "concluded")) == ["job-status"]
    assert [e.data for e in jobs._status(job, S.READY)] == [{"id": "j", "status": "ready"}]


def test_the_jobs_and_the_checker_ask_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = empty_disk_vm()
    events = mirror(machine)
    assert [e["data"]["status"] for e in events if e["event"] == "JOB_STATUS_CHANGE"] == [
        "created",
        "running",
        "ready",
    ]
    assert violations(events) == []
    # take the move running -> ready out of the table: the next mirror cannot get
    # ready, and the same stream breaks the checker's rule
    patched = dict(JOB_MOVES)
    patched[S.RUNNING] = patched[S.RUNNING] - {S.READY}
    monkeypatch.setattr(job_states, "JOB_MOVES", patched)
    with pytest.raises(MachineError, match="cannot go from running to ready"):
        mirror(empty_disk_vm())
    assert violations(events) == ["job-status"]
    # and grant running -> concluded: both allow it
    patched[S.RUNNING] = patched[S.RUNNING] | {S.CONCLUDED}
    job = Job(id="j", type="mirror", length=1, data=1, status=S.RUNNING)
    assert [e.data for e in machine.part(Jobs)._status(job, S.CONCLUDED)] == [
        {"id": "j", "status": "concluded"}
    ]
    assert violations(statuses("j", "created", "running", "concluded")) == []


def test_a_job_is_created_through_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # starting a job is a move like any other: from undefined, which leads only to created
    patched = {**JOB_MOVES, S.UNDEFINED: frozenset[JobStatus]()}
    job = Job(id="j", type="mirror", length=1, data=1)
    assert job.status == S.UNDEFINED
    jobs = empty_disk_vm().part(Jobs)
    monkeypatch.setattr(job_states, "JOB_MOVES", patched)
    with pytest.raises(MachineError, match="cannot go from undefined to created"):
        jobs.early_fail(job)
    assert violations(statuses("j", "created", "null")) == ["job-status"]
    monkeypatch.undo()
    assert [e.message()["data"]["status"] for e in jobs.early_fail(job)] == ["created", "null"]


def test_block_job_events_come_only_where_the_table_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready = ev("BLOCK_JOB_READY", 3, {"device": "j", "len": 0, "offset": 0, "speed": 0})
    ready["data"]["type"] = "mirror"
    stream = [*statuses("j", "created", "running"), ready]
    assert violations(stream) == ["job-events"]
    assert violations([*statuses("j", "created", "running", "ready"), ready]) == []
    # a table that sends BLOCK_JOB_READY only on standby: the mirror may not send it,
    # and the checker wants it there
    monkeypatch.setitem(BLOCK_JOB_EVENTS, "BLOCK_JOB_READY", (S.STANDBY,))
    with pytest.raises(MachineError, match="cannot send BLOCK_JOB_READY while ready"):
        mirror(empty_disk_vm())
    assert violations([*statuses("j", "created", "running", "ready"), ready]) == ["job-events"]
