"""The simulated wall clock a simulator stamps events and the transcript with."""

from __future__ import annotations

import time

import trio

__all__ = ["SimClock"]


class SimClock:
    """``epoch`` plus the trio time elapsed since the first reading.

    ``epoch``: the timestamp (seconds since the epoch) of the first reading; the
    current wall time when ``None``.  Under trio's ``MockClock`` time is virtual, so
    a test's events carry the timestamps it chose.
    """

    __slots__ = ("_epoch", "_last", "_offset", "_wall_clock")

    def __init__(self, epoch: float | None) -> None:
        self._epoch = epoch
        self._wall_clock = epoch is None
        self._offset: float | None = None
        self._last = 0.0

    def now(self) -> float:
        """The simulated wall clock now (outside trio: the epoch, or the wall time)."""
        try:
            current = trio.current_time()
        except RuntimeError:
            return self._epoch if self._epoch is not None else time.time()
        if self._offset is None:
            start = self._epoch if self._epoch is not None else time.time()
            self._offset = start - current
        self._last = self._offset + current
        return self._last

    def trio_time(self, wall: float) -> float:
        """The trio time at which the simulated clock reads ``wall``."""
        self.now()
        assert self._offset is not None
        return wall - self._offset

    def restart(self) -> None:
        """A new trio run starts: a clock with a chosen epoch goes on from its last
        reading, a wall clock from the wall time."""
        if self._offset is not None and not self._wall_clock:
            self._epoch = self._last
        self._offset = None
