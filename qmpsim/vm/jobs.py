"""Block jobs: QEMU's job state machine, on the virtual clock.

A job (``drive-mirror``/``blockdev-mirror``, ``block-commit``, ``block-stream``,
``drive-backup``/``blockdev-backup``; :mod:`qmpsim.vm.job_kinds` starts them)
moves through QEMU's states — created, running, paused, ready, standby, waiting,
pending, aborting, concluded, null — with a JOB_STATUS_CHANGE at each step, as
``job.c``'s transition and verb tables allow.  It copies its data at ``speed``
bytes per second (an unlimited job at :data:`UNLIMITED_RATE`), so ``query-jobs``
and ``query-block-jobs`` see ``offset`` grow with virtual time; a mirror (or an
active commit) that has copied everything is ready (BLOCK_JOB_READY) until it is
completed or cancelled; the others complete on their own.  Finishing goes
through waiting and pending (BLOCK_JOB_PENDING when ``auto-finalize`` is off)
to BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED, concluded and (unless
``auto-dismiss`` is off) null.  I/O errors during a job (:class:`JobError`)
follow its ``on-source-error``/``on-target-error`` policy with BLOCK_JOB_ERROR.

What happens at once in QEMU comes before the reply; what the job's coroutine
does next (a mirror completing, a pause taking effect, a cancel) comes right
after it.  ``tests/test_diff_block_jobs.py`` compares both with QEMU 7.2 and 10.0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .block_errors import ErrorAction, error_action
from .component import Component, on_cause, on_command
from .nodes import Node
from .values import CommandError, Event, MachineError, Outcome

UNLIMITED_RATE = 1 << 30
"""Bytes per second a job without a speed limit copies (a local disk's pace)."""

JOB_MOVES: Mapping[str, frozenset[str]] = {
    "undefined": frozenset({"created"}),
    "created": frozenset({"running", "aborting", "null"}),
    "running": frozenset({"paused", "ready", "waiting", "aborting"}),
    "paused": frozenset({"running"}),
    "ready": frozenset({"standby", "waiting", "aborting"}),
    "standby": frozenset({"ready"}),
    "waiting": frozenset({"pending", "aborting"}),
    "pending": frozenset({"aborting", "concluded"}),
    "aborting": frozenset({"aborting", "concluded"}),
    "concluded": frozenset({"null"}),
    "null": frozenset({"created"}),  # a new job with the same id
}
"""``job.c``'s JobSTT: the states a job may go to from each state.  The jobs here move
only as it allows; the conformance checker holds JOB_STATUS_CHANGE streams to it."""

# job.c's JobVerbTable: the states in which each verb is accepted
_VERBS = {
    "cancel": ("created", "running", "paused", "ready", "standby", "waiting", "pending"),
    "pause": ("created", "running", "paused", "ready", "standby"),
    "resume": ("created", "running", "paused", "ready", "standby"),
    "set-speed": ("created", "running", "paused", "ready", "standby"),
    "complete": ("ready", "standby"),
    "finalize": ("pending",),
    "dismiss": ("concluded",),
}
_STRERROR = {False: "Input/output error", True: "No space left on device"}
_CANCELED = "Operation canceled"


@dataclass(frozen=True)
class JobError:
    """An I/O error hits the job ``job`` (its id) reading its source or writing its
    target; the job's ``on-source-error``/``on-target-error`` (``on-error``) decides."""

    job: str
    operation: str = "write"  # "read" (the source) | "write" (the target)
    nospace: bool = False


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
    on_source_error: str = "report"
    on_target_error: str = "report"
    status: str = "created"
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
        return self.status == "running" and self.progress < 1.0 and not self.endless


class Jobs(Component):
    """The VM's block jobs, newest first (the order QEMU lists them in)."""

    def reset(self) -> None:
        self.jobs: list[Job] = []
        self._soon: list[tuple[Job, str]] = []

    # --- lookups ----------------------------------------------------------------------

    def find(self, job_id: str) -> Job | None:
        """The job ``job_id`` (until it is dismissed)."""
        return next((j for j in self.jobs if j.id == job_id), None)

    def _job(self, args: Mapping[str, Any]) -> Job | CommandError:
        job = self.find(str(args.get("id")))
        return job if job is not None else CommandError("GenericError", "Job not found")

    def _block_job(self, args: Mapping[str, Any], key: str = "device") -> Job | CommandError:
        name = str(args.get(key))
        job = self.find(name)
        if job is None:
            return CommandError("DeviceNotActive", f"Block job '{name}' not found")
        return job

    @staticmethod
    def _verb(job: Job, verb: str) -> CommandError | None:
        if job.status in _VERBS[verb]:
            return None
        return CommandError(
            "GenericError",
            f"Job '{job.id}' in state '{job.status}' cannot accept command verb '{verb}'",
        )

    # --- events -------------------------------------------------------------------------

    def _status(self, job: Job, status: str) -> list[Event]:
        if job.status == status:
            return []
        if status not in JOB_MOVES[job.status]:  # job_state_transition() asserts it
            raise MachineError(f"job {job.id!r} cannot go from {job.status} to {status}")
        job.status = status
        return [self.host.event("JOB_STATUS_CHANGE", {"id": job.id, "status": status})]

    def _data(self, job: Job, *, error: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"type": job.type, "device": job.id, "len": job.length}
        data["offset"] = job.offset
        data["speed"] = job.speed
        if error and job.error is not None:
            data["error"] = job.error
        return data

    def later(self, job: Job, action: str) -> None:
        """What the job's coroutine does next, right after the current reply: one of
        :data:`_LATER` (a name, not a closure: a saved machine is copied by pickling)."""
        self._soon.append((job, action))

    # --- starting -----------------------------------------------------------------------

    def start(self, job: Job, *, drained: bool = False) -> list[Event]:
        """List ``job`` and start it: created, running (a job started inside a drained
        section — a backup — pauses and resumes before the reply)."""
        job.since = self.host.clock()
        self.jobs.insert(0, job)
        events = [self.host.event("JOB_STATUS_CHANGE", {"id": job.id, "status": "created"})]
        events += self._status(job, "running")
        if drained:
            events += self._status(job, "paused") + self._status(job, "running")
        if job.readies and job.data == 0:
            # nothing to copy: synchronised before the command returns
            job.progress = 1.0
            events += self._ready(job)
        return events

    def early_fail(self, job: Job) -> list[Event]:
        """A job refused after it was created (``job_early_fail``): created, then null."""
        return [
            self.host.event("JOB_STATUS_CHANGE", {"id": job.id, "status": "created"}),
            self.host.event("JOB_STATUS_CHANGE", {"id": job.id, "status": "null"}),
        ]

    # --- time -----------------------------------------------------------------------------

    def _advance(self, job: Job) -> None:
        now = self.host.clock()
        if job.moving:
            done = (now - job.since) * job.rate / job.data if job.data else 1.0
            job.progress = min(1.0, job.progress + done)
        job.since = now

    def _due(self, job: Job) -> float | None:
        if not job.moving:
            return None
        remaining = (1.0 - job.progress) * job.data / job.rate
        return job.since + remaining

    def next_deadline(self) -> float | None:
        if self._soon:
            return self.host.clock()
        return min((d for j in self.jobs if (d := self._due(j)) is not None), default=None)

    def poll(self) -> list[Event]:
        out: list[Event] = []
        soon, self._soon = self._soon, []
        for job, action in soon:
            if job in self.jobs:
                out += _LATER[action](self, job)
        now = self.host.clock()
        for job in list(reversed(self.jobs)):  # the oldest job first
            due = self._due(job)
            if due is not None and due <= now:
                self._advance(job)
                job.progress = 1.0
                out += self._synchronised(job)
        return out

    def _synchronised(self, job: Job) -> list[Event]:
        if job.graph is not None:
            job.graph.synced(job)
        if job.readies:
            return self._ready(job)
        return self._completed(job)

    def _ready(self, job: Job) -> list[Event]:
        events = self._status(job, "ready")
        events.append(self.host.event("BLOCK_JOB_READY", self._data(job)))
        if job.should_complete:
            events += self._completed(job)
        return events

    # --- finishing ------------------------------------------------------------------------

    def _completed(self, job: Job) -> list[Event]:
        """``job_completed_txn_success``: waiting, pending, and finalized unless manual."""
        events = self._status(job, "waiting") + self._status(job, "pending")
        if not job.auto_finalize:
            events.append(self.host.event("BLOCK_JOB_PENDING", {"type": job.type, "id": job.id}))
            return events
        return events + self._finalize(job)

    def _finalize(self, job: Job) -> list[Event]:
        """``job_finalize_single``: the graph change, the result event, concluded."""
        if job.cancelled and job.force:
            return self._aborted(job, _CANCELED)
        if job.graph is None:
            pass
        elif job.cancelled or (not job.should_complete and job.readies):
            job.graph.abort(job)  # a mirror cancelled once ready stops without pivoting
        else:
            job.graph.commit(job)
        events = [self.host.event("BLOCK_JOB_COMPLETED", self._data(job, error=True))]
        return events + self._conclude(job)

    def _aborted(self, job: Job, error: str) -> list[Event]:
        """``job_completed_txn_abort``: aborting, the graph undone, the result, concluded."""
        job.error = job.error or error
        events = self._status(job, "aborting")
        if job.graph is not None:
            job.graph.abort(job)
        if job.cancelled and job.force:
            events.append(self.host.event("BLOCK_JOB_CANCELLED", self._data(job)))
        else:
            events.append(self.host.event("BLOCK_JOB_COMPLETED", self._data(job, error=True)))
        return events + self._conclude(job)

    def _conclude(self, job: Job) -> list[Event]:
        events = self._status(job, "concluded")
        if job.auto_dismiss:
            events += self._dismiss(job)
        return events

    def _dismiss(self, job: Job) -> list[Event]:
        events = self._status(job, "null")
        self.jobs.remove(job)
        return events

    # --- pause, resume, cancel, complete ------------------------------------------------

    def _pause(self, job: Job) -> Outcome:
        refused = self._verb(job, "pause")
        if refused:
            return Outcome(refused)
        if job.user_paused:
            return Outcome(CommandError("GenericError", "Job is already paused"))
        self._advance(job)
        job.user_paused = True
        if job.status == "ready" or (job.status == "running" and job.speed):
            # an idle mirror, or a job sleeping off its rate limit, reaches its pause
            # point at once; a busy one once its requests in flight are done
            return Outcome({}, tuple(self._pause_point(job)))
        if job.status == "running":
            self.later(job, "pause point")
        return Outcome({})

    def _pause_point(self, job: Job) -> list[Event]:
        """``job_pause_point``: a job asked to pause stops (standby when it was ready)."""
        if not job.user_paused:
            return []
        if job.status == "ready":
            return self._status(job, "standby")
        return self._status(job, "paused") if job.status == "running" else []

    def _resume(self, job: Job) -> Outcome:
        if not job.user_paused:
            return Outcome(CommandError("GenericError", "Can't resume a job that was not paused"))
        refused = self._verb(job, "resume")
        if refused:
            return Outcome(refused)
        job.user_paused = False
        job.io_status = "ok"
        job.since = self.host.clock()
        events = self._wake(job)
        if job.status == "ready" and job.should_complete:
            self.later(job, "complete if ready")
        return Outcome({}, tuple(events))

    def _wake(self, job: Job) -> list[Event]:
        """Back from a pause point: running again, or ready when it was."""
        if job.status == "standby":
            return self._status(job, "ready")
        if job.status == "paused":
            return self._status(job, "running")
        return []

    def _cancel(self, job: Job, force: bool) -> Outcome:
        refused = self._verb(job, "cancel")
        if refused:
            return Outcome(refused)
        self._advance(job)
        # a ready mirror cancelled softly completes without pivoting
        soft = not force and job.readies and job.status in ("ready", "standby")
        job.cancelled = True
        job.force = job.force or not soft
        events: list[Event] = []
        if job.user_paused:
            job.user_paused = False
            events += self._wake(job)
        if job.status == "pending":
            return Outcome({}, tuple(events + self._aborted(job, _CANCELED)))
        if job.status == "waiting":
            return Outcome({}, tuple(events))
        self.later(job, "complete" if soft else "cancelled")
        return Outcome({}, tuple(events))

    def _complete(self, job: Job) -> Outcome:
        refused = self._verb(job, "complete")
        if refused:
            return Outcome(refused)
        if job.cancelled or not job.readies:
            return Outcome(
                CommandError("GenericError", f"The active block job '{job.id}' cannot be completed")
            )
        job.should_complete = True
        if job.status == "ready":
            self.later(job, "complete if ready")
        return Outcome({})

    def _set_speed(self, job: Job, speed: int) -> Outcome:
        refused = self._verb(job, "set-speed")
        if refused:
            return Outcome(refused)
        if speed < 0:
            return Outcome(
                CommandError("GenericError", "Parameter 'speed' expects a non-negative value")
            )
        self._advance(job)
        job.speed = speed
        return Outcome({})

    def _finalize_cmd(self, job: Job) -> Outcome:
        refused = self._verb(job, "finalize")
        if refused:
            return Outcome(refused)
        return Outcome({}, tuple(self._finalize(job)))

    def _dismiss_cmd(self, job: Job) -> Outcome:
        refused = self._verb(job, "dismiss")
        if refused:
            return Outcome(refused)
        return Outcome({}, tuple(self._dismiss(job)))

    # --- the job-* commands -------------------------------------------------------------

    def _with(self, found: Job | CommandError, act: Callable[[Job], Outcome]) -> Outcome:
        return Outcome(found) if isinstance(found, CommandError) else act(found)

    @on_command("job-pause")
    def job_pause(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._job(args), self._pause)

    @on_command("job-resume")
    def job_resume(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._job(args), self._resume)

    @on_command("job-cancel")
    def job_cancel(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._job(args), lambda j: self._cancel(j, True))

    @on_command("job-complete")
    def job_complete(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._job(args), self._complete)

    @on_command("job-finalize")
    def job_finalize(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._job(args), self._finalize_cmd)

    @on_command("job-dismiss")
    def job_dismiss(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._job(args), self._dismiss_cmd)

    # --- the block-job-* commands ---------------------------------------------------------

    @on_command("block-job-pause")
    def block_job_pause(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._block_job(args), self._pause)

    @on_command("block-job-resume")
    def block_job_resume(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._block_job(args), self._resume)

    @on_command("block-job-cancel")
    def block_job_cancel(self, args: Mapping[str, Any]) -> Outcome:
        force = bool(args.get("force", False))
        return self._with(self._block_job(args), lambda j: self._cancel(j, force))

    @on_command("block-job-complete")
    def block_job_complete(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._block_job(args), self._complete)

    @on_command("block-job-set-speed")
    def block_job_set_speed(self, args: Mapping[str, Any]) -> Outcome:
        speed = int(args.get("speed", 0))
        return self._with(self._block_job(args), lambda j: self._set_speed(j, speed))

    @on_command("block-job-finalize")
    def block_job_finalize(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._block_job(args, "id"), self._finalize_cmd)

    @on_command("block-job-dismiss")
    def block_job_dismiss(self, args: Mapping[str, Any]) -> Outcome:
        return self._with(self._block_job(args, "id"), self._dismiss_cmd)

    # --- queries --------------------------------------------------------------------------

    @on_command("query-jobs")
    def query_jobs(self, _args: Mapping[str, Any]) -> Outcome:
        out = []
        for job in self.jobs:
            self._advance(job)
            info: dict[str, Any] = {"id": job.id, "type": job.type, "status": job.status}
            info["current-progress"] = job.offset
            info["total-progress"] = job.length
            if job.error is not None:
                info["error"] = job.error
            out.append(info)
        return Outcome(out)

    @on_command("query-block-jobs")
    def query_block_jobs(self, _args: Mapping[str, Any]) -> Outcome:
        out = []
        for job in self.jobs:
            self._advance(job)
            info: dict[str, Any] = {"type": job.type, "device": job.id, "len": job.length}
            info["offset"] = job.offset
            info["busy"] = False
            # paused while paused by the user or an error, and a mirror waiting in
            # pending (its source is still drained)
            info["paused"] = job.user_paused or (job.readies and job.status == "pending")
            info["speed"] = job.speed
            info["io-status"] = job.io_status
            info["ready"] = job.status in ("ready", "standby")
            info["status"] = job.status
            info["auto-finalize"] = job.auto_finalize
            info["auto-dismiss"] = job.auto_dismiss
            if job.error is not None:
                info["error"] = job.error
            if job.type == "mirror" and self.host.profile.version >= (8, 2, 0):
                info["actively-synced"] = False
            out.append(info)
        return Outcome(out)

    # --- errors ---------------------------------------------------------------------------

    def cause_error(self, cause: Any) -> str | None:
        job = self.find(cause.job)
        if job is None:
            known = ", ".join(j.id for j in self.jobs) or "none"
            return f"no block job {cause.job!r} (jobs: {known})"
        if job.status not in ("running", "ready"):
            return f"job {job.id!r} is {job.status}: only a running job does I/O"
        if cause.operation not in ("read", "write"):
            return f"operation {cause.operation!r} is not read or write"
        return None

    @on_cause(JobError)
    def job_error(self, c: JobError) -> list[Event]:
        job = self.find(c.job)
        assert job is not None
        self._advance(job)
        policy = job.on_source_error if c.operation == "read" else job.on_target_error
        action = error_action(policy, nospace=c.nospace)
        data = {"device": job.id, "operation": c.operation, "action": action.value}
        events = [self.host.event("BLOCK_JOB_ERROR", data)]
        if action == ErrorAction.STOP:
            job.user_paused = True
            job.io_status = "nospace" if c.nospace else "failed"
            self.later(job, "pause point")
        elif action == ErrorAction.REPORT:
            job.error = _STRERROR[c.nospace]
            self.later(job, "failed")
        return events


# what a job's coroutine does next, by name (Jobs.later)
_LATER: dict[str, Callable[[Jobs, Job], list[Event]]] = {
    "pause point": Jobs._pause_point,
    "complete": Jobs._completed,
    "complete if ready": lambda jobs, job: jobs._completed(job) if job.status == "ready" else [],
    "cancelled": lambda jobs, job: jobs._aborted(job, _CANCELED),
    "failed": lambda jobs, job: jobs._aborted(job, job.error or _STRERROR[False]),
}
