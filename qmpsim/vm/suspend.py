"""Suspend and wake-up: SUSPEND, SUSPEND_DISK, the ``suspended`` run state, ``system_wakeup``.

The guest suspends itself: it writes a sleep type to the ACPI PM1a control
register, and QEMU either suspends the VM to RAM (S3: the vCPUs stop, the run
state becomes ``suspended`` with no STOP, SUSPEND goes out) or, for
suspend-to-disk (S4: the guest has written its memory out itself), sends
SUSPEND_DISK and powers off as a guest shutdown does.  Only the host wakes a
suspended VM here: ``system_wakeup`` sends WAKEUP (before its reply) and the
vCPUs run again; ``query-current-machine`` says whether the machine can
(``-M pc`` and ``q35`` have ACPI, ``-M none`` has not).

What real QEMU 7.2 and 10.0 show, with the test writing PM1a_CNT for the guest
(tests/test_diff_suspend.py): every event, run state and refusal text, and how
``stop``/``cont`` treat a suspended VM, which changed in QEMU 9.0: until then
both leave it as it is; from then ``stop`` pauses it (STOP) and ``cont`` puts it
back to ``suspended`` (RESUME).  ``-global PIIX4_PM.disable_s3=1`` does not
change ``wakeup-suspend-support`` (checked on 7.2); it hides S3 from the guest's
ACPI tables, which qmpsim does not model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .component import Component, Unmet, on_cause, on_command
from .device_types import machine_type
from .runstate import RunState, rules
from .values import CommandError, Event, Outcome

SUSPENDED = RunState.SUSPENDED


@dataclass(frozen=True)
class GuestSuspend:
    """The guest suspends itself: to RAM (S3), or to disk (S4) when ``disk``."""

    disk: bool = False


class Suspend(Component):
    """Whether the VM is suspended, and what ``stop``/``cont`` and the host's wake-up do then."""

    def reset(self) -> None:
        self._paused_while_suspended = False

    @property
    def wakeup_supported(self) -> bool:
        """``qemu_wakeup_suspend_enabled()``: the machine has ACPI power management."""
        return machine_type(self.host.vm) != "none"

    @property
    def _stop_pauses(self) -> bool:
        # QEMU 9.0's vm_stop() treats a suspended VM as live (runstate_is_live())
        return rules(self.host.profile).live(SUSPENDED)

    # --- what the machine's stop, cont and system_reset ask -----------------------------

    def stop(self) -> list[Event] | None:
        """``stop`` of a suspended VM: its events, or ``None`` when the VM is not suspended."""
        if self.host.status != SUSPENDED:
            return None
        if not self._stop_pauses:
            return []
        self._paused_while_suspended = True
        self.host.status = RunState.PAUSED
        return [self.host.event("STOP")]

    @property
    def asleep(self) -> bool:
        """Whether the guest sleeps: suspended, or stopped while suspended."""
        return self.host.status == SUSPENDED or self._paused_while_suspended

    def resumes_to(self) -> RunState:
        """The run state ``cont`` leaves the VM in (``running``, or ``suspended`` again)."""
        state = SUSPENDED if self._paused_while_suspended else RunState.RUNNING
        self._paused_while_suspended = False
        return state

    def rebooted(self) -> None:
        """A reset: the suspended state, if any, is gone."""
        self._paused_while_suspended = False

    # --- commands ----------------------------------------------------------------------

    @on_command("system_wakeup")
    def system_wakeup(self, _args: Mapping[str, Any]) -> Outcome:
        if self.host.profile.version >= (4, 0):
            if not self.wakeup_supported:
                return _error("wake-up from suspend is not supported by this guest")
            if self.host.status != SUSPENDED:
                return _error("Unable to wake up: guest is not in suspended state")
        elif self.host.status != SUSPENDED:
            return Outcome({})  # before 4.0 a wake-up request outside suspend did nothing
        self.host.status = RunState.RUNNING
        # the main loop resets the devices (no RESET: the cause is none) and resumes the vCPUs
        return Outcome({}, (self.host.event("WAKEUP"),))

    @on_command("query-current-machine")
    def query_current_machine(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"wakeup-suspend-support": self.wakeup_supported})

    # --- the guest ---------------------------------------------------------------------

    @on_cause(GuestSuspend)
    def suspend(self, cause: GuestSuspend) -> list[Event]:
        if cause.disk:  # acpi_pm1_cnt_write(): S4 is a guest shutdown announced as such
            return [self.host.event("SUSPEND_DISK"), *self.host.shutdown("guest-shutdown")]
        self.host.status = SUSPENDED  # qemu_system_suspend(): no vm_stop, so no STOP
        return [self.host.event("SUSPEND")]

    def cause_unmet(self, cause: Any) -> Unmet | None:
        if machine_type(self.host.vm) == "none":
            return Unmet(
                "the VM has no ACPI to suspend with (-M none): give it cpus, which make it a pc"
            )
        event = "SUSPEND_DISK" if cause.disk else "SUSPEND"
        if event not in self.host.profile.events:
            return Unmet(f"profile {self.host.profile.name} has no {event} event")
        return None

    def cause_error(self, cause: Any) -> str | None:
        if not self.host.running:
            return f"GuestSuspend needs a running guest (the VM is {self.host.status})"
        return None


def _error(desc: str) -> Outcome:
    return Outcome(CommandError("GenericError", desc))
