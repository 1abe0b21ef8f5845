"""A migration's RAM on the virtual clock: what is sent, what the guest dirties meanwhile,
and ``query-migrate``'s ``ram`` counters.

RAM is sent in rounds at ``max-bandwidth`` bytes per second (in postcopy at
``max-postcopy-bandwidth``): a zero page costs 9 bytes on the wire, a page with data
4,104.  While a round is sent the guest dirties memory at the rate
:class:`~qmpsim.vm.migration.GuestDirtiesMemory` sets; in postcopy the guest, running
on the destination, faults on pages not there yet instead.  Nothing here is sent by
a timer: :meth:`RamTransfer._advance` works out, whenever the migration looks, what
the time since its last look allowed (modelled from ``migration/ram.c``).

:class:`RamTransfer` is a layer of the migration component
(:class:`~qmpsim.vm.migration.Migration`); the state machine that starts and ends
rounds is :mod:`qmpsim.vm.migration_outgoing`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from .migration_incoming import Incoming, only
from .migration_states import POSTCOPY_STATES, MigrationStatus

_M = MigrationStatus

PAGE = 4096
ZERO_PAGE_COST = 9
"""A zero page on the wire: its 8-byte header and the byte it is filled with."""
PAGE_COST = PAGE + 8
DEVICE_STATE = 92
"""Bytes of device state and stream markers a small ``pc`` adds (QEMU 7.2)."""
FIRMWARE_RAM = {"pc": 532480}
"""RAM blocks besides ``-m`` that a machine migrates (``-M pc -nodefaults``: the BIOS,
option ROM and ACPI tables), by machine type."""
FIRMWARE_PAGES = {True: 111, False: 49}
"""Pages holding data in a guestless pc: SeaBIOS's once it ran, the ROMs' before."""
POSTCOPY_RATE = 1 << 30
"""What ``max-postcopy-bandwidth`` 0 (no limit) sends at: a local link's speed."""


class Step(Enum):
    """What the migration thread does next (:data:`qmpsim.vm.migration.STEPS` plays each)."""

    ACTIVE = "active"
    ROUND = "round"
    CONTINUE = "continue"
    COMPLETED = "completed"
    FAILED = "failed"
    BROKEN_SETUP = "broken setup"
    CANCELLED = "cancelled"
    POSTCOPY = "postcopy"
    POSTCOPY_ROUND = "postcopy round"
    PAUSED = "paused"
    RECOVER = "recover"
    UNRECOVERED = "unrecovered"


class RamTransfer(Incoming):
    """The RAM an outgoing migration sends, and the counters ``query-migrate`` reports."""

    # the outgoing migration's state (set by its reset): what the RAM model reads
    status: MigrationStatus
    params: dict[str, Any]
    dirty_rate: int
    pass_: int
    _step: Step | None
    _due: float | None
    _at: float | None

    def _clear_counters(self) -> None:
        now = self._now()
        self.start = now
        self.setup_ms = 0
        self.downtime_ms = 0
        self.stopped_at = now
        self.ended_at = now
        self.active_at = now
        self.was_running = False
        # counters as floats (a share of a round is sent at a time), reported rounded
        self.transferred = 0.0
        self.precopy = 0.0
        self.downtime_bytes = 0.0
        self.normal = 0.0
        self.duplicate = 0.0
        self.round_pages = 0.0  # pages still to send this round
        self.round_normal = 0.0  # of which hold data
        self.dirty = 0.0  # pages dirtied since the round began
        self.since = now
        self.postcopy_bytes = 0.0
        self.requests = 0.0  # pages the destination asked for (it faulted on them)
        self.postcopy = False  # whether this migration switched to postcopy
        self.expected_at_switch = 0

    def _now(self) -> float:
        """The virtual time: the due time of the step being played, else the clock's."""
        return self.host.clock() if self._at is None else self._at

    def _schedule(self, step: Step | None, seconds: float = 0.0) -> None:
        """What the migration thread does next (:data:`qmpsim.vm.migration.STEPS`), and when."""
        self._step = step
        self._due = None if step is None else self._now() + seconds

    @property
    def bandwidth(self) -> int:
        return max(int(self.params.get("max-bandwidth", 128 << 20)), 1)

    @property
    def ram_pages(self) -> int:
        vm = self.host.vm
        extra = FIRMWARE_RAM.get(vm.machine or "", 0)
        return (int(vm.memory) + extra) // PAGE

    @property
    def rate(self) -> int:
        """Bytes per second now: ``max-bandwidth``, or in postcopy ``max-postcopy-bandwidth``."""
        if not self.postcopy:
            return self.bandwidth
        return max(int(self.params.get("max-postcopy-bandwidth", 0)), 0) or POSTCOPY_RATE

    def _round_seconds(self) -> float:
        zero = self.round_pages - self.round_normal
        return (self.round_normal * PAGE_COST + zero * ZERO_PAGE_COST) / self.rate

    def _sending(self) -> bool:
        """Whether RAM goes out now: a precopy round, or postcopy with its connection."""
        if self._step is Step.ROUND:
            return self.status in (_M.ACTIVE, _M.CANCELLING)
        return self._step is Step.POSTCOPY_ROUND and self.status == _M.POSTCOPY_ACTIVE

    def _advance(self) -> None:
        """Send what the time since the last look allowed; the guest dirties meanwhile."""
        now = self._now()
        elapsed = max(0.0, now - self.since)
        self.since = now
        if not self._sending():
            return
        total = self._round_seconds()
        if self.postcopy and self.dirty_rate:
            # the guest, running on the destination, faults on pages not there yet
            left = self.round_pages / max(self.ram_pages, 1)
            self.requests += elapsed * self.dirty_rate / PAGE * left
        elif self.dirty_rate:
            limit = self._guest_pages()
            self.dirty = min(float(limit), self.dirty + elapsed * self.dirty_rate / PAGE)
        # the last microsecond of a round counts as sent: clock floats are not exact
        share = 1.0 if total - elapsed < 1e-6 else elapsed / total
        self._send(self.round_pages * share, self.round_normal * share)

    def _send(self, pages: float, normal: float) -> None:
        zero = pages - normal
        sent = normal * PAGE_COST + zero * ZERO_PAGE_COST
        self.round_pages -= pages
        self.round_normal -= normal
        self.normal += normal
        self.duplicate += zero
        self.transferred += sent
        if self.postcopy:
            self.postcopy_bytes += sent
        elif self.host.running:
            self.precopy += sent
        else:
            self.downtime_bytes += sent

    def _guest_pages(self) -> int:
        """The pages a guest can dirty: all of its RAM."""
        return int(self.host.vm.memory) // PAGE

    def _expected_downtime(self) -> int:
        if self.postcopy:
            return self.expected_at_switch  # precopy's last estimate: postcopy makes none
        limit = int(self.params.get("downtime-limit", 300))
        if self.pass_ <= 1:
            return limit
        # what is left to send, at the measured bandwidth
        return round((self.round_pages + self.dirty) * PAGE * 1000 / self.bandwidth)

    def _ram(self, now: float) -> dict[str, Any]:
        """``query-migrate``'s ``ram`` member, in this QEMU's order."""
        done = self.status == _M.COMPLETED
        seconds = max((self.ended_at if done else now) - self.start, 1e-3)
        moving = self.status in (_M.ACTIVE, *POSTCOPY_STATES)
        ram: dict[str, Any] = {
            "transferred": round(self.transferred),
            "remaining": 0 if done else round(self.round_pages + self.dirty) * PAGE,
            "total": self.ram_pages * PAGE,
            "duplicate": round(self.duplicate),
            "skipped": 0,
            "normal": round(self.normal),
            "normal-bytes": round(self.normal) * PAGE,
            "dirty-pages-rate": self.dirty_rate // PAGE if self.pass_ > 1 else 0,
            "mbps": self.transferred * 8 / 1e6 / seconds if moving or done else 0,
            "dirty-sync-count": self.pass_,
            "postcopy-requests": round(self.requests),
            "page-size": PAGE,
            "multifd-bytes": 0,
            "pages-per-second": round(self.rate / PAGE_COST) if moving else 0,
            "precopy-bytes": round(self.precopy),
            "downtime-bytes": round(self.downtime_bytes),
            "postcopy-bytes": round(self.postcopy_bytes),
            "dirty-sync-missed-zero-copy": 0,
        }
        return only(self.fields("ram"), ram)
