"""One table of migration moves: the model moves only as it allows, the checker judges a
stream by it, and the statuses are QEMU's closed set, spelled on the wire as QEMU does; the
migration thread's steps are a closed set too, each played."""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.machine import IncomingConnected, Machine, MachineError, ManualClock, VmConfig
from qmpsim.qmp.json_writer import encode_message
from qmpsim.qmp.profiles import get_profile
from qmpsim.qmp.schema import Enum
from qmpsim.testing.conformance import check_events
from qmpsim.vm import migration_states
from qmpsim.vm.migration import STEPS
from qmpsim.vm.migration_ram import Step
from qmpsim.vm.migration_states import MIGRATION_MOVES, MigrationStatus, move

M = MigrationStatus
PROFILE = get_profile("qemu-7.2")
_STAMP = {"seconds": 1_700_000_000, "microseconds": 0}


def cancelled_migration() -> tuple[Machine, ManualClock, list[dict[str, Any]]]:
    """A guestless pc migrating with events on, cancelled while ``active``."""
    clock = ManualClock()
    machine = Machine(VmConfig(machine="pc", cpus=1), PROFILE, clock)
    caps = {"capabilities": [{"capability": "events", "state": True}]}
    events = list(machine.execute("migrate-set-capabilities", caps).events)
    events += machine.execute("migrate-set-parameters", {"max-bandwidth": 1 << 20}).events
    events += machine.execute("migrate", {"uri": "tcp:192.0.2.1:4444"}).events
    clock.advance(0.01)
    events += machine.poll()
    events += machine.execute("migrate_cancel", {}).events
    return machine, clock, [e.to_json() for e in events]


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["status"] for e in events if e["event"] == "MIGRATION"]


def violations(events: list[dict[str, Any]]) -> list[str]:
    return [v.rule for v in check_events(events, PROFILE)]


def test_the_model_and_the_checker_follow_the_same_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as QEMU has it, a cancel ends cancelled, and the stream passes the checker
    machine, clock, events = cancelled_migration()
    clock.advance(1)
    events += [e.to_json() for e in machine.poll()]
    assert statuses(events) == ["setup", "active", "cancelling", "cancelled"]
    assert violations(events) == []
    # without the move from cancelling to cancelled, the model cannot make it and the
    # checker flags the stream that does
    patched = dict(MIGRATION_MOVES)
    patched[M.CANCELLING] = patched[M.CANCELLING] - {M.CANCELLED}
    monkeypatch.setattr(migration_states, "MIGRATION_MOVES", patched)
    machine, clock, _ = cancelled_migration()
    clock.advance(1)
    with pytest.raises(
        MachineError, match="invalid migration status transition: 'cancelling' -> 'cancelled'"
    ):
        machine.poll()
    assert violations(events) == ["migration-status"]


def test_the_destination_follows_the_table_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def destination() -> Machine:
        machine = Machine(VmConfig(machine="pc", cpus=1, incoming="defer"), PROFILE, ManualClock())
        machine.execute("migrate-incoming", {"uri": "tcp:0:4444"})
        return machine

    machine = destination()
    machine.cause(IncomingConnected())
    assert machine.execute("query-migrate", {}).reply["status"] == "active"
    patched = dict(MIGRATION_MOVES)
    patched[M.SETUP] = patched[M.SETUP] - {M.ACTIVE}
    monkeypatch.setattr(migration_states, "MIGRATION_MOVES", patched)
    with pytest.raises(MachineError, match="'setup' -> 'active'"):
        destination().cause(IncomingConnected())
    setup_active = [
        {"event": "MIGRATION", "data": {"status": s}, "timestamp": _STAMP}
        for s in ("setup", "active")
    ]
    assert violations(setup_active) == ["migration-status"]


def test_a_move_the_table_lacks_is_a_mistake_of_the_model() -> None:
    assert move(M.ACTIVE, M.COMPLETED) is M.COMPLETED
    with pytest.raises(MachineError, match="'completed' -> 'active'"):
        move(M.COMPLETED, M.ACTIVE)


def test_the_statuses_are_qemus() -> None:
    # QEMU 10.0's MigrationStatus, in its order (9.1 added postcopy-recover-setup)
    spec = get_profile("qemu-10.0").events["MIGRATION"].data
    assert spec is not None
    kind = spec.member("status")
    assert kind is not None and isinstance(kind.type, Enum)
    assert tuple(MigrationStatus) == kind.type.values
    # every move leads to a status the table also leaves (or ends at), none to itself
    for before, after in MIGRATION_MOVES.items():
        assert before not in after
        assert after <= MIGRATION_MOVES.keys()


def test_statuses_go_on_the_wire_as_plain_strings() -> None:
    machine, _, events = cancelled_migration()
    migration = next(e for e in events if e["event"] == "MIGRATION")
    assert type(migration["data"]["status"]) is str
    wire, _ = encode_message(migration)
    assert b'"data": {"status": "setup"}' in wire
    reply = machine.execute("query-migrate", {}).reply
    assert isinstance(reply, dict) and type(reply["status"]) is str
    assert reply["status"] == "cancelling"


def test_every_step_of_the_migration_thread_is_played() -> None:
    # a step scheduled with no entry in the table would stall the migration for good
    assert set(STEPS) == set(Step)
