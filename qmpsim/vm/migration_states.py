"""QEMU's migration states and the moves between them (``migration.c``): one table, asked
by the model and the checker.

QEMU changes a migration's state only with ``migrate_set_state()``, from a state it
names to the next.  :data:`MIGRATION_MOVES` is the set of those moves; the migration
component (:mod:`qmpsim.vm.migration`, both its sides) changes its status only
through :func:`move`, which refuses a move the table lacks, and the conformance
checker holds a stream's MIGRATION events to the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from .values import MachineError


class MigrationStatus(StrEnum):
    """QEMU's ``MigrationStatus`` values, as MIGRATION and ``query-migrate`` spell them
    (10.0's order; ``postcopy-recover-setup`` is 9.1's).  ``colo`` and ``wait-unplug``
    (COLO and virtio-net failover) are QEMU's too, but no move leads to them here."""

    NONE = "none"
    SETUP = "setup"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    POSTCOPY_ACTIVE = "postcopy-active"
    POSTCOPY_PAUSED = "postcopy-paused"
    POSTCOPY_RECOVER_SETUP = "postcopy-recover-setup"
    POSTCOPY_RECOVER = "postcopy-recover"
    COMPLETED = "completed"
    FAILED = "failed"
    COLO = "colo"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    WAIT_UNPLUG = "wait-unplug"


_M = MigrationStatus

MIGRATION_MOVES: Mapping[MigrationStatus, frozenset[MigrationStatus]] = {
    _M.NONE: frozenset({_M.SETUP}),
    _M.SETUP: frozenset({_M.ACTIVE, _M.FAILED, _M.CANCELLING}),
    _M.ACTIVE: frozenset(
        {
            _M.PRE_SWITCHOVER,
            _M.DEVICE,
            _M.COMPLETED,
            _M.FAILED,
            _M.CANCELLING,
            _M.POSTCOPY_ACTIVE,
        }
    ),
    _M.PRE_SWITCHOVER: frozenset({_M.DEVICE, _M.FAILED, _M.CANCELLING, _M.POSTCOPY_ACTIVE}),
    _M.DEVICE: frozenset({_M.COMPLETED, _M.FAILED, _M.CANCELLING, _M.POSTCOPY_ACTIVE}),
    # (QEMU before 9.2 cancels a postcopy, a paused one too)
    _M.POSTCOPY_ACTIVE: frozenset({_M.POSTCOPY_PAUSED, _M.COMPLETED, _M.FAILED, _M.CANCELLING}),
    _M.POSTCOPY_PAUSED: frozenset(
        {_M.POSTCOPY_RECOVER_SETUP, _M.POSTCOPY_RECOVER, _M.FAILED, _M.CANCELLING}
    ),
    _M.POSTCOPY_RECOVER_SETUP: frozenset({_M.POSTCOPY_RECOVER, _M.POSTCOPY_PAUSED, _M.FAILED}),
    _M.POSTCOPY_RECOVER: frozenset({_M.POSTCOPY_ACTIVE, _M.POSTCOPY_PAUSED, _M.FAILED}),
    _M.CANCELLING: frozenset({_M.CANCELLED, _M.FAILED}),
    _M.COMPLETED: frozenset({_M.SETUP}),
    _M.FAILED: frozenset({_M.SETUP}),
    _M.CANCELLED: frozenset({_M.SETUP}),
}
"""``migration.c``'s moves between ``MigrationStatus`` values, source and destination."""

MIGRATING = frozenset(
    {_M.SETUP, _M.ACTIVE, _M.PRE_SWITCHOVER, _M.DEVICE, _M.CANCELLING, _M.POSTCOPY_ACTIVE}
)
"""The states in which a migration sends RAM, pass after pass (MIGRATION_PASS; QEMU 7.2
syncs once more just after it said ``postcopy-active``)."""

POSTCOPY_STATES = frozenset(
    {_M.POSTCOPY_ACTIVE, _M.POSTCOPY_PAUSED, _M.POSTCOPY_RECOVER_SETUP, _M.POSTCOPY_RECOVER}
)
"""``migration_in_postcopy()``: the VM has been handed over, its RAM not all sent."""

ALIVE = frozenset({_M.POSTCOPY_ACTIVE, _M.POSTCOPY_RECOVER})
"""``migration_postcopy_is_alive()``: a postcopy whose connection stands."""

RUNNING = frozenset(
    {_M.SETUP, _M.ACTIVE, _M.PRE_SWITCHOVER, _M.DEVICE, _M.CANCELLING, *POSTCOPY_STATES}
)
"""``migration_is_running()``: states in which a new migration is refused."""


def status_of(text: str) -> MigrationStatus | None:
    """``text`` as a :class:`MigrationStatus`, or ``None`` when QEMU has no such status."""
    try:
        return MigrationStatus(text)
    except ValueError:
        return None


def allows(before: MigrationStatus, after: MigrationStatus | None) -> bool:
    """Whether ``migration.c`` moves a migration from ``before`` to ``after`` (``None``: a
    status QEMU does not have)."""
    return after is not None and after in MIGRATION_MOVES.get(before, frozenset())


def move(before: MigrationStatus, after: MigrationStatus) -> MigrationStatus:
    """``migrate_set_state()``: ``after``, or a :class:`MachineError` for a move the
    table lacks (a mistake of the model: QEMU never makes it)."""
    if not allows(before, after):
        raise MachineError(f"invalid migration status transition: '{before}' -> '{after}'")
    return after
