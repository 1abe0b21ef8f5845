"""Migration: MIGRATION and MIGRATION_PASS, by the moves of :mod:`qmpsim.vm.migration_states`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmpsim.vm.migration_states import MIGRATING, MigrationStatus, allows, status_of
from qmpsim.vm.runstate import RunState

from .core import _Core, _on_event


class _MigrationRules(_Core):
    """The rules over a migration's events."""

    @_on_event("MIGRATION")
    def _on_migration(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        text = data.get("status")
        if not isinstance(text, str):
            return
        status = status_of(text)  # None: not QEMU's (the schema rule says so)
        before = self.migration
        if before == MigrationStatus.POSTCOPY_PAUSED and status == MigrationStatus.SETUP:
            return  # migrate-recover before 9.1 announces a setup its state never enters
        # a migration met in the middle of its life starts wherever the stream finds it
        if before is not None and not allows(before, status):
            self._report(line, "migration-status", f"migration went from {before} to {text}")
        if status == MigrationStatus.SETUP and before != MigrationStatus.SETUP:
            self.passes = 0
        if status == MigrationStatus.COMPLETED and self.passes and self.status == RunState.RUNNING:
            self._report(line, "migration-stop", "the migration completed while the VM runs")
        self.migration = status

    @_on_event("MIGRATION_PASS")
    def _on_migration_pass(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        count = data.get("pass")
        if self.migration is not None and self.migration not in MIGRATING:
            self._report(line, "migration-pass", f"a pass while the migration is {self.migration}")
        elif isinstance(count, int) and self.migration is not None and count != self.passes + 1:
            self._report(line, "migration-pass", f"pass {count} after pass {self.passes}")
        if isinstance(count, int):
            self.passes = count
