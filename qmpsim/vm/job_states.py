"""A block job and the states it moves through: QEMU's ``JobStatus`` and ``job.c``'s tables.

:data:`JOB_MOVES` (``JobSTT``) says where a job may go from each state, and
:func:`may_move` asks it: the jobs component (:mod:`qmpsim.vm.jobs`) refuses any other
move, and the conformance checker holds JOB_STATUS_CHANGE streams to the same question.
:data:`JOB_VERBS` (``JobVerbTable``) says in which states each verb is accepted, and
:data:`BLOCK_JOB_EVENTS` in which states each BLOCK_JOB_* event about a job is sent.
:class:`Job` is one job's record, which the jobs component moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .block_errors import OnError
from .nodes import Node

UNLIMITED_RATE = 1 << 30
"""Bytes per second a job without a speed limit copies (a local disk's pace)."""


class JobStatus(StrEnum):
    """QEMU's ``JobStatus`` (JOB_STATUS_CHANGE's and ``query-jobs``' ``status``)."""

    UNDEFINED = "undefined"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    READY = "ready"
    STANDBY = "standby"
    WAITING = "waiting"
    PENDING = "pending"
    ABORTING = "aborting"
    CONCLUDED = "concluded"
    NULL = "null"


_S = JobStatus

JOB_MOVES: Mapping[JobStatus, frozenset[JobStatus]] = {
    _S.UNDEFINED: frozenset({_S.CREATED}),
    _S.CREATED: frozenset({_S.RUNNING, _S.ABORTING, _S.NULL}),
    _S.RUNNING: frozenset({_S.PAUSED, _S.READY, _S.WAITING, _S.ABORTING}),
    _S.PAUSED: frozenset({_S.RUNNING}),
    _S.READY: frozenset({_S.STANDBY, _S.WAITING, _S.ABORTING}),
    _S.STANDBY: frozenset({_S.READY}),
    _S.WAITING: frozenset({_S.PENDING, _S.ABORTING}),
    _S.PENDING: frozenset({_S.ABORTING, _S.CONCLUDED}),
    _S.ABORTING: frozenset({_S.ABORTING, _S.CONCLUDED}),
    _S.CONCLUDED: frozenset({_S.NULL}),
    _S.NULL: frozenset({_S.CREATED}),  # a new job with the same id
}
"""``job.c``'s JobSTT: the states a job may go to from each state."""


def may_move(before: str, after: str) -> bool:
    """Whether a job may go from ``before`` to ``after`` (:data:`JOB_MOVES`; a state
    QEMU does not have goes nowhere)."""
    # the table is read at each call, so that a test that patches it is followed by
    # the jobs component and the checker alike
    try:
        moves = JOB_MOVES[JobStatus(before)]
    except (ValueError, KeyError):
        return False
    return after in moves


JOB_VERBS: Mapping[str, frozenset[JobStatus]] = {
    "cancel": frozenset(
        {_S.CREATED, _S.RUNNING, _S.PAUSED, _S.READY, _S.STANDBY, _S.WAITING, _S.PENDING}
    ),
    "pause": frozenset({_S.CREATED, _S.RUNNING, _S.PAUSED, _S.READY, _S.STANDBY}),
    "resume": frozenset({_S.CREATED, _S.RUNNING, _S.PAUSED, _S.READY, _S.STANDBY}),
    "set-speed": frozenset({_S.CREATED, _S.RUNNING, _S.PAUSED, _S.READY, _S.STANDBY}),
    "complete": frozenset({_S.READY, _S.STANDBY}),
    "finalize": frozenset({_S.PENDING}),
    "dismiss": frozenset({_S.CONCLUDED}),
}
"""``job.c``'s JobVerbTable: the states in which each verb is accepted."""

BLOCK_JOB_EVENTS: Mapping[str, tuple[JobStatus, ...]] = {
    "BLOCK_JOB_READY": (_S.READY,),
    "BLOCK_JOB_PENDING": (_S.PENDING,),
    "BLOCK_JOB_COMPLETED": (_S.PENDING, _S.ABORTING),
    "BLOCK_JOB_CANCELLED": (_S.PENDING, _S.ABORTING),
}
"""The states a job is in when QEMU sends each of these events about it: the jobs
component sends them only there, and the checker expects them only there."""


class GraphChanges(Protocol):
    """What a kind of job does to the graph (:mod:`qmpsim.vm.job_kinds` says)."""

    def synced(self, job: Job) -> None:
        """It has copied everything (a mirror's target holds the data)."""

    def commit(self, job: Job) -> None:
        """It succeeded: a mirror's pivot, a stream's and a commit's new backing."""

    def abort(self, job: Job) -> None:
        """It failed, or a mirror stopped without its pivot: the graph as before."""


@dataclass(frozen=True)
class DirtyBitmaps:
    """The dirty bitmaps a job keeps on a node, as ``dirty-bitmaps`` counts them: what
    it has still to copy (recording or not), then empty ones."""

    job: Job
    recording: bool = False
    empty: int = 0

    def __call__(self) -> list[tuple[int, bool]]:
        job = self.job
        # a mirror's bitmap counts the data it has yet to copy; a backup's, the part of
        # the disk it has yet to go through
        left = round(job.data * (1.0 - job.progress)) if job.readies else job.length - job.offset
        return [(left, self.recording)] + [(0, False)] * self.empty


@dataclass(eq=False)
class Job:
    """One block job and where it is."""

    id: str
    type: str
    """``mirror``, ``commit``, ``stream`` or ``backup`` (query-jobs' ``type``)."""
    length: int
    data: int
    """The bytes it really copies (unallocated areas cost no time)."""
    speed: int = 0
    readies: bool = False
    """A mirror (or active commit): ready once synchronised, until completed or cancelled."""
    auto_finalize: bool = True
    auto_dismiss: bool = True
    on_source_error: str = OnError.REPORT
    on_target_error: str = OnError.REPORT
    status: JobStatus = JobStatus.UNDEFINED
    """Where it is: undefined until the jobs component starts it."""
    progress: float = 0.0
    """The share of the work done, 0 to 1 (``offset`` is that share of ``len``)."""
    since: float = 0.0
    user_paused: bool = False
    should_complete: bool = False
    cancelled: bool = False
    force: bool = False
    io_status: str = "ok"
    error: str | None = None
    graph: GraphChanges | None = None
    """What the job does to the block graph as it goes."""
    plan: Any = None
    """The nodes ``graph`` works with (plain data, so that a saved machine can be
    copied by pickling: no closures)."""
    nodes: list[Node] = field(default_factory=list)
    """The nodes it works on (blocked for other jobs)."""
    endless: bool = False
    """A backup with ``sync: none``: it copies only what the guest overwrites, until
    it is cancelled."""

    @property
    def offset(self) -> int:
        return round(self.length * self.progress)

    @property
    def rate(self) -> int:
        return self.speed or UNLIMITED_RATE

    @property
    def moving(self) -> bool:
        """Whether it copies now (not paused, not yet synchronised)."""
        return self.status == JobStatus.RUNNING and self.progress < 1.0 and not self.endless

    # --- what QMP shows of it ---------------------------------------------------------

    def event_data(self, *, error: bool = False) -> dict[str, Any]:
        """BLOCK_JOB_READY's, _COMPLETED's and _CANCELLED's data (``error``: with the
        error it ended on, if any)."""
        data: dict[str, Any] = {"type": self.type, "device": self.id, "len": self.length}
        data["offset"] = self.offset
        data["speed"] = self.speed
        if error and self.error is not None:
            data["error"] = self.error
        return data

    def job_info(self) -> dict[str, Any]:
        """Its ``JobInfo`` (``query-jobs``)."""
        info: dict[str, Any] = {"id": self.id, "type": self.type, "status": self.status.value}
        info["current-progress"] = self.offset
        info["total-progress"] = self.length
        if self.error is not None:
            info["error"] = self.error
        return info

    def block_job_info(self, *, actively_synced: bool) -> dict[str, Any]:
        """Its ``BlockJobInfo`` (``query-block-jobs``; ``actively_synced``: the QEMU
        shows a mirror's ``actively-synced``, 8.2 on)."""
        info: dict[str, Any] = {"type": self.type, "device": self.id, "len": self.length}
        info["offset"] = self.offset
        info["busy"] = False
        # paused while paused by the user or an error, and a mirror waiting in
        # pending (its source is still drained)
        info["paused"] = self.user_paused or (self.readies and self.status == JobStatus.PENDING)
        info["speed"] = self.speed
        info["io-status"] = self.io_status
        info["ready"] = self.status in (JobStatus.READY, JobStatus.STANDBY)
        info["status"] = self.status.value
        info["auto-finalize"] = self.auto_finalize
        info["auto-dismiss"] = self.auto_dismiss
        if self.error is not None:
            info["error"] = self.error
        if self.type == "mirror" and actively_synced:
            info["actively-synced"] = False
        return info
