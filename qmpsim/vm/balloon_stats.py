"""The balloon's guest statistics: ``guest-stats`` and ``guest-stats-polling-interval``.

Two QOM properties of a ``virtio-balloon`` device (also on its PCI proxy).
``guest-stats`` is ``{"stats": {...}, "last-update": N}``: each statistic the
guest's driver last reported, ``-1`` as a 64-bit unsigned number
(18446744073709551615) for one it never reported, and the host's time of that
report in seconds (0: none yet).  ``guest-stats-polling-interval`` (seconds, 0:
off) sets a timer that asks the driver for new figures.

What QEMU 7.2 and 10.0 show without a guest OS (``tests/test_diff_qom.py``): no
report ever comes; the interval is checked and kept as QEMU checks it.  What a
guest with a driver (``vm.guest.balloon: follow``) reports is modelled on Linux's
``virtio_balloon``: a first report when the driver starts (when the guest first
runs), then one each time the timer asks, which runs on the virtual clock only
while the vCPUs do.  The figures are made up but consistent: the total is the RAM
the guest keeps, a fixed share of it is free, available or cache, and the
minor-fault count grows with each report.
"""

from __future__ import annotations

from typing import Any

from .qom import READ_ONLY, Property
from .values import CommandError

NONE = (1 << 64) - 1
"""A statistic the guest never reported: ``(uint64_t)-1``."""

# the statistics QEMU reports, in the order of its table (the wire writer orders
# them as QEMU's QDict does); QEMU 9.1 added the six reclaim statistics that
# Linux 6.10 reports (placed from QEMU's history: only 7.2 and 10.0 are run here)
_STATS = (
    "stat-swap-in",
    "stat-swap-out",
    "stat-major-faults",
    "stat-minor-faults",
    "stat-free-memory",
    "stat-total-memory",
    "stat-available-memory",
    "stat-disk-caches",
    "stat-htlb-pgalloc",
    "stat-htlb-pgfail",
)
_STATS_9_1 = (
    "stat-oom-kills",
    "stat-alloc-stalls",
    "stat-async-scans",
    "stat-direct-scans",
    "stat-async-reclaims",
    "stat-direct-reclaims",
)
_PAGE = 4096


def _invalid(value: Any) -> bool:
    """Whether QEMU's integer visitor refuses ``value`` (only JSON integers in int64)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return True
    return not -(1 << 63) <= value < 1 << 63


class GuestStats:
    """The statistics timer and the last report of one balloon device."""

    def __init__(self, version: tuple[int, ...]) -> None:
        self._names = _STATS + (_STATS_9_1 if version >= (9, 1) else ())
        self.interval = 0
        self.due: float | None = None  # when the timer next asks the driver
        self._values: dict[str, int] = {}
        self._last_update = 0
        self._reports = 0

    def properties(self, now: float) -> dict[str, Property]:
        """The two QOM properties at ``now``, as :mod:`qmpsim.vm.qom` wants them."""
        stats = {name: self._values.get(name, NONE) for name in self._names}
        return {
            "guest-stats": Property(
                {"stats": stats, "last-update": self._last_update}, READ_ONLY, "guest statistics"
            ),
            "guest-stats-polling-interval": Property(
                self.interval, lambda value: self._set_interval(value, now), "int"
            ),
        }

    def _set_interval(self, value: Any, now: float) -> CommandError | None:
        # balloon_stats_set_poll_interval()
        if _invalid(value):
            return CommandError(
                "GenericError",
                "Invalid parameter type for 'guest-stats-polling-interval', expected: integer",
            )
        if value < 0:
            return CommandError("GenericError", "timer value must be greater than zero")
        if value > 0xFFFFFFFF:
            return CommandError("GenericError", "timer value is too big")
        if value == self.interval:
            return None
        # a running timer moves to the new interval; a new one asks at once
        self.due = None if value == 0 else now + value if self.interval else now
        self.interval = value
        return None

    def report(self, actual: int, at: float) -> None:
        """The driver reports its figures at ``at``; ``actual`` is the RAM the guest keeps."""
        self._reports += 1
        kept = actual // _PAGE * _PAGE
        self._values = {
            "stat-swap-in": 0,
            "stat-swap-out": 0,
            "stat-major-faults": 0,
            "stat-minor-faults": 1000 * self._reports,
            "stat-free-memory": kept // 2 // _PAGE * _PAGE,
            "stat-total-memory": kept,
            "stat-available-memory": kept * 5 // 8 // _PAGE * _PAGE,
            "stat-disk-caches": kept // 8 // _PAGE * _PAGE,
            "stat-htlb-pgalloc": 0,
            "stat-htlb-pgfail": 0,
            **dict.fromkeys(_STATS_9_1, 0),
        }
        # virtio_balloon_receive_stats(): the host's wall-clock second of the report
        self._last_update = int(at)

    @property
    def reported(self) -> bool:
        """Whether the driver has reported at all."""
        return self._reports > 0

    def tick(self, driver: bool, actual: int, now: float) -> None:
        """The timer fires (at :attr:`due`): a driver reports, and either way the timer
        asks again an interval later (balloon_stats_poll_cb(), then
        virtio_balloon_receive_stats())."""
        at = now if self.due is None else self.due
        if driver:
            self.report(actual, at)
        self.due = None if self.interval == 0 else at + self.interval

    def stalled(self, seconds: float) -> None:
        """The vCPUs stood still for ``seconds``: the virtual clock, and the timer, too."""
        if self.due is not None:
            self.due += seconds
