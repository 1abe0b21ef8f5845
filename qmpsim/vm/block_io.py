"""Disk errors and guest I/O: BLOCK_IO_ERROR under each disk's policy, retries, statistics.

A disk error (:class:`DiskError`) follows its disk's error policy
(:mod:`qmpsim.vm.block_errors`): reported, ignored, or the VM stopped with
``io-error``, in which case ``cont`` retries the request (again and again while the
error is ``persistent``, until :class:`DiskRepaired`).  Guest I/O (:class:`DiskIo`)
moves ``query-blockstats``' counters on the virtual clock and grows a qcow2 image as
the guest first writes its clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .block_core import BlockCore
from .block_errors import ErrorAction
from .component import on_cause
from .nodes import Backend
from .runstate import RunState
from .values import Event

_STRERROR = {False: "Input/output error", True: "No space left on device"}
# simulated request latency, for the *_total_time_ns counters
_LATENCY_NS = 100_000


@dataclass(frozen=True)
class DiskError:
    """A disk I/O error on ``device``; the disk's error policy decides the action.

    When the action is ``stop``, ``cont`` retries the request: it succeeds unless
    ``persistent``, in which case it fails again (same event, another STOP) at every
    ``cont`` until :class:`DiskRepaired` (or ``system_reset``, which drops it).  A
    thin disk that ran out of space (``nospace``) also has room again once
    ``block_resize`` grows it.
    """

    device: str
    operation: str = "read"  # "read" | "write"
    nospace: bool = False
    persistent: bool = False


@dataclass(frozen=True)
class DiskRepaired:
    """The host fixed what made ``device`` fail; the next ``cont`` retry succeeds."""

    device: str


@dataclass(frozen=True)
class DiskIo:
    """The guest read or wrote ``size`` bytes on ``device`` in ``requests`` requests,
    from ``offset``; ``query-blockstats`` counts them (``flush`` counts requests only)."""

    device: str
    operation: str = "read"  # "read" | "write" | "flush"
    size: int = 4096
    requests: int = 1
    offset: int = 0


class BlockIo(BlockCore):
    """The block graph's disk errors, their retries on ``cont``, and guest I/O."""

    def reset(self) -> None:
        super().reset()
        self._failing: dict[str, DiskError] = {}
        self._retry: list[DiskError] = []

    @on_cause(DiskError)
    def disk_error(self, c: DiskError) -> list[Event]:
        backend = self.backend(c.device)
        disk = backend.config
        action = disk.action(c.operation, c.nospace)
        if action == ErrorAction.STOP and disk.iostatus_enabled and backend.io_status == "ok":
            backend.io_status = "nospace" if c.nospace else "failed"
        if action == ErrorAction.STOP and c.persistent:
            self._failing[disk.name] = c
        if action == ErrorAction.REPORT:
            stats = backend.stats
            if c.operation == "read":
                stats.failed_rd_operations += 1
            else:
                stats.failed_wr_operations += 1
            stats.last_io = self.host.clock()
        events = [self.host.event("BLOCK_IO_ERROR", self._io_error_data(backend, c, action))]
        if action == ErrorAction.STOP:
            events += self.host.stop(RunState.IO_ERROR)
        return events

    def _io_error_data(self, backend: Backend, c: DiskError, action: ErrorAction) -> dict[str, Any]:
        disk = backend.config
        if not self.host.profile.run_states:
            return {"device": disk.wire_name, "operation": c.operation, "action": action.value}
        data: dict[str, Any] = {}
        spec = self.host.profile.events["BLOCK_IO_ERROR"].data
        if spec is not None and spec.member("qom-path") is not None:  # QEMU 9.2 on
            qdev = disk.qdev
            data["qom-path"] = qdev if qdev.startswith("/") else f"/machine/peripheral/{qdev}"
        data["device"] = disk.wire_name
        root = self._shown(backend)
        data["node-name"] = root.name if root is not None else disk.node_name
        data["operation"] = c.operation
        data["action"] = action.value
        if disk.iostatus_enabled:
            data["nospace"] = c.nospace
        data["reason"] = _STRERROR[c.nospace]
        return data

    @on_cause(DiskRepaired)
    def disk_repaired(self, c: DiskRepaired) -> list[Event]:
        self._failing.pop(self.backend(c.device).config.name, None)
        return []

    @on_cause(DiskIo)
    def disk_io(self, c: DiskIo) -> list[Event]:
        backend = self.backend(c.device)
        s = backend.stats
        if c.operation == "read":
            s.rd_bytes += c.size
            s.rd_operations += c.requests
            s.rd_total_time_ns += c.requests * _LATENCY_NS
        elif c.operation == "write":
            s.wr_bytes += c.size
            s.wr_operations += c.requests
            s.wr_total_time_ns += c.requests * _LATENCY_NS
            root = self._shown(backend)
            end = c.offset + c.size
            for node in (root, root.file if root is not None else None):
                if node is not None:
                    node.wr_highest_offset = max(node.wr_highest_offset, end)
            if root is not None and root.driver == "qcow2":
                # a qcow2 image allocates clusters as the guest first writes them
                grown = -(-end // 65536) * 65536 + root.allocated // 2
                root.allocated = max(root.allocated, min(grown, root.size + root.allocated))
                if root.file is not None:
                    root.file.allocated = root.allocated
        else:
            s.flush_operations += c.requests
            s.flush_total_time_ns += c.requests * _LATENCY_NS
        s.last_io = self.host.clock()
        return []

    # --- what the machine asks on cont and system_reset -------------------------------

    def continued(self) -> None:
        """``cont``: io-status back to ok; stopped requests are retried after the reply."""
        for backend in self.graph.backends:
            backend.io_status = "ok"

    def resumed(self) -> None:
        """The VM runs again: the devices retry the requests that stopped it."""
        self._retry += self._failing.values()
        self._failing.clear()

    def requests_dropped(self) -> None:
        """``system_reset``: the requests waiting for a retry are dropped."""
        self._failing.clear()

    def next_deadline(self) -> float | None:
        return self.host.clock() if self._retry else None

    def poll(self) -> list[Event]:
        out: list[Event] = []
        retry, self._retry = self._retry, []
        for error in retry:
            out += self.disk_error(error)
        return out
