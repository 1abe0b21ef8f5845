"""The simulated guest OS: how it answers what the host asks of it.

Real QEMU reports what the guest does, not what the host asked: ``system_powerdown``
only presses the ACPI power button (POWERDOWN), and the guest shuts down — or
not; ``device_del`` of a PCI device only asks the guest to let go of it, and the
device leaves (DEVICE_DELETED) when the guest ejects it.  A VM without a guest
(``VmConfig.guest = None``, like ``-M none`` or firmware with no OS) answers
nothing, as such a QEMU does.  With a :class:`GuestConfig` the guest reacts after
a delay on the virtual clock, drawn from the machine's seeded generator, and only
while its vCPUs run: a paused guest acts once it runs again; a reset forgets what
it was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .component import Component
from .values import Event, MachineError

POWERDOWN_POLICIES = ("shutdown", "ignore")
UNPLUG_POLICIES = ("eject", "ignore", "refuse")
TRAY_POLICIES = ("open", "ignore")
BALLOON_POLICIES = ("follow", "ignore")

Delay = tuple[float, float]
"""Seconds, as ``(low, high)``: each reaction draws its delay uniformly in between."""


@dataclass(frozen=True)
class GuestConfig:
    """How the guest OS reacts (``vm.guest`` in a scenario).

    ``powerdown``: what the ACPI power button does — ``shutdown`` (SHUTDOWN
    ``{guest: true, reason: guest-shutdown}`` after ``powerdown_delay``; STOP under
    ``-no-shutdown``, else QEMU exits) or ``ignore``.  ``unplug``: what a PCI unplug
    request does — ``eject`` (the device leaves after ``unplug_delay``), ``ignore``
    (it stays, as with a guest that has no hotplug driver) or ``refuse`` (the guest
    declines after the delay: the device stays and a new ``device_del`` asks again;
    QEMU sends no event for a refused PCI unplug).
    ``lock_tray``: whether the guest locks CD-ROM trays while it uses a medium;
    ``tray``: what it does when the host asks to eject a locked tray — ``open``
    (unlock and open it after ``tray_delay``) or ``ignore``.
    ``balloon``: what its balloon driver does with a new target (``balloon``) —
    ``follow`` (it starts after ``balloon_delay`` and moves ``balloon_rate`` bytes a
    second, reporting its size as it goes: BALLOON_CHANGE) or ``ignore`` (no driver:
    the guest keeps its memory).  The defaults are a cooperative guest with short
    delays.
    """

    powerdown: str = "shutdown"
    powerdown_delay: Delay = (0.5, 2.0)
    unplug: str = "eject"
    unplug_delay: Delay = (0.05, 0.5)
    lock_tray: bool = True
    tray: str = "open"
    tray_delay: Delay = (0.05, 0.5)
    balloon: str = "follow"
    balloon_delay: Delay = (0.01, 0.1)
    balloon_rate: int = 1 << 30

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("powerdown", self.powerdown, POWERDOWN_POLICIES),
            ("unplug", self.unplug, UNPLUG_POLICIES),
            ("tray", self.tray, TRAY_POLICIES),
            ("balloon", self.balloon, BALLOON_POLICIES),
        ):
            if value not in allowed:
                raise MachineError(f"guest {name} {value!r} is not one of {', '.join(allowed)}")
        if self.balloon_rate < 1:
            raise MachineError(f"guest balloon_rate {self.balloon_rate} is not a positive size")
        for name in ("powerdown_delay", "unplug_delay", "tray_delay", "balloon_delay"):
            delay = getattr(self, name)
            if isinstance(delay, int | float):  # one number: exactly that long
                delay = (float(delay), float(delay))
                object.__setattr__(self, name, delay)
            low, high = delay
            if not 0 <= low <= high:
                raise MachineError(f"guest {name} {list(delay)} is not 0 <= low <= high seconds")


@dataclass
class _Pending:
    """A reaction the guest will have: when, and what it does then."""

    due: float
    act: Callable[[], list[Event]]
    label: str


class Guest(Component):
    """The guest OS: its pending reactions to power button presses and unplug requests."""

    def reset(self) -> None:
        self._pending: list[_Pending] = []

    @property
    def config(self) -> GuestConfig | None:
        """The guest's policy (``None``: no guest OS; nothing reacts)."""
        config: GuestConfig | None = self.host.vm.guest
        return config

    def _delay(self, bounds: Delay) -> float:
        low, high = bounds
        return low if low == high else self.host.rng.uniform(low, high)

    def _later(self, bounds: Delay, label: str, act: Callable[[], list[Event]]) -> None:
        self._pending.append(_Pending(self.host.clock() + self._delay(bounds), act, label))

    def pending(self) -> list[str]:
        """What the guest is about to do, soonest first (for ``show`` and tests)."""
        return [p.label for p in sorted(self._pending, key=lambda p: p.due)]

    # --- what the host asks --------------------------------------------------------

    def power_button(self) -> None:
        """The ACPI power button was pressed (POWERDOWN is the machine's to send)."""
        config = self.config
        if config is None or config.powerdown == "ignore":
            return
        if any(p.label == "shutdown" for p in self._pending):
            return  # already shutting down: a second press changes nothing
        self._later(config.powerdown_delay, "shutdown", self._shut_down)

    def _shut_down(self) -> list[Event]:
        self._pending.clear()  # a guest that powers off does nothing more
        return self.host.shutdown("guest-shutdown")

    def unplug_request(
        self, label: str, eject: Callable[[], list[Event]], refuse: Callable[[], list[Event]]
    ) -> bool:
        """Ask the guest to release a device: ``eject`` or ``refuse`` runs later, as the
        guest decides; ``False`` when no reaction will come."""
        config = self.config
        if config is None or config.unplug == "ignore":
            return False
        act = eject if config.unplug == "eject" else refuse
        self._later(config.unplug_delay, f"unplug {label}", act)
        return True

    def tray_eject_request(self, label: str, open_tray: Callable[[], list[Event]]) -> bool:
        """The host asks to eject the medium of a tray the guest locked: ``open_tray`` runs
        later when the guest complies; ``False`` when it will not."""
        config = self.config
        if config is None or config.tray == "ignore":
            return False
        self._later(config.tray_delay, f"open tray {label}", open_tray)
        return True

    @property
    def locks_trays(self) -> bool:
        """Whether the guest locks the tray of a CD-ROM whose medium it uses."""
        config = self.config
        return config is not None and config.lock_tray

    # --- time ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if not self._pending or not self.host.running:
            return None  # a guest whose vCPUs are stopped does nothing
        return min(p.due for p in self._pending)

    def poll(self) -> list[Event]:
        out: list[Event] = []
        while self.host.running and not self.host.exited:
            now = self.host.clock()
            due = [p for p in self._pending if p.due <= now]
            if not due:
                break
            first = min(due, key=lambda p: p.due)
            self._pending.remove(first)
            out += first.act()
        return out

    def rebooted(self) -> None:
        """The guest restarted: what it was asked before is forgotten."""
        self._pending.clear()
