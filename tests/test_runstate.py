"""QEMU's run-state table (qmpsim.vm.runstate): one table, asked by the machine and the checker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_conformance import ev

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events
from qmpsim.vm import runstate
from qmpsim.vm.machine import GuestShutdown, GuestSuspend, Machine, ManualClock, VmConfig
from qmpsim.vm.runstate import RunState, rules
from qmpsim.vm.values import CommandError, MachineError

S = RunState


@pytest.fixture(autouse=True)
def _fresh_tables() -> Iterator[None]:
    # the tables are cached per version: a test that patches them starts and ends afresh
    runstate.transitions.cache_clear()
    yield
    runstate.transitions.cache_clear()


def violations(events: list[dict[str, Any]], profile: str = "qemu-7.2") -> list[str]:
    return [v.rule for v in check_events(events, profile, initial_status="running")]


def shut_down_machine() -> tuple[Machine, list[dict[str, Any]]]:
    """A VM under -no-shutdown whose guest powered off: SHUTDOWN, STOP, state shutdown."""
    machine = Machine(VmConfig(no_shutdown=True), clock=ManualClock())
    events = [e.message() for e in machine.cause(GuestShutdown())]
    assert [e["event"] for e in events] == ["SHUTDOWN", "STOP"]
    assert machine.status == S.SHUTDOWN
    return machine, events


def test_a_move_the_table_forbids_is_refused_by_the_machine_and_the_checker() -> None:
    assert not rules(get_profile("qemu-7.2")).allows(S.SHUTDOWN, S.RUNNING)
    machine, events = shut_down_machine()
    # the machine: cont needs a reset, and no part of it may run the VM from there
    refused = machine.execute("cont", {}).reply
    assert isinstance(refused, CommandError)
    assert refused.desc == "Resetting the Virtual Machine is required"
    with pytest.raises(MachineError, match="invalid runstate transition: 'shutdown' -> 'running'"):
        machine.status = "running"
    # the checker: the same stream with a RESUME after it
    assert violations(events) == []
    assert violations([*events, ev("RESUME", 5)]) == ["resume-needs-reset"]
    # a reset puts the VM in prelaunch, which cont leaves: both agree again
    assert violations([*events, ev("RESET", 5, _RESET), ev("RESUME", 6)]) == []


_RESET = {"guest": False, "reason": "host-qmp-system-reset"}


def test_the_machine_and_the_checker_ask_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # QEMU's replay mode lets a VM go from shutdown to running; grant that move and
    # both the machine and the checker follow the table
    patched = dict(runstate._QEMU_7_2)
    patched[S.SHUTDOWN] = patched[S.SHUTDOWN] | {S.RUNNING}
    monkeypatch.setattr(runstate, "_QEMU_7_2", patched)
    machine, events = shut_down_machine()
    outcome = machine.execute("cont", {})
    assert outcome.reply == {}
    assert [e.name for e in outcome.events] == ["RESUME"]
    assert machine.status == S.RUNNING
    assert violations([*events, ev("RESUME", 5)]) == []


def test_stop_of_a_suspended_vm_follows_the_versions_table() -> None:
    # QEMU 9.0 made a suspended VM live: vm_stop() pauses it with a STOP
    old, new = rules(get_profile("qemu-7.2")), rules(get_profile("qemu-10.0"))
    assert not old.allows(S.SUSPENDED, S.PAUSED) and new.allows(S.SUSPENDED, S.PAUSED)
    for profile, stops in (("qemu-7.2", False), ("qemu-10.0", True)):
        vm = VmConfig(machine="pc", cpus=1)
        machine = Machine(vm, profile=get_profile(profile), clock=ManualClock())
        events = [e.message() for e in machine.cause(GuestSuspend())]
        events += [e.message() for e in machine.execute("stop", {}).events]
        assert [e["event"] for e in events] == ["SUSPEND", *(["STOP"] if stops else [])]
        assert violations(events, profile) == []
        # a STOP there is what the other version's table forbids
        other = [ev("SUSPEND", 0), ev("STOP", 1)]
        assert violations(other, profile) == ([] if stops else ["stop-while-stopped"])


def test_needs_reset_is_runstate_needs_reset() -> None:
    table = rules(get_profile("qemu-7.2"))
    assert {s for s in S if table.needs_reset(s)} == {S.SHUTDOWN, S.INTERNAL_ERROR}
    # QEMU before 1.0 had no run states: cont restarted whatever had stopped the VM
    assert not rules(get_profile("qemu-0.14")).needs_reset(S.SHUTDOWN)
