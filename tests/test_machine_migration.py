"""Outgoing migration on the virtual clock: what needs a guest (dirtying memory, not
converging until the bandwidth is raised), failures and cancels; the differential tests
(test_diff_migration.py) cover what a guestless QEMU reaches."""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.machine import (
    Event,
    GuestConfig,
    GuestDirtiesMemory,
    Machine,
    MachineError,
    ManualClock,
    MigrationTargetLost,
    VmConfig,
)
from qmpsim.qmp.profiles import get_profile

MiB = 1 << 20


class Vm:
    """A ``pc`` with a guest, its clock, and every event it said."""

    def __init__(self, profile: str = "qemu-7.2", **vm: Any) -> None:
        self.clock = ManualClock()
        config = VmConfig(machine="pc", cpus=1, guest=GuestConfig(), **vm)
        self.machine = Machine(config, get_profile(profile), self.clock)
        self.events: list[Event] = []
        self.run("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])

    def run(self, command: str, **args: Any) -> Any:
        outcome = self.machine.execute(command, args)
        self.events += outcome.events
        self.events += self.machine.poll()
        return outcome.reply

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, event by event."""
        end = self.clock.now + seconds
        while (due := self.machine.next_deadline()) is not None and due <= end:
            self.clock.now = max(self.clock.now, due)
            self.events += self.machine.poll()
        self.clock.now = end
        self.events += self.machine.poll()

    def statuses(self) -> list[str]:
        return [e.data["status"] for e in self.events if e.name == "MIGRATION" and e.data]

    def names(self) -> list[str]:
        return [e.name for e in self.events]


def test_counters_progress_on_the_virtual_clock() -> None:
    vm = Vm()
    vm.run("migrate-set-parameters", **{"max-bandwidth": 4 * MiB})
    vm.run("migrate", uri="tcp:192.0.2.1:4444")
    vm.wait(1.0)
    first = vm.run("query-migrate")
    vm.wait(1.0)
    second = vm.run("query-migrate")
    assert first["status"] == second["status"] == "active"
    assert first["ram"]["transferred"] < second["ram"]["transferred"]
    assert first["ram"]["remaining"] > second["ram"]["remaining"]
    assert second["total-time"] - first["total-time"] == 1000
    # 4 MiB/s for one more second: that many bytes more on the wire
    assert second["ram"]["transferred"] - first["ram"]["transferred"] == pytest.approx(
        4 * MiB, rel=0.01
    )


def test_an_idle_guest_converges_after_one_round() -> None:
    vm = Vm(memory=512 * MiB)
    vm.run("migrate", uri="unix:/run/dest.sock")
    vm.wait(10.0)
    assert vm.statuses() == ["setup", "active", "completed"]
    assert vm.names().count("STOP") == 1
    assert vm.run("query-status")["status"] == "postmigrate"
    info = vm.run("query-migrate")
    assert info["ram"]["remaining"] == 0
    assert info["ram"]["total"] == 512 * MiB + 532480


def test_a_guest_dirtying_faster_than_the_bandwidth_converges_once_it_is_raised() -> None:
    vm = Vm()
    vm.machine.cause(GuestDirtiesMemory(200 * MiB))
    vm.run("migrate", uri="tcp:192.0.2.1:4444")
    vm.wait(30.0)
    info = vm.run("query-migrate")
    assert info["status"] == "active"
    assert "STOP" not in vm.names()
    assert info["ram"]["dirty-sync-count"] > 5
    assert info["ram"]["dirty-pages-rate"] == 200 * MiB // 4096
    assert info["expected-downtime"] > 300
    assert vm.run("query-status")["status"] == "running"
    vm.run("migrate-set-parameters", **{"max-bandwidth": 10 << 30})
    vm.wait(5.0)
    assert vm.statuses()[-1] == "completed"
    assert vm.run("query-status")["status"] == "postmigrate"
    passes = [e.data["pass"] for e in vm.events if e.name == "MIGRATION_PASS" and e.data]
    assert passes == list(range(1, len(passes) + 1))


def test_cancel_keeps_the_vm_running() -> None:
    vm = Vm()
    vm.machine.cause(GuestDirtiesMemory(200 * MiB))
    vm.run("migrate", uri="tcp:192.0.2.1:4444")
    vm.wait(2.0)
    vm.run("migrate_cancel")
    vm.wait(1.0)
    assert vm.statuses()[-2:] == ["cancelling", "cancelled"]
    assert vm.run("query-migrate") == {"status": "cancelled"}
    assert vm.run("query-status")["status"] == "running"
    assert "STOP" not in vm.names()


def test_a_lost_destination_fails_the_migration_with_its_error() -> None:
    vm = Vm()
    vm.machine.cause(GuestDirtiesMemory(200 * MiB))
    vm.run("migrate", uri="tcp:192.0.2.1:4444")
    vm.wait(2.0)
    vm.events += vm.machine.cause(MigrationTargetLost())
    assert vm.statuses()[-1] == "failed"
    assert vm.run("query-migrate") == {
        "status": "failed",
        "error-desc": "Unable to write to socket: Broken pipe",
    }
    assert vm.run("query-status")["status"] == "running"
    with pytest.raises(MachineError, match="no migration is under way"):
        vm.machine.cause(MigrationTargetLost())


def test_lost_while_held_before_switchover_resumes_the_vm() -> None:
    vm = Vm()
    vm.run(
        "migrate-set-capabilities",
        capabilities=[{"capability": "pause-before-switchover", "state": True}],
    )
    vm.run("migrate", uri="tcp:192.0.2.1:4444")
    vm.wait(1.0)
    assert vm.statuses()[-1] == "pre-switchover"
    assert vm.run("query-status")["status"] == "finish-migrate"
    vm.events += vm.machine.cause(MigrationTargetLost("Connection reset by peer"))
    assert vm.names()[-2:] == ["MIGRATION", "RESUME"]
    assert vm.run("query-status")["status"] == "running"


def test_without_the_events_capability_nothing_is_announced() -> None:
    vm = Vm()
    vm.run("migrate-set-capabilities", capabilities=[{"capability": "events", "state": False}])
    vm.run("migrate", uri="exec:cat > /dev/null")
    vm.wait(5.0)
    assert vm.names() == ["STOP"]
    assert vm.run("query-migrate")["status"] == "completed"


@pytest.mark.parametrize(
    "profile, text",
    [
        ("qemu-7.2", "migrate-pause is currently only supported during postcopy-active state"),
        (
            "qemu-10.0",
            "migrate-pause is currently only supported during postcopy-active or"
            " postcopy-recover state",
        ),
    ],
)
def test_migrate_pause_outside_postcopy(profile: str, text: str) -> None:
    error = Vm(profile).run("migrate-pause")
    assert error.desc == text


def test_a_reset_forgets_the_migration() -> None:
    vm = Vm()
    vm.run("migrate", uri="exec:cat > /dev/null")
    vm.wait(1.0)
    vm.machine.reset()
    assert vm.machine.execute("query-migrate", {}).reply == {}
    caps = vm.machine.execute("query-migrate-capabilities", {}).reply
    assert {"capability": "events", "state": False} in caps
