"""Devices, block jobs and trays: DEVICE_DELETED, JOB_STATUS_CHANGE, BLOCK_JOB_*,
DEVICE_TRAY_MOVED; a job moves as :func:`qmpsim.vm.job_states.may_move` allows, and
its BLOCK_JOB_* events come in the states :data:`qmpsim.vm.job_states.BLOCK_JOB_EVENTS`
names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmpsim.vm.job_states import BLOCK_JOB_EVENTS, JobStatus, may_move

from .core import _Core, _on_event


class _DeviceRules(_Core):
    """The rules over devices, block jobs and trays."""

    @_on_event("DEVICE_DELETED")
    def _on_device_deleted(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        path, device = data.get("path"), data.get("device")
        if isinstance(device, str) and path != f"/machine/peripheral/{device}":
            self._report(
                line,
                "device-deleted",
                f"DEVICE_DELETED of device {device!r} names path {path!r},"
                f" not /machine/peripheral/{device}",
            )
        if device is None and isinstance(path, str) and path.endswith("/virtio-backend"):
            self.backend_gone = (line, path.removesuffix("/virtio-backend"))

    # -- block jobs and trays --

    @_on_event("JOB_STATUS_CHANGE")
    def _on_job_status_change(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        job, status = data.get("id"), data.get("status")
        if not isinstance(job, str) or not isinstance(status, str):
            return
        # a job met in the middle of its life starts wherever the stream finds it
        new = status == JobStatus.CREATED
        before = self.jobs.get(job, JobStatus.UNDEFINED.value if new else None)
        if before is not None and not may_move(before, status):
            self._report(line, "job-status", f"job {job!r} went from {before} to {status}")
        self.jobs[job] = status

    def _job_event(self, line: int, job: Any, event: str) -> None:
        states = BLOCK_JOB_EVENTS[event]
        status = self.jobs.get(job) if isinstance(job, str) else None
        if status is not None and status not in states:
            self._report(
                line,
                "job-events",
                f"{event} for job {job!r} while it is {status}, not " + " or ".join(states),
            )

    @_on_event("BLOCK_JOB_READY")
    def _on_block_job_ready(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._job_event(line, data.get("device"), "BLOCK_JOB_READY")

    @_on_event("BLOCK_JOB_PENDING")
    def _on_block_job_pending(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._job_event(line, data.get("id"), "BLOCK_JOB_PENDING")

    @_on_event("BLOCK_JOB_COMPLETED")
    def _on_block_job_completed(
        self, line: int, data: Mapping[str, Any], _stamp: int | None
    ) -> None:
        self._job_event(line, data.get("device"), "BLOCK_JOB_COMPLETED")

    @_on_event("BLOCK_JOB_CANCELLED")
    def _on_block_job_cancelled(
        self, line: int, data: Mapping[str, Any], _stamp: int | None
    ) -> None:
        self._job_event(line, data.get("device"), "BLOCK_JOB_CANCELLED")

    @_on_event("DEVICE_TRAY_MOVED")
    def _on_device_tray_moved(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        device = f"{data.get('device')}/{data.get('id')}"
        open_ = data.get("tray-open")
        if self.trays.get(device) == open_:
            where = "open" if open_ else "closed"
            self._report(line, "tray", f"the tray of {device} moved to {where}, where it was")
        if isinstance(open_, bool):
            self.trays[device] = open_
