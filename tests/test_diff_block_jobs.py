"""Block jobs against real QEMU 7.2 and 10.0: each kind's events, order and data, the job
commands' refusals, and the graph before and after.

The real side copies real data between real images; qmpsim's jobs copy theirs
on the virtual clock, so the tests compare states QEMU reaches
deterministically (a step waits for the event that ends it).  Masked besides
timestamps and node names' random digits: ``wr_highest_offset`` (what a job
wrote where is not modelled) and ``actual-size`` (what the host's file system
allocates for the data a job wrote).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from block_harness import host_image, make_image, pair, write_data
from qemu_harness import Referee

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events
from qmpsim.vm.machine import JobError

pytestmark = pytest.mark.qemu

HIDE = ("wr_highest_offset", "actual-size")
QUERIES = [
    ("query-block", {}),
    ("query-named-block-nodes", {}),
    ("query-blockstats", {}),
]


@pytest.fixture
def chain(tmp_path: Path) -> tuple[list[str], list[object], Path]:
    base = make_image(tmp_path / "base.qcow2", "qcow2", "64M")
    write_data(base, "qcow2", 0, 4 << 20)
    mid = make_image(tmp_path / "mid.qcow2", "qcow2", "64M", backing=Path(base))
    write_data(mid, "qcow2", 8 << 20, 2 << 20)
    top = make_image(tmp_path / "top.qcow2", "qcow2", "64M", backing=Path(mid))
    write_data(top, "qcow2", 16 << 20, 1 << 20)
    spare = make_image(tmp_path / "spare.qcow2", "qcow2", "64M")
    argv = ["-drive", f"file={top},format=qcow2,if=virtio"]
    return argv, [host_image(p) for p in (base, mid, top, spare)], tmp_path


def test_drive_mirror_reaches_ready_and_pivots(real_qemu: Referee, chain: tuple) -> None:
    argv, images, tmp = chain
    target = str(tmp / "mirror.qcow2")
    with pair(real_qemu, argv, images) as both:
        both.run(
            "drive-mirror",
            {"device": "virtio0", "target": target, "sync": "full"},
            until="BLOCK_JOB_READY",
        )
        both.run("query-jobs")
        both.run("query-block-jobs")
        both.run("job-complete", {"id": "virtio0"}, until="JOB_STATUS_CHANGE")
        both.sim.wait_for("BLOCK_JOB_COMPLETED", 0)
        both.real.wait_for("BLOCK_JOB_COMPLETED", 0)
        both.run("query-jobs")
        for command, args in QUERIES:
            both.run(command, args)
    both.compare(hide=HIDE)


def _finish(both: object, event: str = "BLOCK_JOB_COMPLETED") -> None:
    for side in (both.real, both.sim):  # type: ignore[attr-defined]
        side.wait_for(event, 0)
        side.wait_for("JOB_STATUS_CHANGE", len(side.messages) - 1)


@pytest.mark.parametrize(
    "command, args",
    [
        ("block-stream", {"device": "virtio0"}),
        ("block-stream", {"device": "virtio0", "job-id": "s", "base": "BASE"}),
        ("block-commit", {"device": "virtio0", "top": "MID"}),
        ("block-commit", {"device": "virtio0", "job-id": "c", "top": "MID", "base": "BASE"}),
    ],
    ids=["stream", "stream-to-base", "commit", "commit-to-base"],
)
def test_jobs_that_complete_on_their_own(
    real_qemu: Referee, chain: tuple, command: str, args: dict[str, object]
) -> None:
    argv, images, tmp = chain
    names = {"BASE": str(tmp / "base.qcow2"), "MID": str(tmp / "mid.qcow2")}
    args = {k: names.get(str(v), v) for k, v in args.items()}
    with pair(real_qemu, argv, images) as both:
        both.run(command, args, until="BLOCK_JOB_COMPLETED")
        both.real.wait_for("JOB_STATUS_CHANGE", len(both.real.messages) - 1)
        both.sim.wait_for("JOB_STATUS_CHANGE", len(both.sim.messages) - 1)
        both.run("query-jobs")
        for query, query_args in QUERIES:
            both.run(query, query_args)
    both.compare(hide=HIDE)


def test_active_commit_is_ready_then_pivots_to_the_base(real_qemu: Referee, chain: tuple) -> None:
    argv, images, _ = chain
    with pair(real_qemu, argv, images) as both:
        both.run("block-commit", {"device": "virtio0", "job-id": "ac"}, until="BLOCK_JOB_READY")
        both.run("query-block-jobs")
        both.run("job-complete", {"id": "ac"}, until="BLOCK_JOB_COMPLETED")
        both.real.wait_for("JOB_STATUS_CHANGE", len(both.real.messages) - 1)
        both.sim.wait_for("JOB_STATUS_CHANGE", len(both.sim.messages) - 1)
        for query, query_args in QUERIES:
            both.run(query, query_args)
    both.compare(hide=HIDE)


def test_backups_and_manual_finalize(real_qemu: Referee, chain: tuple) -> None:
    argv, images, tmp = chain
    spare = str(tmp / "spare.qcow2")
    with pair(real_qemu, argv, images) as both:
        both.run(
            "drive-backup",
            {"device": "virtio0", "target": str(tmp / "backup.qcow2"), "sync": "full"},
            until="BLOCK_JOB_COMPLETED",
        )
        both.real.wait_for("JOB_STATUS_CHANGE", len(both.real.messages) - 1)
        both.sim.wait_for("JOB_STATUS_CHANGE", len(both.sim.messages) - 1)
        both.run(
            "blockdev-add",
            {"driver": "qcow2", "node-name": "bk", "file": {"driver": "file", "filename": spare}},
        )
        both.run(
            "blockdev-backup",
            {
                "device": "virtio0",
                "job-id": "b",
                "target": "bk",
                "sync": "full",
                "auto-finalize": False,
                "auto-dismiss": False,
            },
            until="BLOCK_JOB_PENDING",
        )
        both.run("query-jobs")
        both.run("query-block-jobs")
        both.run("job-dismiss", {"id": "b"})
        both.run("job-finalize", {"id": "b"})
        both.run("query-jobs")
        both.run("job-finalize", {"id": "b"})
        both.run("job-dismiss", {"id": "b"})
        both.run(
            "blockdev-backup",
            {
                "device": "virtio0",
                "job-id": "b2",
                "target": "bk",
                "sync": "full",
                "auto-finalize": False,
            },
            until="BLOCK_JOB_PENDING",
        )
        both.run("job-cancel", {"id": "b2"})
        both.run("query-jobs")
        for query, query_args in QUERIES:
            both.run(query, query_args)
    both.compare(hide=HIDE)
    # the checker's job rules are QEMU's: the real stream passes them
    real_events = [m for m in both.real.messages if "event" in m]
    assert check_events(real_events, get_profile(real_qemu.profile)) == []


def test_job_commands_and_their_refusals(real_qemu: Referee, chain: tuple) -> None:
    argv, images, tmp = chain
    spare = str(tmp / "spare.qcow2")
    with pair(real_qemu, argv, images) as both:
        both.run(
            "blockdev-add",
            {"driver": "qcow2", "node-name": "t", "file": {"driver": "file", "filename": spare}},
        )
        for command, args in [
            ("job-pause", {"id": "nojob"}),
            ("job-resume", {"id": "nojob"}),
            ("job-cancel", {"id": "nojob"}),
            ("job-complete", {"id": "nojob"}),
            ("job-finalize", {"id": "nojob"}),
            ("job-dismiss", {"id": "nojob"}),
            ("block-job-pause", {"device": "nojob"}),
            ("block-job-resume", {"device": "nojob"}),
            ("block-job-cancel", {"device": "nojob"}),
            ("block-job-complete", {"device": "nojob"}),
            ("block-job-set-speed", {"device": "nojob", "speed": 1}),
            (
                "blockdev-mirror",
                {"device": "virtio0", "job-id": "9x", "target": "t", "sync": "full"},
            ),
            ("blockdev-mirror", {"device": "virtio0", "job-id": "", "target": "t", "sync": "full"}),
            ("blockdev-mirror", {"device": "virtio0", "target": "t", "sync": "full", "speed": -1}),
            ("blockdev-mirror", {"device": "virtio0", "target": "virtio0", "sync": "full"}),
            ("blockdev-mirror", {"device": "nodev", "target": "t", "sync": "full"}),
            ("blockdev-mirror", {"device": "virtio0", "target": "nonode", "sync": "full"}),
            ("block-stream", {"device": "virtio0", "base": "/nonexistent"}),
            ("block-stream", {"device": "virtio0", "backing-file": "/x"}),
            ("block-commit", {"device": "virtio0", "top": "/nonexistent"}),
            ("block-commit", {"device": "virtio0", "base": "/nonexistent"}),
            ("block-commit", {"device": "virtio0", "backing-file": "/x"}),
            ("query-named-block-nodes", {"flat": True}),
        ]:
            both.run(command, args)
        # a mirror at one byte per second stays running until told otherwise
        both.run(
            "blockdev-mirror",
            {"device": "virtio0", "job-id": "m", "target": "t", "sync": "full", "speed": 1},
        )
        both.run(
            "blockdev-mirror", {"device": "virtio0", "job-id": "m", "target": "t", "sync": "full"}
        )
        both.run("block-stream", {"device": "virtio0", "job-id": "m"})
        both.run("job-complete", {"id": "m"})
        both.run("job-finalize", {"id": "m"})
        both.run("job-dismiss", {"id": "m"})
        both.run("block-job-set-speed", {"device": "m", "speed": -1})
        both.run("block-job-resume", {"device": "m"})
        both.real.settle("query-block-jobs", lambda jobs: jobs[0]["offset"] > 0)
        both.run("job-pause", {"id": "m"}, until="JOB_STATUS_CHANGE")
        # a mirror sleeping off its rate limit pauses before the reply, one still copying
        # after it: which one QEMU is in at that moment is a race, so that order is not compared
        for side in (both.real, both.sim):
            paused = side.messages[-1] if "event" in side.messages[-1] else side.messages[-2]
            side.messages.remove(paused)
            side.messages.append(paused)
        both.run("job-pause", {"id": "m"})
        both.run("job-resume", {"id": "m"})
        both.run("block-job-set-speed", {"device": "m", "speed": 0}, until="BLOCK_JOB_READY")
        both.run("block-job-pause", {"device": "m"})
        both.run("query-block-jobs")
        both.run("block-job-complete", {"device": "m"})
        both.run("block-job-resume", {"device": "m"}, until="BLOCK_JOB_COMPLETED")
        for side in (both.real, both.sim):
            side.wait_for("JOB_STATUS_CHANGE", len(side.messages) - 1)
        both.run("block-job-cancel", {"device": "m"})
        both.run("query-block")
    both.compare(hide=HIDE)


def test_cancelling_mirrors(real_qemu: Referee, chain: tuple) -> None:
    argv, images, tmp = chain
    spare = str(tmp / "spare.qcow2")
    with pair(real_qemu, argv, images) as both:
        both.run(
            "blockdev-add",
            {"driver": "qcow2", "node-name": "t", "file": {"driver": "file", "filename": spare}},
        )
        # running: cancelled
        both.run(
            "blockdev-mirror",
            {"device": "virtio0", "job-id": "a", "target": "t", "sync": "full", "speed": 1},
        )
        both.run("block-job-cancel", {"device": "a"}, until="BLOCK_JOB_CANCELLED")
        both.real.wait_for("JOB_STATUS_CHANGE", len(both.real.messages) - 1)
        both.sim.wait_for("JOB_STATUS_CHANGE", len(both.sim.messages) - 1)
        # ready, cancelled softly: completed without the pivot
        both.run(
            "blockdev-mirror",
            {
                "device": "virtio0",
                "job-id": "b",
                "target": "t",
                "sync": "full",
                "auto-dismiss": False,
            },
            until="BLOCK_JOB_READY",
        )
        both.run("block-job-cancel", {"device": "b"}, until="BLOCK_JOB_COMPLETED")
        both.real.wait_for("JOB_STATUS_CHANGE", len(both.real.messages) - 1)
        both.sim.wait_for("JOB_STATUS_CHANGE", len(both.sim.messages) - 1)
        both.run("query-jobs")
        both.run("job-cancel", {"id": "b"})
        both.run("job-dismiss", {"id": "b"})
        # ready, cancelled by force
        both.run(
            "drive-mirror",
            {"device": "virtio0", "target": str(tmp / "m.qcow2"), "sync": "top"},
            until="BLOCK_JOB_READY",
        )
        both.run("query-named-block-nodes")
        both.run("job-cancel", {"id": "virtio0"}, until="BLOCK_JOB_CANCELLED")
        both.real.wait_for("JOB_STATUS_CHANGE", len(both.real.messages) - 1)
        both.sim.wait_for("JOB_STATUS_CHANGE", len(both.sim.messages) - 1)
        for query, query_args in QUERIES:
            both.run(query, query_args)
    both.compare(hide=HIDE)
    real_events = [m for m in both.real.messages if "event" in m]
    assert check_events(real_events, get_profile(real_qemu.profile)) == []


@pytest.mark.parametrize("policy", ["stop", "report"])
def test_an_io_error_half_way_follows_the_jobs_policy(
    real_qemu: Referee, chain: tuple, policy: str
) -> None:
    """The real target fails one write (blkdebug); qmpsim's job undergoes a JobError.

    Which of the mirror's requests in flight fails decides how far QEMU's ``offset``
    got, so ``offset`` and ``current-progress`` are not compared here; the graphs
    differ by the blkdebug node, so only the job's side is."""
    argv, images, tmp = chain
    spare = make_image(tmp / "bad.img", "raw", "64M")
    image = {"driver": "file", "filename": spare}
    blkdebug = {
        "driver": "blkdebug",
        "inject-error": [{"event": "write_aio", "errno": 5, "once": True}],
        "image": image,
    }
    start = {"device": "virtio0", "job-id": "j", "target": "bad", "sync": "full",
             "on-target-error": policy}  # fmt: skip
    with pair(real_qemu, argv, [*images, host_image(spare)]) as both:
        both.real.execute("blockdev-add", {"driver": "raw", "node-name": "bad", "file": blkdebug})
        both.sim.execute("blockdev-add", {"driver": "raw", "node-name": "bad", "file": image})
        both.run("blockdev-mirror", start)
        both.real.wait_for("BLOCK_JOB_ERROR", 0)
        both.sim.cause(JobError("j", "write"))
        if policy == "stop":
            for side in (both.real, both.sim):
                side.wait_for("JOB_STATUS_CHANGE", len(side.messages) - 1)
            both.run("query-block-jobs")
            both.run("query-jobs")
            both.run("block-job-pause", {"device": "j"})
            both.run("block-job-resume", {"device": "j"}, until="BLOCK_JOB_READY")
            both.run("query-block-jobs")
            both.run(
                "block-job-cancel", {"device": "j", "force": True}, until="BLOCK_JOB_CANCELLED"
            )
        else:
            for side in (both.real, both.sim):
                side.wait_for("BLOCK_JOB_COMPLETED", 0)
        for side in (both.real, both.sim):
            side.wait_for("JOB_STATUS_CHANGE", len(side.messages) - 1)
        both.run("query-jobs")
    both.compare(hide=(*HIDE, "offset", "current-progress"))
