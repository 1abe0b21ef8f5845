"""Postcopy on the virtual clock, source and destination, as two real QEMUs 7.2 and 10.0
did it (tests/test_diff_postcopy.py compares the source with them message by message):
the switch, the pause and the recovery, a destination lost, completion, cancelling."""

from __future__ import annotations

from typing import Any

import pytest
from test_machine_migration import Vm

from qmpsim.machine import MachineError, MigrationTargetLost, VmConfig
from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events
from qmpsim.vm.machine import (
    IncomingCompleted,
    IncomingConnected,
    IncomingFailed,
    IncomingPostcopy,
    Machine,
    ManualClock,
)

POSTCOPY = [{"capability": "postcopy-ram", "state": True}]
SLOW = {"max-bandwidth": 20_000, "max-postcopy-bandwidth": 20_000}
# what each version says as it switches (7.2: postcopy-active first; 9.0 on: STOP, device)
SWITCH = {
    "qemu-7.2": ["MIGRATION postcopy-active", "STOP", "MIGRATION_PASS"],
    "qemu-10.0": ["STOP", "MIGRATION device", "MIGRATION_PASS", "MIGRATION postcopy-active"],
}


def said(vm: Vm, start: int = 0) -> list[str]:
    out = []
    for e in vm.events[start:]:
        status = (e.data or {}).get("status")
        out.append(e.name + (f" {status}" if status else ""))
    return out


def in_postcopy(profile: str, **vm: Any) -> Vm:
    """A source half a second into a slow migration, switched to postcopy."""
    src = Vm(profile, memory=1 << 30, **vm)
    src.run("migrate-set-capabilities", capabilities=POSTCOPY)
    src.run("migrate-set-parameters", **SLOW)
    src.run("migrate", uri="tcp:10.0.0.2:4444")
    src.wait(0.5)
    assert src.statuses() == ["setup", "active"]
    start = len(src.events)
    assert src.run("migrate-start-postcopy") == {}
    assert said(src, start) == SWITCH[profile]
    return src


def conforms(vm: Vm) -> None:
    assert check_events([e.to_json() for e in vm.events], profile=vm.machine.profile) == []


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_postcopy_hands_the_vm_over_and_completes(profile: str) -> None:
    src = in_postcopy(profile)
    status = src.run("query-status")["status"]
    assert status == "finish-migrate"  # where the source stays until the end
    info = src.run("query-migrate")
    assert info["status"] == "postcopy-active"
    assert info["ram"]["postcopy-requests"] >= 1
    # 7.2 shows the expected downtime, 8.1 on the downtime the switch took
    assert ("downtime" in info) == (profile == "qemu-10.0")
    assert ("expected-downtime" in info) == (profile == "qemu-7.2")
    sent = info["ram"]["postcopy-bytes"]
    src.wait(1)
    assert src.run("query-migrate")["ram"]["postcopy-bytes"] > sent  # at 20,000 B/s
    src.run("migrate-set-parameters", **{"max-postcopy-bandwidth": 0})
    src.wait(1)
    assert src.statuses()[-1] == "completed"
    assert src.run("query-status")["status"] == "postmigrate"
    done = src.run("query-migrate")
    assert done["ram"]["remaining"] == 0 and "downtime" in done
    assert "RESUME" not in src.names()
    conforms(src)


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_pause_then_recover_goes_on_where_it_was(profile: str) -> None:
    src = in_postcopy(profile)
    src.wait(1)
    start = len(src.events)
    assert src.run("migrate-pause") == {}
    assert said(src, start) == ["MIGRATION postcopy-paused"]
    info = src.run("query-migrate")
    # 8.2 on keep and show why it paused
    assert info.get("error-desc") == (
        "Postcopy migration is paused by the user" if profile == "qemu-10.0" else None
    )
    sent = info["ram"]["postcopy-bytes"]
    src.wait(5)
    assert src.run("query-migrate")["ram"]["postcopy-bytes"] == sent  # nothing goes out
    for command, args in (
        ("migrate-set-capabilities", {"capabilities": POSTCOPY}),
        ("migrate", {"uri": "tcp:10.0.0.2:1"}),
    ):
        refused = src.machine.execute(command, args)
        assert refused.reply.desc == "There's a migration process in progress"
    start = len(src.events)
    assert src.run("migrate", uri="tcp:10.0.0.2:4445", resume=True) == {}
    src.wait(0.1)
    setup = ["MIGRATION postcopy-recover-setup"] if profile == "qemu-10.0" else []
    assert said(src, start) == [*setup, "MIGRATION postcopy-recover", "MIGRATION postcopy-active"]
    info = src.run("query-migrate")
    assert "error-desc" not in info
    src.wait(1)
    assert src.run("query-migrate")["ram"]["postcopy-bytes"] > sent
    conforms(src)


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_a_lost_destination_pauses_a_postcopy_rather_than_failing_it(profile: str) -> None:
    src = in_postcopy(profile)
    src.machine.cause(MigrationTargetLost())
    info = src.run("query-migrate")
    assert info["status"] == "postcopy-paused"
    if profile == "qemu-10.0":
        assert info["error-desc"] == "Channel error: Input/output error"
    with pytest.raises(MachineError, match="already gone"):
        src.machine.cause(MigrationTargetLost())
    assert src.run("query-status")["status"] == "finish-migrate"


def test_cancelling_a_postcopy_before_9_2_leaves_the_source_stopped() -> None:
    src = in_postcopy("qemu-7.2")
    start = len(src.events)
    assert src.run("migrate_cancel") == {}
    src.wait(0.1)
    assert said(src, start) == ["MIGRATION cancelling", "MIGRATION cancelled"]
    assert src.run("query-status")["status"] == "postmigrate"  # no RESUME: it was handed over
    # a paused one too (QEMU 7.2's thread, waiting for a recovery, may miss it: a race)
    src = in_postcopy("qemu-7.2")
    src.run("migrate-pause")
    src.run("migrate_cancel")
    src.wait(10)
    assert src.statuses()[-3:] == ["postcopy-paused", "cancelling", "cancelled"]
    conforms(src)


def test_from_9_2_a_postcopy_is_not_cancelled() -> None:
    src = in_postcopy("qemu-10.0")
    refused = src.machine.execute("migrate_cancel", {})
    assert refused.reply.desc == "Postcopy migration in progress, cannot cancel."


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_postcopy_asked_for_in_setup_switches_at_the_first_iteration(profile: str) -> None:
    src = Vm(profile, memory=1 << 30)
    src.run("migrate-set-capabilities", capabilities=POSTCOPY)
    src.run("migrate-set-parameters", **SLOW)
    src.run("migrate", uri="tcp:10.0.0.2:4444")
    src.run("migrate-start-postcopy")
    src.wait(0.01)
    assert said(src) == ["MIGRATION setup", "MIGRATION_PASS", "MIGRATION active", *SWITCH[profile]]


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_pause_before_switchover_holds_a_postcopy_too(profile: str) -> None:
    src = Vm(profile, memory=1 << 30)
    caps = [*POSTCOPY, {"capability": "pause-before-switchover", "state": True}]
    src.run("migrate-set-capabilities", capabilities=caps)
    src.run("migrate-set-parameters", **SLOW)
    src.run("migrate", uri="tcp:10.0.0.2:4444")
    src.wait(0.5)
    start = len(src.events)
    src.run("migrate-start-postcopy")
    assert said(src, start) == ["STOP", "MIGRATION pre-switchover"]
    start = len(src.events)
    src.run("migrate-continue", state="pre-switchover")
    tail = SWITCH[profile][1:] if profile == "qemu-10.0" else SWITCH[profile][::2]
    assert said(src, start) == tail
    conforms(src)


def test_the_refusals_outside_postcopy() -> None:
    src = Vm("qemu-10.0")
    resume = src.machine.execute("migrate", {"uri": "tcp:10.0.0.2:1", "resume": True})
    assert resume.reply.desc == "Cannot resume if there is no paused migration"
    recover = src.machine.execute("migrate-recover", {"uri": "tcp:0:1"})
    assert recover.reply.desc == "Migrate recover can only be run when postcopy is paused."


# --- the destination ---------------------------------------------------------------------


class Destination:
    """A VM waiting with ``-incoming defer``, with every event it said."""

    def __init__(self, profile: str, **vm: Any) -> None:
        config = VmConfig(machine="pc", cpus=1, incoming="defer", **vm)
        self.machine = Machine(config, clock=ManualClock(), profile=get_profile(profile))
        self.events: list[str] = []
        self.run("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
        self.run("migrate-incoming", uri="tcp:0:4444")

    def run(self, command: str, **args: Any) -> Any:
        outcome = self.machine.execute(command, args)
        self._saw(outcome.events)
        return outcome.reply

    def cause(self, cause: Any) -> None:
        self._saw(self.machine.cause(cause))

    def _saw(self, events: Any) -> None:
        for e in events:
            status = (e.data or {}).get("status")
            self.events.append(e.name + (f" {status}" if status else ""))


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_the_destination_runs_at_the_switch_and_pauses_when_the_source_is_lost(
    profile: str,
) -> None:
    dst = Destination(profile)
    dst.cause(IncomingConnected())
    dst.cause(IncomingPostcopy())
    assert dst.run("query-status")["status"] == "running"
    assert dst.run("query-migrate")["status"] == "postcopy-active"
    dst.cause(IncomingFailed())  # the source went away: the guest runs on
    assert not dst.machine.exited
    assert dst.run("query-status")["status"] == "running"
    assert dst.run("query-migrate")["status"] == "postcopy-paused"
    assert dst.run("migrate-recover", uri="tcp:0:4445") == {}
    where = dst.run("query-migrate")
    assert where["status"] == "postcopy-paused"
    assert where["socket-address"][0]["port"] == "4445"
    dst.cause(IncomingConnected())  # the source resumed
    dst.cause(IncomingCompleted())
    # 7.2's migrate-recover announces a setup it does not enter
    recover = ["MIGRATION setup"] if profile == "qemu-7.2" else []
    assert dst.events == [
        "MIGRATION setup",
        "MIGRATION active",
        "MIGRATION postcopy-active",
        "RESUME",
        "MIGRATION postcopy-paused",
        *recover,
        "MIGRATION postcopy-recover",
        "MIGRATION postcopy-active",
        "MIGRATION completed",
    ]
    assert dst.run("query-migrate") == {"status": "completed"}


def test_the_destination_pauses_itself_with_migrate_pause() -> None:
    dst = Destination("qemu-10.0", initial_state="prelaunch")
    dst.cause(IncomingConnected())
    dst.cause(IncomingPostcopy())
    assert dst.run("query-status")["status"] == "paused"  # -S: it waits for cont
    assert dst.run("migrate-pause") == {}
    assert dst.events[-1] == "MIGRATION postcopy-paused"
    with pytest.raises(MachineError, match="no incoming precopy"):
        dst.cause(IncomingPostcopy())
