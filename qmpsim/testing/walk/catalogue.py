"""The moves a walk knows, by name: which exist, in what order they are offered, and the
groups the walk treats alike (a :class:`Move` is one of them, ready to make).

Names only, no behaviour: :mod:`~qmpsim.testing.walk.moves` says what each one offers
and does.  The order is part of every seed's stream: a walk offers its moves in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qmpsim.vm import machine as m

__all__ = [
    "BALLOON",
    "CAUSES",
    "COMMANDS",
    "DEVICES",
    "JOBS",
    "MAY_END",
    "MIGRATION",
    "MIGRATION_COMMANDS",
    "MOST_PER_MOVE",
    "MOVES",
    "MOVE_ORDER",
    "SPICE",
    "VNC",
    "Move",
]

COMMANDS: tuple[str, ...] = (
    "stop",
    "cont",
    "system_reset",
    "system_powerdown",
    "quit",
    "device_add",
    "device_del",
    "drive-mirror",
    "job-complete",
    "job-cancel",
    "balloon",
    "system_wakeup",
)
"""Monitor commands a stream may contain the effects of (a NIC's and a mirror's whole
life among them, a balloon target, a wake-up)."""

MIGRATION_COMMANDS: tuple[str, ...] = (
    "migrate",
    "migrate_cancel",
    "migrate-start-postcopy",
    "migrate-pause",
)
"""Migration moves, drawn only when asked for by name (``causes=``): a migration to a
simulated destination that completes, or is cancelled, or switches to postcopy, is
paused and resumed (``migrate`` ``resume: true``).  Not among the defaults, so that the
streams a seed gave before stay what they were."""

CAUSES: tuple[str, ...] = (
    "rtc-change",
    "guest-reset",
    "disk-error",
    "watchdog",
    "vnc-connect",
    "vnc-initialize",
    "vnc-disconnect",
    "spice-connect",
    "spice-initialize",
    "spice-disconnect",
    "guest-powerdown",
    "guest-shutdown",
    "guest-panic",
    "disk-io",
    "job-error",
    "guest-unplugs",
    "guest-balloon",
    "guest-suspend",
)
"""Causes, named as in scenario files."""

MOVES: tuple[str, ...] = (*CAUSES, *COMMANDS, *MIGRATION_COMMANDS)
"""Every move a walk knows, by name (the migration moves only when named)."""

MOVE_ORDER = (
    "stop",
    "cont",
    "system_reset",
    "rtc-change",
    "guest-reset",
    "system_powerdown",
    *CAUSES[2:-3],
    "device_add",
    "device_del",
    "guest-unplugs",
    "drive-mirror",
    "job-complete",
    "job-cancel",
    "balloon",
    "guest-balloon",
    "guest-suspend",
    "system_wakeup",
    *MIGRATION_COMMANDS,
    "quit",
)
"""The order in which a walk offers its moves: simple ones first, endings last."""

# Groups of moves.  All but SPICE depend on what the walk did so far, not on the VM's
# description alone: the VNC clients it connected; the jobs running now; the devices
# plugged now (a NIC plugged, its unplug asked for, the guest letting go of it: the walk's
# VMs have no guest OS of their own to do it); a balloon device (a new target, the guest
# reporting a size in MiB); a migration's state.
VNC = ("vnc-connect", "vnc-initialize", "vnc-disconnect")
SPICE = ("spice-connect", "spice-initialize", "spice-disconnect")
JOBS = ("drive-mirror", "job-complete", "job-cancel", "job-error")
DEVICES = ("device_add", "device_del", "guest-unplugs")
BALLOON = ("balloon", "guest-balloon")
MIGRATION = frozenset(MIGRATION_COMMANDS)

MOST_PER_MOVE = 6
"""A move emits at most this many events (a cont that retries two failing disks)."""

MAY_END = frozenset(
    {"quit", "system_powerdown", "guest-powerdown", "guest-shutdown", "guest-panic", "watchdog"}
)
"""The moves that may end the VM, which the walk can undo when that is too early.  Only
these save the machine first (a step costs the same either way, but saving is most of a
step's cost); another move that ended the VM would only end the stream early."""


@dataclass(frozen=True)
class Move:
    """One move a walk may make: its kind, its arguments as a scenario step names them,
    and the cause it is (``None``: the monitor command named by ``kind``)."""

    kind: str
    args: dict[str, Any]
    cause: m.Cause | None
