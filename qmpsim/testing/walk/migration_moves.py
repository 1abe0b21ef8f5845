"""The walk's migration moves (opt-in, :data:`~qmpsim.testing.walk.catalogue.MIGRATION_COMMANDS`):
what each offers, when it does something, what else may happen meanwhile.

A migration goes to a simulated destination that accepts the stream; a slow one takes
seconds of virtual time: time for a cancel, a switch to postcopy, a pause.
"""

from __future__ import annotations

from qmpsim.testing.walk.catalogue import MIGRATION_COMMANDS, SPICE, VNC, Move
from qmpsim.testing.walk.choices import Choices
from qmpsim.vm import machine as m
from qmpsim.vm.migration import Migration
from qmpsim.vm.suspend import Suspend

__all__ = ["held_by_migration", "migration_legal", "migration_moves", "start_migration"]

_DESTINATION = "tcp:192.0.2.7:4444"
_SLOW = 50_000
_FAST = 128 << 20  # 128 MiB/s: it completes at once
_MIGRATABLE = ("running", "paused", "prelaunch")
# what else happens while a migration is under way: nothing that changes the run state
# behind the migration's back (a guest suspending, shutting down or panicking there is a
# stream the checker's rules do not foresee), nor quit
_DURING_MIGRATION = frozenset(
    {"stop", "cont", "rtc-change", "disk-io", *VNC, *SPICE, *MIGRATION_COMMANDS}
)


def held_by_migration(machine: m.Machine, move: Move) -> bool:
    """Whether a migration under way rules ``move`` out."""
    return move.kind not in _DURING_MIGRATION and machine.part(Migration).under_way()


def migration_moves(kind: str) -> list[Move]:
    """A new migration or, once paused in postcopy, its resumption; a cancel; a switch
    to postcopy; a pause (whether each is legal is asked when it is tried)."""
    if kind == "migrate":
        return [
            Move(kind, {"uri": _DESTINATION}, None),
            Move(kind, {"uri": _DESTINATION, "resume": True}, None),
        ]
    return [Move(kind, {}, None)]


def migration_legal(machine: m.Machine, move: Move) -> bool:
    """Whether the migration command would do something (a refusal says nothing)."""
    part = machine.part(Migration)
    status = part.status
    if move.kind == "migrate":
        if move.args.get("resume"):
            return status == "postcopy-paused"
        # (not a VM that shut down or panicked: the checker holds a RESUME after it to
        # a reset, which a migration's postmigrate would let a cont skip)
        return (
            part.refusal() is None
            and machine.status in _MIGRATABLE
            and not machine.part(Suspend).asleep  # (cont would suspend it again)
        )
    if move.kind == "migrate_cancel":
        postcopy = status.startswith("postcopy-")
        return status in ("setup", "active", "pre-switchover", "device") or (
            postcopy and machine.profile.version < (9, 2, 0)
        )
    if move.kind == "migrate-start-postcopy":
        return bool(part.caps.get("postcopy-ram")) and status in ("setup", "active")
    return status in ("postcopy-active", "postcopy-recover")  # migrate-pause


def start_migration(ch: Choices, machine: m.Machine) -> None:
    """The capabilities and speed of a new migration: events on, postcopy or not, fast
    (it completes at once) or slow."""
    caps = [
        {"capability": "events", "state": True},
        {"capability": "postcopy-ram", "state": ch.boolean()},
    ]
    machine.execute("migrate-set-capabilities", {"capabilities": caps})
    speed = _SLOW if ch.boolean() else _FAST
    params = {"max-bandwidth": speed, "max-postcopy-bandwidth": speed}
    machine.execute("migrate-set-parameters", params)
