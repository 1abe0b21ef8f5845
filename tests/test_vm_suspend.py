"""Suspend and wake-up in the machine: the run state, what the host's commands do then, and
a guest that does nothing while it sleeps."""

from __future__ import annotations

import random

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.machine import (
    DeviceConfig,
    GuestConfig,
    GuestSuspend,
    Machine,
    MachineError,
    ManualClock,
    VmConfig,
)


def machine(profile: str = "qemu-7.2", **vm: object) -> tuple[Machine, ManualClock]:
    clock = ManualClock(100.0)
    config = VmConfig(**{"cpus": 1, **vm})  # type: ignore[arg-type]
    return Machine(config, get_profile(profile), clock, rng=random.Random(0)), clock


def names(events: object) -> list[str]:
    return [e.name for e in events]  # type: ignore[attr-defined]


def status(m: Machine) -> tuple[str, bool]:
    reply = m.execute("query-status", {}).reply
    return reply["status"], reply["running"]  # type: ignore[index]


def error(m: Machine, command: str) -> str:
    return m.execute(command, {}).reply.desc  # type: ignore[union-attr]


def test_the_guest_suspends_to_ram_and_the_host_wakes_it() -> None:
    m, _ = machine()
    assert error(m, "system_wakeup") == "Unable to wake up: guest is not in suspended state"
    assert names(m.cause(GuestSuspend())) == ["SUSPEND"]  # no STOP
    assert status(m) == ("suspended", False)
    woken = m.execute("system_wakeup", {})
    assert woken.reply == {} and names(woken.events) == ["WAKEUP"]
    assert status(m) == ("running", True)


def test_a_suspended_guest_cannot_suspend_again_and_a_machine_without_acpi_cannot_at_all() -> None:
    m, _ = machine()
    m.cause(GuestSuspend())
    with pytest.raises(MachineError, match="needs a running guest"):
        m.cause(GuestSuspend())
    bare, _ = machine(cpus=0)
    with pytest.raises(MachineError, match="no ACPI"):
        bare.cause(GuestSuspend())
    assert bare.execute("query-current-machine", {}).reply == {"wakeup-suspend-support": False}
    assert error(bare, "system_wakeup") == "wake-up from suspend is not supported by this guest"
    assert m.execute("query-current-machine", {}).reply == {"wakeup-suspend-support": True}


def test_stop_and_cont_leave_a_suspended_vm_be_in_7_2() -> None:
    m, _ = machine()
    m.cause(GuestSuspend())
    assert m.execute("stop", {}).events == () and m.execute("cont", {}).events == ()
    assert status(m) == ("suspended", False)
    assert m.execute("human-monitor-command", {"command-line": "info status"}).reply == (
        "VM status: paused (suspended)\r\n"
    )


def test_from_9_0_stop_pauses_a_suspended_vm_and_cont_suspends_it_again() -> None:
    m, _ = machine("qemu-10.0")
    m.cause(GuestSuspend())
    assert names(m.execute("stop", {}).events) == ["STOP"]
    assert status(m) == ("paused", False)
    assert error(m, "system_wakeup") == "Unable to wake up: guest is not in suspended state"
    assert names(m.execute("cont", {}).events) == ["RESUME"]
    assert status(m) == ("suspended", False)
    assert names(m.execute("system_wakeup", {}).events) == ["WAKEUP"]
    # a reset forgets the suspend: the next cont runs the VM
    m.cause(GuestSuspend())
    m.execute("stop", {})
    m.execute("system_reset", {})
    assert status(m) == ("prelaunch", False)
    m.execute("cont", {})
    assert status(m) == ("running", True)


def test_before_4_0_a_wake_up_outside_suspend_did_nothing() -> None:
    m, _ = machine("qemu-2.5")
    outcome = m.execute("system_wakeup", {})
    assert outcome.reply == {} and outcome.events == ()


@pytest.mark.parametrize("no_shutdown", [True, False])
def test_suspend_to_disk_is_a_guest_shutdown(no_shutdown: bool) -> None:
    m, _ = machine(no_shutdown=no_shutdown)
    events = m.cause(GuestSuspend(disk=True))
    expected = ["SUSPEND_DISK", "SHUTDOWN", *(["STOP"] if no_shutdown else [])]
    assert names(events) == expected
    assert events[1].data == {"guest": True, "reason": "guest-shutdown"}
    assert m.exited is not no_shutdown


def test_a_sleeping_guest_does_nothing_until_it_is_woken() -> None:
    balloon = (DeviceConfig("virtio-balloon-pci", "balloon0"),)
    guest = GuestConfig(powerdown_delay=1.0, balloon_delay=0.0)
    m, clock = machine(guest=guest, devices=balloon)
    m.cause(GuestSuspend())
    assert names(m.execute("system_powerdown", {}).events) == ["POWERDOWN"]
    m.execute("balloon", {"value": 64 << 20})
    clock.advance(30)
    assert m.poll() == [] and m.next_deadline() is None
    assert m.execute("query-balloon", {}).reply == {"actual": 128 << 20}
    m.execute("system_wakeup", {})
    clock.advance(1.0)
    assert "SHUTDOWN" in names(m.poll())
