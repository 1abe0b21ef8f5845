"""Run control and power: ``stop``, ``cont``, resets, the power button, shutdowns, ``quit``.

The commands a management plane starts and stops a VM with, and what the guest
and the host do to its power: a guest that shuts down, reboots or panics, an
ACPI power button, a signal to QEMU.  The run state they change is the
machine's (``Host.status``), which :mod:`qmpsim.vm.runstate`'s table polices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .block import BlockGraph
from .component import Component, Unmet, on_cause, on_command
from .guest import Guest
from .migration import Migration
from .runstate import RunState, rules
from .suspend import Suspend
from .values import CommandError, Event, Outcome


@dataclass(frozen=True)
class GuestShutdown:
    """The guest powered itself off (ACPI shutdown, halt)."""


@dataclass(frozen=True)
class GuestReset:
    """The guest rebooted itself."""


@dataclass(frozen=True)
class GuestPanic:
    """The guest kernel panicked (pvpanic)."""


@dataclass(frozen=True)
class GuestCrashLoaded:
    """The guest's crash kernel loaded after a panic (kdump; pvpanic's second bit):
    GUEST_CRASHLOADED with ``action: run``, and the VM runs on."""


@dataclass(frozen=True)
class GuestPowerdown:
    """An ACPI power button press reached the guest (what ``system_powerdown`` does)."""


@dataclass(frozen=True)
class HostSignal:
    """The host asked QEMU to terminate (SIGTERM, SIGINT or SIGHUP): SHUTDOWN
    ``{guest: false, reason: host-signal}``, then QEMU exits, even under ``-no-shutdown``."""


class Power(Component):
    """The VM's run control (``stop``, ``cont``, ``system_reset``, ``quit``, ``query-status``)
    and its power events (SHUTDOWN, RESET, POWERDOWN, GUEST_PANICKED)."""

    def power_button(self) -> list[Event]:
        """``qemu_system_powerdown``: POWERDOWN, and the guest decides what follows."""
        self.host.part(Guest).power_button()
        return [self.host.event("POWERDOWN")]

    def guest_reset(self) -> list[Event]:
        """The guest's own reset (a reboot, a watchdog's ``reset``): RESET."""
        self.host.part(Guest).rebooted()
        return [self.host.event("RESET", self.host.reset_data(True, "guest-reset"))]

    # --- commands ----------------------------------------------------------------------

    @on_command("query-status")
    def query_status(self, _args: Mapping[str, Any]) -> Outcome:
        reply: dict[str, Any] = {"running": self.host.running, "singlestep": False}
        if self.host.profile.run_states:
            reply["status"] = str(self.host.status)
        return Outcome(reply)

    @on_command("stop")
    def stop(self, _args: Mapping[str, Any]) -> Outcome:
        suspended = self.host.part(Suspend).stop()
        if suspended is not None:  # what stop does to a suspended VM depends on the version
            return Outcome({}, tuple(suspended))
        if self.host.status == RunState.INMIGRATE:  # the VM will not run once its state came
            self.host.part(Migration).hold(autostart=False)
            return Outcome({})
        return Outcome({}, tuple(self.host.stop(RunState.PAUSED)))

    @on_command("cont")
    def cont(self, _args: Mapping[str, Any]) -> Outcome:
        host = self.host
        if rules(host.profile).needs_reset(RunState(host.status)):
            return Outcome(
                CommandError("GenericError", "Resetting the Virtual Machine is required")
            )
        if host.status == RunState.SUSPENDED:
            return Outcome({})  # qmp_cont() leaves a suspended VM to system_wakeup
        if host.status == RunState.INMIGRATE:  # it runs once its state came
            host.part(Migration).hold(autostart=True)
            return Outcome({})
        host.part(BlockGraph).continued()
        if host.running:
            return Outcome({})
        host.status = host.part(Suspend).resumes_to()
        resume = host.event("RESUME")
        # the devices retry their failed requests once the VM runs again, after the reply
        host.part(BlockGraph).resumed()
        return Outcome({}, (resume,))

    @on_command("system_reset")
    def system_reset(self, _args: Mapping[str, Any]) -> Outcome:
        host = self.host
        event = host.event("RESET", host.reset_data(False, "host-qmp-system-reset"))
        host.part(Guest).rebooted()
        host.part(Suspend).rebooted()
        host.part(BlockGraph).requests_dropped()
        if host.profile.run_states and not host.running:
            host.status = RunState.PRELAUNCH
        return Outcome({}, (event,))

    @on_command("system_powerdown")
    def system_powerdown(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({}, tuple(self.power_button()))

    @on_command("quit")
    def quit(self, _args: Mapping[str, Any]) -> Outcome:
        event = self.host.event("SHUTDOWN", self.host.reset_data(False, "host-qmp-quit"))
        self.host.exited = True
        return Outcome({}, (event,), close=True)

    # --- causes ------------------------------------------------------------------------

    def cause_unmet(self, cause: Any) -> Unmet | None:
        profile = self.host.profile
        if isinstance(cause, GuestPanic) and "GUEST_PANICKED" not in profile.events:
            return Unmet(f"profile {profile.name} has no guest panic notification (GUEST_PANICKED)")
        if isinstance(cause, GuestCrashLoaded) and "GUEST_CRASHLOADED" not in profile.events:
            return Unmet(
                f"profile {profile.name} has no crash-loaded notification (GUEST_CRASHLOADED):"
                " QEMU 5.0 added it"
            )
        return None

    @on_cause(GuestShutdown)
    def guest_shutdown(self, _c: GuestShutdown) -> list[Event]:
        return self.host.shutdown("guest-shutdown")

    @on_cause(GuestReset)
    def guest_reboot(self, _c: GuestReset) -> list[Event]:
        return self.guest_reset()

    @on_cause(GuestPanic)
    def guest_panic(self, _c: GuestPanic) -> list[Event]:
        host = self.host
        spec = host.profile.events["GUEST_PANICKED"].data
        member = spec.member("action") if spec else None
        powers_off = member is not None and "poweroff" in getattr(member.type, "values", ())
        old = host.profile.version < (6, 0, 0)
        # qemu_system_guest_panicked(): before 2.9 a panicked guest only paused, until
        # -action (6.0) it paused and then powered off, since then the default
        # panic=shutdown powers off at once; -no-shutdown keeps it paused
        out: list[Event] = []
        if host.vm.no_shutdown or not powers_off or old:
            out.append(host.event("GUEST_PANICKED", {"action": "pause"}))
            out += host.stop(RunState.GUEST_PANICKED)
            if host.vm.no_shutdown or not powers_off:
                return out
        out.append(host.event("GUEST_PANICKED", {"action": "poweroff"}))
        out += host.stop(RunState.GUEST_PANICKED)  # nothing when it paused first
        out.append(host.event("SHUTDOWN", host.reset_data(True, "guest-panic")))
        host.exited = True
        return out

    @on_cause(GuestCrashLoaded)
    def guest_crashloaded(self, _c: GuestCrashLoaded) -> list[Event]:
        # qemu_system_guest_crashloaded(): the event alone; the run state stays
        return [self.host.event("GUEST_CRASHLOADED", {"action": "run"})]

    @on_cause(GuestPowerdown)
    def guest_powerdown(self, _c: GuestPowerdown) -> list[Event]:
        return self.power_button()

    @on_cause(HostSignal)
    def host_signal(self, _c: HostSignal) -> list[Event]:
        # qemu_system_killed() forces the poweroff action: no STOP, whatever -no-shutdown says
        self.host.exited = True
        return [self.host.event("SHUTDOWN", self.host.reset_data(False, "host-signal"))]
