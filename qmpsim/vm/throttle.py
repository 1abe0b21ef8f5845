"""QEMU's per-event throttle (``monitor_qapi_event_queue``): rate-limited events.

Some events (``RTC_CHANGE``, ``WATCHDOG``, ``BALLOON_CHANGE``… as the profile's
``throttle`` says) go out at most once per interval: the first at once, opening
a window; one arriving while the window is open replaces any other held back and
goes out, with the timestamp it was made with, when the window closes, which
opens a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .values import Clock, Event

if TYPE_CHECKING:
    from qmpsim.qmp.profiles import ProfileSpec


class _Owner(Protocol):
    @property
    def clock(self) -> Clock: ...

    @property
    def profile(self) -> ProfileSpec: ...


@dataclass
class _Window:
    """One event's throttle state: when the window closes, and the one pending event."""

    closes: float
    pending: Event | None = None


class Throttle:
    """The throttle windows of one machine, on its clock, at its profile's rates."""

    def __init__(self, owner: _Owner) -> None:
        # the owner's clock and profile are read at each use: a simulator replaces the
        # clock after construction (and the owner, unlike a closure, pickles)
        self._owner = owner
        self._windows: dict[str, _Window] = {}

    def clear(self) -> None:
        """No window open, nothing held back."""
        self._windows = {}

    def send(self, event: Event) -> list[Event]:
        """Pass ``event`` through: the events that go out now."""
        rate = self._owner.profile.throttle.get(event.name)
        if not rate:
            return [event]
        window = self._windows.get(event.name)
        if window is None:
            self._windows[event.name] = _Window(self._owner.clock() + rate)
            return [event]
        window.pending = event
        return []

    def poll(self) -> list[Event]:
        """Held-back events whose window closed by now, in the order the windows closed."""
        out: list[Event] = []
        now = self._owner.clock()
        due = sorted((w.closes, name) for name, w in self._windows.items() if w.closes <= now)
        for _, name in due:
            window = self._windows[name]
            if window.pending is None:
                del self._windows[name]
            else:
                out.append(window.pending)
                window.pending = None
                window.closes = now + self._owner.profile.throttle[name]
        return out

    def next_deadline(self) -> float | None:
        """When the next window closes."""
        return min((w.closes for w in self._windows.values()), default=None)

    def pending(self) -> list[Event]:
        """The events held back, oldest first, without releasing them."""
        held = [w.pending for w in self._windows.values() if w.pending is not None]
        return sorted(held, key=lambda e: (e.seconds, e.microseconds))
