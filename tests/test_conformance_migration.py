"""The checker's migration rules: QEMU's migration states, passes counted while it runs,
STOP before a source completes."""

from __future__ import annotations

from typing import Any

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events
from qmpsim.vm.machine import (
    GuestConfig,
    GuestDirtiesMemory,
    Machine,
    ManualClock,
    MigrationTargetLost,
    VmConfig,
)

PROFILE = get_profile("qemu-7.2")
_STAMP = {"seconds": 1_700_000_000, "microseconds": 0}


def ev(name: str, **data: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"event": name, "timestamp": _STAMP}
    if data:
        message["data"] = data
    return message


def status(name: str) -> dict[str, Any]:
    return ev("MIGRATION", status=name)


def rules(events: list[dict[str, Any]]) -> list[str]:
    return [v.rule for v in check_events(events, PROFILE)]


def test_modelled_migrations_pass() -> None:
    clock = ManualClock()
    m = Machine(VmConfig(machine="pc", cpus=1, guest=GuestConfig()), PROFILE, clock)
    out = list(
        m.execute(
            "migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}
        ).events
    )
    m.cause(GuestDirtiesMemory(200 << 20))
    out += m.execute("migrate", {"uri": "tcp:192.0.2.1:4444"}).events
    clock.advance(5)
    out += m.poll()
    out += m.cause(MigrationTargetLost())
    out += m.execute("migrate", {"uri": "tcp:192.0.2.1:4444"}).events
    clock.advance(2)
    out += m.poll()
    out += m.execute("migrate-set-parameters", {"max-bandwidth": 10 << 30}).events
    clock.advance(2)
    out += m.poll()
    names = [e.name for e in out]
    assert names.count("MIGRATION_PASS") > 6 and "STOP" in names
    assert check_events([e.to_json() for e in out], PROFILE) == []


def test_qemu_s_own_migration_passes() -> None:
    # QEMU 7.2 migrating a running -M pc (tests/test_diff_migration.py)
    events = [
        status("setup"), ev("MIGRATION_PASS", **{"pass": 1}), status("active"), ev("STOP"),
        ev("MIGRATION_PASS", **{"pass": 2}), status("completed"), ev("RESUME"),
        status("setup"), ev("MIGRATION_PASS", **{"pass": 1}), status("active"),
        status("cancelling"), status("cancelled"),
    ]  # fmt: skip
    assert rules(events) == []


def test_transitions_migration_c_never_makes_are_flagged() -> None:
    assert rules([status("setup"), status("completed")]) == ["migration-status"]
    assert rules([status("setup"), status("active"), status("setup")]) == ["migration-status"]
    assert rules([status("cancelling"), status("active")]) == ["migration-status"]
    # met half-way: taken as the stream finds it
    assert rules([status("active"), ev("STOP"), status("completed")]) == []


def test_passes_count_up_while_it_runs() -> None:
    one, three = ev("MIGRATION_PASS", **{"pass": 1}), ev("MIGRATION_PASS", **{"pass": 3})
    assert rules([status("setup"), one, status("active"), three]) == ["migration-pass"]
    cancelled = [status("setup"), status("cancelling"), status("cancelled")]
    assert rules([*cancelled, one]) == ["migration-pass"]


def test_a_source_completes_only_once_the_vm_stopped() -> None:
    one = ev("MIGRATION_PASS", **{"pass": 1})
    two = ev("MIGRATION_PASS", **{"pass": 2})
    running = [ev("STOP"), ev("RESUME"), status("setup"), one, status("active")]
    assert rules([*running, two, status("completed")]) == ["migration-stop"]
    # a destination completes after it resumed: it has no passes
    assert rules([ev("STOP"), status("setup"), status("active"), ev("RESUME"),
                  status("completed")]) == []  # fmt: skip
