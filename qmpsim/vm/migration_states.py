"""QEMU's migration states and the moves between them (``migration.c``), as data.

The conformance checker holds a stream's MIGRATION events to these moves; the
migration component (:mod:`qmpsim.vm.migration`) moves through the same states.
"""

from __future__ import annotations

from collections.abc import Mapping

MIGRATION_MOVES: Mapping[str, frozenset[str]] = {
    "none": frozenset({"setup"}),
    "setup": frozenset({"active", "failed", "cancelling"}),
    "active": frozenset(
        {"pre-switchover", "device", "completed", "failed", "cancelling", "postcopy-active"}
    ),
    "pre-switchover": frozenset({"device", "failed", "cancelling", "postcopy-active"}),
    "device": frozenset({"completed", "failed", "cancelling", "postcopy-active"}),
    # (QEMU before 9.2 cancels a postcopy, a paused one too)
    "postcopy-active": frozenset({"postcopy-paused", "completed", "failed", "cancelling"}),
    "postcopy-paused": frozenset(
        {"postcopy-recover-setup", "postcopy-recover", "failed", "cancelling"}
    ),
    "postcopy-recover-setup": frozenset({"postcopy-recover", "postcopy-paused", "failed"}),
    "postcopy-recover": frozenset({"postcopy-active", "postcopy-paused", "failed"}),
    "cancelling": frozenset({"cancelled", "failed"}),
    "completed": frozenset({"setup"}),
    "failed": frozenset({"setup"}),
    "cancelled": frozenset({"setup"}),
}
"""``migration.c``'s moves between ``MigrationStatus`` values, source and destination."""

MIGRATING = frozenset(
    {"setup", "active", "pre-switchover", "device", "cancelling", "postcopy-active"}
)
"""The states in which a migration sends RAM, pass after pass (MIGRATION_PASS; QEMU 7.2
syncs once more just after it said ``postcopy-active``)."""
