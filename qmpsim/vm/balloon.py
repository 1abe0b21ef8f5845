"""The memory balloon: ``balloon``, ``query-balloon`` and BALLOON_CHANGE.

A ``virtio-balloon`` device (``-device virtio-balloon-pci``) is the host's
half: ``balloon`` sets the device's target (``num_pages``: how many 4 KiB pages
the guest should give back) and returns at once; ``query-balloon`` reports
``actual``, the RAM the guest keeps by its own account.  The guest's balloon
driver is the other half: it inflates or deflates towards the target a chunk
at a time and writes its new size into the device's configuration after each
chunk, and each write that changes it sends BALLOON_CHANGE (QEMU throttles it
to one a second: the last size waits for the window to close).

What real QEMU 7.2 and 10.0 show without a guest OS (tests/test_diff_balloon.py):
the texts and classes of the refusals, the target clamped to the RAM size, a
target below a page boundary rounded up to it, and ``actual`` left alone while
no driver moves it.  The driver's pace is modelled (Linux's virtio_balloon
moves 256 pages per configuration update): :class:`~qmpsim.vm.guest.GuestConfig`
``balloon`` says whether the guest follows the target or has no driver, and
``balloon_rate`` how fast it moves, on the virtual clock and only while its
vCPUs run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .balloon_stats import GuestStats
from .component import Component, Unmet, on_cause, on_command
from .devices import Devices
from .guest import Guest
from .qom import Property, answers_for
from .values import CommandError, Event, Outcome

PAGE = 4096
"""``1 << VIRTIO_BALLOON_PFN_SHIFT``: the balloon counts in 4 KiB pages."""
STEP = 0.1
"""Seconds between two size reports of a driver on the move (each moves ``rate * STEP``)."""

# the device's feature properties, their defaults (read on QEMU 7.2 and 10.0) and the
# version that brought each (from QEMU's history)
_FEATURES = (
    ("deflate-on-oom", False, (2, 7)),
    ("free-page-hint", False, (3, 1)),
    ("qemu-4-0-config-size", False, (4, 1)),
    ("page-poison", True, (5, 1)),
    ("free-page-reporting", False, (5, 1)),
)

_NO_BALLOON = CommandError("DeviceNotActive", "No balloon device has been activated")


@dataclass(frozen=True)
class BalloonResized:
    """The guest's balloon driver reports a new size: the guest keeps ``actual`` bytes of
    RAM (rounded down to a page; at most the RAM size)."""

    actual: int


@answers_for("virtio-balloon-pci")
class Balloon(Component):
    """The balloon device's target, the size the guest's driver reports, and its
    statistics (:mod:`qmpsim.vm.balloon_stats`)."""

    def reset(self) -> None:
        self._device: str | None = None  # the balloon device this state belongs to
        self._target = 0  # num_pages: pages the host asks the guest to give back
        self._pages = 0  # actual: pages the guest has given back
        self._next: float | None = None  # when the driver next reports a size
        # the vCPUs stopped (a pause, a suspend): from when the driver was last seen
        # running to when it was last seen stopped; its schedule moves by that much
        self._seen_running: float | None = None
        self._stalled: tuple[float, float] | None = None
        self._stats = self._new_stats()

    def _new_stats(self) -> GuestStats:
        return GuestStats(self.host.profile.version)

    def _plugged(self) -> str | None:
        """The balloon device's QOM path; a device plugged anew starts empty."""
        path = self.host.part(Devices).find_type("virtio-balloon")
        if path != self._device:
            self._device, self._target, self._pages, self._next = path, 0, 0, None
            self._stats = self._new_stats()
        return path

    @property
    def _ram(self) -> int:
        ram: int = self.host.vm.memory
        return ram

    def actual(self) -> int | None:
        """The RAM the guest keeps, as ``query-balloon`` reports it (``None``: no device)."""
        if self._plugged() is None:
            return None
        return self._ram - self._pages * PAGE

    def target(self) -> int | None:
        """The RAM the host asked the guest to keep (``None``: no device)."""
        if self._plugged() is None:
            return None
        return self._ram - self._target * PAGE

    def qom_properties(self, device_type: str) -> dict[str, Property]:
        """The device's statistics properties (:mod:`qmpsim.vm.balloon_stats`) and its
        features, which QEMU fixes when the device is realized."""
        self._plugged()
        version = self.host.profile.version
        features = {
            name: Property(value, type="bool")
            for name, value, since in _FEATURES
            if version >= since
        }
        return {**features, **self._stats.properties(self.host.clock())}

    # --- commands --------------------------------------------------------------------

    @on_command("query-balloon")
    def query_balloon(self, _args: Mapping[str, Any]) -> Outcome:
        actual = self.actual()
        return Outcome(_NO_BALLOON if actual is None else {"actual": actual})

    @on_command("balloon")
    def balloon(self, args: Mapping[str, Any]) -> Outcome:
        # qmp_balloon(): the device first, then the value
        if self._plugged() is None:
            return Outcome(_NO_BALLOON)
        value = int(args["value"])
        if value <= 0:
            # the C parameter took the QAPI member's name in 8.2 (7.2 and 10.0 diffed)
            name = "value" if self.host.profile.version >= (8, 2) else "target"
            return Outcome(CommandError("GenericError", f"Parameter '{name}' expects a size"))
        # virtio_balloon_to_target(): a target beyond the RAM is the RAM; pages round down
        self._target = (self._ram - min(value, self._ram)) // PAGE
        self._driver_notified()
        return Outcome({})

    # --- the guest's driver ------------------------------------------------------------

    def _driver_notified(self) -> None:
        config = self.host.part(Guest).config
        if config is None or config.balloon != "follow" or self._next is not None:
            return
        low, high = config.balloon_delay
        delay = low if low == high else self.host.rng.uniform(low, high)
        now = self.host.clock()
        self._next = now + delay
        if not self.host.running:  # a stopped guest starts once it runs again
            self._stalled = (now, now)

    def _report(self, pages: int) -> list[Event]:
        """virtio_balloon_set_config(): a new size, and BALLOON_CHANGE when it changed."""
        if pages == self._pages:
            return []
        self._pages = pages
        actual = self._ram - pages * PAGE
        return self.host.send(self.host.event("BALLOON_CHANGE", {"actual": actual}))

    def _step(self) -> list[Event]:
        config = self.host.part(Guest).config
        if config is None or config.balloon != "follow":
            self._next = None
            return []
        gap = self._target - self._pages
        chunk = max(1, int(config.balloon_rate * STEP) // PAGE)
        move = max(-chunk, min(chunk, gap))
        out = self._report(self._pages + move)
        # the next report is due a step after this one was, however late this one is polled
        due = self._next
        self._next = None if self._pages == self._target or due is None else due + STEP
        return out

    def next_deadline(self) -> float | None:
        # a guest whose vCPUs are stopped moves nothing; it goes on once they run again
        if not self.host.running:
            return None
        due = [t for t in (self._next, self._stats.due) if t is not None]
        return min(due, default=None)

    def _stalls(self) -> None:
        """Keep the driver's schedule to the time its vCPUs ran.

        The machine polls before every command and cause, so the poll before the ``stop``
        (or the suspend) sees the vCPUs run, and the one before the ``cont`` (or the
        wake-up) sees them stopped: between the two the driver did nothing.
        """
        now = self.host.clock()
        if not self.host.running:
            since = now if self._seen_running is None else self._seen_running
            self._stalled = (since if self._stalled is None else self._stalled[0], now)
            return
        if self._stalled is not None:
            start, end = self._stalled
            if self._next is not None:
                self._next += end - start
            self._stats.stalled(end - start)
        self._stalled = None
        self._seen_running = now

    def poll(self) -> list[Event]:
        self._stalls()
        out: list[Event] = []
        while self._next is not None and self.host.running and not self.host.exited:
            if self._next > self.host.clock():
                break
            out += self._step()
        self._poll_stats()
        return out

    def _poll_stats(self) -> None:
        """The driver's first report when the guest first runs, then the timer's asks."""
        if not self.host.running or self.host.exited or self._plugged() is None:
            return
        config = self.host.part(Guest).config
        driver = config is not None and config.balloon == "follow"
        actual = self._ram - self._pages * PAGE
        if driver and not self._stats.reported:
            self._stats.report(actual, self.host.clock())
        now = self.host.clock()
        while self._stats.due is not None and self._stats.due <= now:
            self._stats.tick(driver, actual, now)

    # --- causes ------------------------------------------------------------------------

    @on_cause(BalloonResized)
    def resized(self, cause: BalloonResized) -> list[Event]:
        kept = min(max(cause.actual, 0), self._ram)
        return self._report((self._ram - kept + PAGE - 1) // PAGE)

    def cause_unmet(self, cause: Any) -> Unmet | None:
        if self._plugged() is None:
            return Unmet("the VM has no balloon device: add vm.balloon")
        return None

    def cause_error(self, cause: Any) -> str | None:
        if not self.host.running:
            return f"{type(cause).__name__} needs a running guest (the VM is {self.host.status})"
        return None
