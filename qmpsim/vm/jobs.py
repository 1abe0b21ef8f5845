"""Block jobs: QEMU's job state machine, on the virtual clock.

A job (``drive-mirror``/``blockdev-mirror``, ``block-commit``, ``block-stream``,
``drive-backup``/``blockdev-backup``; :mod:`qmpsim.vm.job_kinds` starts them)
moves through QEMU's states (:class:`~qmpsim.vm.job_states.JobStatus`) — created,
running, paused, ready, standby, waiting, pending, aborting, concluded, null — with a
JOB_STATUS_CHANGE at each step, as ``job.c``'s transition and verb tables
(:mod:`qmpsim.vm.job_states`) allow.  It copies its data at ``speed`` bytes per
second (an unlimited job at :data:`~qmpsim.vm.job_states.UNLIMITED_RATE`), so ``query-jobs``
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
from dataclasses import dataclass
from typing import Any

from .block_errors import ErrorAction, error_action
from .component import Component, on_cause, on_command
from .job_states import BLOCK_JOB_EVENTS, JOB_VERBS, Job, JobStatus, may_move
from .values import CommandError, Event, MachineError, Outcome

_STRERROR = {False: "Input/output error", True: "No space left on device"}
_CANCELED = "Operation canceled"


@dataclass(frozen=True)
class JobError:
    """An I/O error hits the job ``job`` (its id) reading its source or writing its
    target; the job's ``on-source-error``/``on-target-error`` (``on-error``) decides."""

    job: str
    operation: str = "write"  # "read" (the source) | "write" (the target)
    nospace: bool = False


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
        if job.status in JOB_VERBS[verb]:
            return None
        return CommandError(
            "GenericError",
            f"Job '{job.id}' in state '{job.status}' cannot accept command verb '{verb}'",
        )

    # --- events -------------------------------------------------------------------------

    def _status(self, job: Job, status: JobStatus) -> list[Event]:
        """The one place a job's status changes: a move :data:`JOB_MOVES` forbids is a
        programming error (``job_state_transition()`` asserts it)."""
        if job.status == status:
            return []
        if not may_move(job.status, status):
            raise MachineError(f"job {job.id!r} cannot go from {job.status} to {status}")
        job.status = status
        if "JOB_STATUS_CHANGE" not in self.host.profile.events:
            return []  # before QEMU 3.0 a job moved without telling
        return [self.host.event("JOB_STATUS_CHANGE", {"id": job.id, "status": status.value})]

    def _event(self, job: Job, name: str, data: dict[str, Any]) -> Event:
        """The event ``name`` about ``job``: sent only in the states QEMU sends it in
        (:data:`~qmpsim.vm.job_states.BLOCK_JOB_EVENTS`)."""
        if job.status not in BLOCK_JOB_EVENTS[name]:
            raise MachineError(f"job {job.id!r} cannot send {name} while {job.status}")
        return self.host.event(name, data)

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
        events = self._status(job, JobStatus.CREATED) + self._status(job, JobStatus.RUNNING)
        if drained:
            events += self._status(job, JobStatus.PAUSED) + self._status(job, JobStatus.RUNNING)
        if job.readies and job.data == 0:
            # nothing to copy: synchronised before the command returns
            job.progress = 1.0
            events += self._ready(job)
        return events

    def early_fail(self, job: Job) -> list[Event]:
        """A job refused after it was created (``job_early_fail``): created, then null."""
        return self._status(job, JobStatus.CREATED) + self._status(job, JobStatus.NULL)

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
        events = self._status(job, JobStatus.READY)
        events.append(self._event(job, "BLOCK_JOB_READY", job.event_data()))
        if job.should_complete:
            events += self._completed(job)
        return events

    # --- finishing ------------------------------------------------------------------------

    def _completed(self, job: Job) -> list[Event]:
        """``job_completed_txn_success``: waiting, pending, and finalized unless manual."""
        events = self._status(job, JobStatus.WAITING) + self._status(job, JobStatus.PENDING)
        if not job.auto_finalize:
            events.append(self._event(job, "BLOCK_JOB_PENDING", {"type": job.type, "id": job.id}))
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
        events = [self._event(job, "BLOCK_JOB_COMPLETED", job.event_data(error=True))]
        return events + self._conclude(job)

    def _aborted(self, job: Job, error: str) -> list[Event]:
        """``job_completed_txn_abort``: aborting, the graph undone, the result, concluded."""
        job.error = job.error or error
        events = self._status(job, JobStatus.ABORTING)
        if job.graph is not None:
            job.graph.abort(job)
        if job.cancelled and job.force:
            events.append(self._event(job, "BLOCK_JOB_CANCELLED", job.event_data()))
        else:
            events.append(self._event(job, "BLOCK_JOB_COMPLETED", job.event_data(error=True)))
        return events + self._conclude(job)

    def _conclude(self, job: Job) -> list[Event]:
        events = self._status(job, JobStatus.CONCLUDED)
        if job.auto_dismiss:
            events += self._dismiss(job)
        return events

    def _dismiss(self, job: Job) -> list[Event]:
        events = self._status(job, JobStatus.NULL)
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
        if job.status == JobStatus.READY or (job.status == JobStatus.RUNNING and job.speed):
            # an idle mirror, or a job sleeping off its rate limit, reaches its pause
            # point at once; a busy one once its requests in flight are done
            return Outcome({}, tuple(self._pause_point(job)))
        if job.status == JobStatus.RUNNING:
            self.later(job, "pause point")
        return Outcome({})

    def _pause_point(self, job: Job) -> list[Event]:
        """``job_pause_point``: a job asked to pause stops (standby when it was ready)."""
        if not job.user_paused:
            return []
        if job.status == JobStatus.READY:
            return self._status(job, JobStatus.STANDBY)
        return self._status(job, JobStatus.PAUSED) if job.status == JobStatus.RUNNING else []

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
        if job.status == JobStatus.READY and job.should_complete:
            self.later(job, "complete if ready")
        return Outcome({}, tuple(events))

    def _wake(self, job: Job) -> list[Event]:
        """Back from a pause point: running again, or ready when it was."""
        if job.status == JobStatus.STANDBY:
            return self._status(job, JobStatus.READY)
        if job.status == JobStatus.PAUSED:
            return self._status(job, JobStatus.RUNNING)
        return []

    def _cancel(self, job: Job, force: bool) -> Outcome:
        refused = self._verb(job, "cancel")
        if refused:
            return Outcome(refused)
        self._advance(job)
        # a ready mirror cancelled softly completes without pivoting
        soft = not force and job.readies and job.status in (JobStatus.READY, JobStatus.STANDBY)
        job.cancelled = True
        job.force = job.force or not soft
        events: list[Event] = []
        if job.user_paused:
            job.user_paused = False
            events += self._wake(job)
        if job.status == JobStatus.PENDING:
            return Outcome({}, tuple(events + self._aborted(job, _CANCELED)))
        if job.status == JobStatus.WAITING:
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
        if job.status == JobStatus.READY:
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
        for job in self.jobs:
            self._advance(job)
        return Outcome([job.job_info() for job in self.jobs])

    @on_command("query-block-jobs")
    def query_block_jobs(self, _args: Mapping[str, Any]) -> Outcome:
        synced = self.host.profile.version >= (8, 2, 0)
        for job in self.jobs:
            self._advance(job)
        return Outcome([job.block_job_info(actively_synced=synced) for job in self.jobs])

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
    "complete if ready": lambda jobs, job: (
        jobs._completed(job) if job.status == JobStatus.READY else []
    ),
    "cancelled": lambda jobs, job: jobs._aborted(job, _CANCELED),
    "failed": lambda jobs, job: jobs._aborted(job, job.error or _STRERROR[False]),
}
