"""The watchdog device: its expiry, the WATCHDOG event and the action that follows.

QEMU's ``watchdog_perform_action()`` sends WATCHDOG (throttled) with the action,
then does it: a guest reset, a pause, a power button press, an exit.
:data:`FOLLOWS` says which event each action leads to; the machine's handler
produces it and the conformance checker expects it after each WATCHDOG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from qmpsim.qmp.profiles import Enum

from .component import Component, Unmet, on_cause
from .power import Power
from .runstate import RunState
from .values import Event


class WatchdogAction(StrEnum):
    """QEMU's ``WatchdogAction`` (``-watchdog-action``, WATCHDOG's ``action``)."""

    RESET = "reset"
    SHUTDOWN = "shutdown"
    POWEROFF = "poweroff"
    PAUSE = "pause"
    DEBUG = "debug"
    NONE = "none"
    INJECT_NMI = "inject-nmi"


WATCHDOG_ACTIONS = tuple(WatchdogAction)
"""Every watchdog action, as QEMU spells it."""

FOLLOWS: Mapping[WatchdogAction, str] = {
    WatchdogAction.RESET: "RESET",
    WatchdogAction.PAUSE: "STOP",
    WatchdogAction.SHUTDOWN: "POWERDOWN",
}
"""The event that follows WATCHDOG for each action that has one (``poweroff`` exits
QEMU at once; the others only report)."""


@dataclass(frozen=True)
class WatchdogExpired:
    """The watchdog timer expired; ``action`` overrides the VM's configured one."""

    action: str | None = None


class Watchdog(Component):
    """The watchdog device (``VmConfig.watchdog`` is its action; ``None``: no device)."""

    def action(self, cause: WatchdogExpired) -> WatchdogAction | None:
        """What the expiry ``cause`` does on this VM (``None``: no watchdog, no action)."""
        action = cause.action or self.host.vm.watchdog
        return None if action is None else WatchdogAction(action)

    def cause_unmet(self, cause: Any) -> Unmet | None:
        action = cause.action or self.host.vm.watchdog
        if action is None:
            return Unmet("the VM has no watchdog: set vm.watchdog to its action, or give `action`")
        spec = self.host.profile.events["WATCHDOG"].data
        member = spec.member("action") if spec else None
        known = member.type.values if member and isinstance(member.type, Enum) else ()
        known = known or WATCHDOG_ACTIONS
        if action not in known:
            return Unmet(
                f"watchdog action {action!r} does not exist in profile"
                f" {self.host.profile.name}; expected one of: {', '.join(known)}",
                "action" if cause.action else None,
            )
        return None

    @on_cause(WatchdogExpired)
    def expired(self, cause: WatchdogExpired) -> list[Event]:
        host = self.host
        action = self.action(cause)
        assert action is not None
        out = host.send(host.event("WATCHDOG", {"action": action.value}))
        if action == WatchdogAction.RESET:
            out += host.part(Power).guest_reset()
        elif action == WatchdogAction.PAUSE:
            out += host.stop(RunState.WATCHDOG)
        elif action == WatchdogAction.SHUTDOWN:
            out += host.part(Power).power_button()
        elif action == WatchdogAction.POWEROFF:
            host.exited = True
        return out
