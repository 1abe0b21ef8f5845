"""Run state and power: STOP, RESUME, RESET, SHUTDOWN, POWERDOWN, SUSPEND, WAKEUP,
WATCHDOG, GUEST_PANICKED, BLOCK_IO_ERROR, BALLOON_CHANGE.

The run state moves as :mod:`qmpsim.vm.runstate`'s table for the profile's QEMU
says (the machine's table too), and a WATCHDOG's action leads to the event
:data:`qmpsim.vm.watchdog.FOLLOWS` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmpsim.vm.block_errors import ErrorAction
from qmpsim.vm.runstate import RunState
from qmpsim.vm.watchdog import FOLLOWS, WATCHDOG_ACTIONS, WatchdogAction

from .core import _Core, _on_event

# where a reset leaves the run state alone (main_loop_should_exit())
_RESET_KEEPS = (RunState.RUNNING, RunState.INMIGRATE, RunState.FINISH_MIGRATE)


def _watchdog_follows(action: Any, *, modern: bool) -> tuple[str, ...]:
    """The events one of which must follow a WATCHDOG of ``action``: the one its action
    leads to (:data:`qmpsim.vm.watchdog.FOLLOWS`), or what QEMU may send instead."""
    follows = FOLLOWS.get(WatchdogAction(action)) if action in WATCHDOG_ACTIONS else None
    if follows == "RESET" and modern:
        return ("RESET", "SHUTDOWN")  # -no-reboot turns the reset into a shutdown
    if follows == "POWERDOWN" and not modern:
        # before QEMU 1.2 a power button press had no event: the guest's SHUTDOWN follows
        return ("SHUTDOWN", "POWERDOWN")
    # "poweroff" exits QEMU at once, like `quit`, with no further event
    return () if follows is None else (follows,)


class _PowerRules(_Core):
    """The rules over the run state and power events."""

    @_on_event("STOP")
    def _on_stop(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        if self._stopped():
            self._report(line, "stop-while-stopped", "STOP while the VM is already stopped")
        # Which stopped state (paused, io-error, watchdog…) changes nothing the table says
        # of STOP, RESUME and RESET; shutdown does: only a reset leaves it.
        state = RunState.PAUSED if self.shutdown_line is None else RunState.SHUTDOWN
        self.shutdown_line = None
        self.status = state

    @_on_event("RESUME")
    def _on_resume(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        # from QEMU 9.0 a VM stopped while suspended resumes to suspended
        back = self.suspended and self.runstates.allows(RunState.PAUSED, RunState.SUSPENDED)
        target = RunState.SUSPENDED if back else RunState.RUNNING
        owed = [ob for ob in self.obligations if "STOP" in ob.kinds]
        if owed:
            self._report(
                line, owed[0].rule, f"RESUME before the STOP due since line {owed[0].line}"
            )
            self.obligations = [ob for ob in self.obligations if ob not in owed]
        elif self.status in (RunState.RUNNING, RunState.SUSPENDED):
            # cont leaves a suspended VM to system_wakeup: RESUME comes from a stopped one
            self._report(line, "resume-while-running", "RESUME while the VM is already running")
        elif self.status is not None and not self.runstates.allows(self.status, target):
            self._report(
                line,
                "resume-needs-reset",
                f"RESUME of a VM in {self.status}, which only a RESET leaves"
                + (" (a SHUTDOWN stopped it)" if self.status == RunState.SHUTDOWN else ""),
            )
        self._after_shutdown(line, "RESUME")
        self.status = target

    @_on_event("RESET")
    def _on_reset(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        self._after_shutdown(line, "RESET")
        # the main loop puts a VM that does not run in prelaunch after a reset (a
        # suspended one included, without a STOP)
        if self.status not in (None, *_RESET_KEEPS):
            self.status = RunState.PRELAUNCH
        self.suspended = False

    @_on_event("SUSPEND")
    def _on_suspend(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        if self.suspended:
            self._report(line, "suspend", "SUSPEND while the VM is already suspended")
        self.suspended = True
        if self.status == RunState.RUNNING:
            self.status = RunState.SUSPENDED

    @_on_event("WAKEUP")
    def _on_wakeup(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        if self.suspended is False:
            self._report(line, "suspend", "WAKEUP of a VM that is not suspended")
        self.suspended = False
        if self.status == RunState.SUSPENDED:
            self.status = RunState.RUNNING

    @_on_event("BALLOON_CHANGE")
    def _on_balloon_change(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        actual = data.get("actual")
        if isinstance(actual, int) and (actual <= 0 or actual % 4096):
            self._report(
                line, "balloon-change", f"BALLOON_CHANGE actual {actual} is not whole 4 KiB pages"
            )

    @_on_event("POWERDOWN")
    def _on_powerdown(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        self._after_shutdown(line, "POWERDOWN")

    @_on_event("SHUTDOWN")
    def _on_shutdown(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._after_shutdown(line, "SHUTDOWN")
        self.suspended = False
        # `quit` and host signals end the process whatever -no-shutdown says
        if not self._stopped() and data.get("reason") not in ("host-qmp-quit", "host-signal"):
            self.shutdown_line = line

    def _after_shutdown(self, line: int, name: str) -> None:
        if self.shutdown_line is not None:
            self._report(
                line,
                "shutdown-stop",
                f"{name} after the SHUTDOWN of line {self.shutdown_line}: the VM should have "
                "quit, or stopped first (-no-shutdown)",
            )
            self.shutdown_line = None

    @_on_event("BLOCK_IO_ERROR")
    def _on_block_io_error(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        if data.get("action") == ErrorAction.STOP and not self._stopped() and not self._owes_stop():
            self._owe(
                line,
                "block-io-error-stop",
                ("STOP",),
                "BLOCK_IO_ERROR with action 'stop' on a running VM must be followed by STOP",
            )

    @_on_event("WATCHDOG")
    def _on_watchdog(self, line: int, data: Mapping[str, Any], stamp: int | None) -> None:
        action = data.get("action")
        kinds = _watchdog_follows(action, modern=self._modern)
        earlier, self.since_watchdog = self.since_watchdog, []
        if not kinds or (kinds == ("STOP",) and self._stopped()):
            return
        # a held-back WATCHDOG comes after its own consequence
        for c in earlier:
            if not c.claimed and c.name in kinds and stamp is not None and c.stamp >= stamp:
                c.claimed = True
                return
        self._owe(
            line,
            "watchdog-action",
            kinds,
            f"WATCHDOG with action {action!r} must be followed by {' or '.join(kinds)}",
        )

    @_on_event("GUEST_PANICKED")
    def _on_guest_panicked(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        action = data.get("action")
        if action in ("pause", "poweroff") and not self._stopped():
            self._owe(
                line, "guest-panicked", ("STOP",), f"GUEST_PANICKED {action} must stop the VM"
            )
        if action == "poweroff":
            self._owe(
                line, "guest-panicked", ("SHUTDOWN",), "GUEST_PANICKED poweroff must shut down"
            )
