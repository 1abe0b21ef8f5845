"""Walks and strategies draw block job lifecycles: a mirror's start, ready, completion,
cancel and errors half-way, each stream obeying the checker's job rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.testing import walk
from qmpsim.testing.conformance import check_events
from qmpsim.testing.strategies import event_streams
from qmpsim.vm.machine import DiskConfig, VmConfig

VM = VmConfig(disks=(DiskConfig("vda", data=1 << 30), DiskConfig("vdb")))
JOBS = ["drive-mirror", "job-complete", "job-cancel", "job-error", "disk-io"]


def test_seeded_walks_go_through_whole_mirror_lifecycles() -> None:
    names: set[str] = set()
    statuses: set[str] = set()
    for seed in range(12):
        stream = walk.generate(seed=seed, count=40, vm=VM, causes=JOBS)
        assert check_events(stream, "qemu-7.2") == []
        names |= {e["event"] for e in stream}
        statuses |= {e["data"]["status"] for e in stream if e["event"] == "JOB_STATUS_CHANGE"}
    assert {"BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"} <= names
    assert "BLOCK_JOB_ERROR" in names
    assert {"created", "running", "ready", "waiting", "pending", "aborting", "null"} <= statuses


@settings(max_examples=25, deadline=None)
@given(event_streams(vm=VM, causes=JOBS, max_size=30))
def test_drawn_job_streams_are_conformant(stream: list[dict[str, object]]) -> None:
    assert check_events(stream, "qemu-7.2") == []


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**16))
def test_a_walk_with_jobs_in_flight_can_be_saved_and_undone(seed: int) -> None:
    # near its size limit the walk saves the machine (pickled) before each move
    stream = walk.generate(seed=seed, count=8, vm=VM, causes=JOBS)
    assert len(stream) <= 8
    assert check_events(stream, "qemu-7.2") == []
