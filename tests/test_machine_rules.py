"""The causal rules: what each cause makes QEMU emit, and the run state it leaves."""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.qmp.profiles import QEMU_0_14, QEMU_7_2, ProfileSpec, get_profile
from qmpsim.vm.machine import (
    CommandError,
    DiskConfig,
    DiskError,
    DiskRepaired,
    Event,
    GuestCrashLoaded,
    GuestPanic,
    GuestPowerdown,
    GuestReset,
    GuestShutdown,
    Machine,
    MachineError,
    ManualClock,
    RtcChange,
    VmConfig,
    WatchdogExpired,
)


def machine(profile: ProfileSpec = QEMU_7_2, **vm: Any) -> Machine:
    return Machine(vm=VmConfig(**vm), profile=profile, clock=ManualClock())


def names(events: list[Event] | tuple[Event, ...]) -> list[str]:
    return [e.name for e in events]


def disk(**kw: Any) -> tuple[DiskConfig, ...]:
    return (DiskConfig(**kw),)


# --- BLOCK_IO_ERROR -------------------------------------------------------------


def test_io_error_stop_emits_stop_and_io_error_state() -> None:
    m = machine(disks=disk(on_write_error="stop"))
    events = m.cause(DiskError("virtio0", "write"))
    assert names(events) == ["BLOCK_IO_ERROR", "STOP"]
    assert events[0].data == {
        "device": "virtio0",
        "node-name": "#block103",
        "operation": "write",
        "action": "stop",
        "nospace": False,
        "reason": "Input/output error",
    }
    assert m.status == "io-error"
    assert m.execute("query-block", {}).reply[0]["io-status"] == "failed"


@pytest.mark.parametrize(
    ("policy", "nospace", "action"),
    [("report", False, "report"), ("ignore", False, "ignore"), ("enospc", False, "report")],
)
def test_io_error_report_and_ignore_leave_the_vm_running(
    policy: str, nospace: bool, action: str
) -> None:
    m = machine(disks=disk(on_write_error=policy, thin=True))
    events = m.cause(DiskError("virtio0", "write", nospace=nospace))
    assert names(events) == ["BLOCK_IO_ERROR"]
    assert events[0].data is not None
    assert events[0].data["action"] == action
    assert m.status == "running"


def test_enospc_policy_stops_when_the_host_is_full() -> None:
    m = machine(disks=disk(thin=True))  # QEMU's default werror=enospc
    events = m.cause(DiskError("virtio0", "write", nospace=True))
    assert names(events) == ["BLOCK_IO_ERROR", "STOP"]
    assert events[0].data is not None
    assert (events[0].data["nospace"], events[0].data["reason"]) == (
        True,
        "No space left on device",
    )
    assert m.execute("query-block", {}).reply[0]["io-status"] == "nospace"


def test_nospace_is_absent_when_the_disk_never_stops() -> None:
    m = machine(disks=disk(on_write_error="report", on_read_error="report"))
    (event,) = m.cause(DiskError("virtio0", "read"))
    assert event.data is not None
    assert "nospace" not in event.data
    assert "io-status" not in m.execute("query-block", {}).reply[0]


def test_qemu_0_14_io_error_has_the_spec_members_only() -> None:
    m = machine(QEMU_0_14, disks=disk(name="ide0-hd1", on_write_error="stop"))
    events = m.cause(DiskError("ide0-hd1", "write"))
    assert [e.to_json().get("data") for e in events] == [
        {"device": "ide0-hd1", "operation": "write", "action": "stop"},
        None,
    ]


def test_cont_after_io_error_resumes_and_clears_io_status() -> None:
    m = machine(disks=disk(on_read_error="stop"))
    m.cause(DiskError("virtio0"))
    out = m.execute("cont", {})
    assert names(out.events) == ["RESUME"]
    assert m.next_deadline() is None
    assert m.status == "running"
    assert m.execute("query-block", {}).reply[0]["io-status"] == "ok"


def test_cont_retries_a_persistent_error_after_the_reply() -> None:
    m = machine(disks=disk(on_read_error="stop"))
    m.cause(DiskError("virtio0", persistent=True))
    out = m.execute("cont", {})
    assert names(out.events) == ["RESUME"]
    assert m.next_deadline() == m.clock()
    assert names(m.poll()) == ["BLOCK_IO_ERROR", "STOP"]
    assert m.status == "io-error"
    assert m.cause_error(DiskRepaired("virtio0")) is None
    m.cause(DiskRepaired("virtio0"))
    m.execute("cont", {})
    assert m.poll() == []
    assert m.status == "running"


def test_system_reset_drops_the_failed_request() -> None:
    m = machine(disks=disk(on_read_error="stop"))
    m.cause(DiskError("virtio0", persistent=True))
    m.execute("system_reset", {})
    assert m.status == "prelaunch"
    m.execute("cont", {})
    assert m.poll() == []


def test_disk_errors_name_unknown_disks() -> None:
    m = machine(disks=disk())
    with pytest.raises(MachineError, match="no disk named 'sda'; the VM's disks are: virtio0"):
        m.cause(DiskError("sda"))


# --- WATCHDOG -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "after", "state"),
    [
        ("reset", ["RESET"], "running"),
        ("pause", ["STOP"], "watchdog"),
        ("shutdown", ["POWERDOWN"], "running"),
        ("none", [], "running"),
        ("debug", [], "running"),
        ("inject-nmi", [], "running"),
    ],
)
def test_watchdog_actions(action: str, after: list[str], state: str) -> None:
    m = machine(watchdog=action)
    events = m.cause(WatchdogExpired())
    assert names(events) == ["WATCHDOG", *after]
    assert events[0].data == {"action": action}
    assert m.status == state
    assert not m.exited


def test_watchdog_reset_is_a_guest_reset() -> None:
    m = machine(watchdog="reset")
    assert m.cause(WatchdogExpired())[1].data == {"guest": True, "reason": "guest-reset"}


def test_watchdog_poweroff_exits_without_shutdown() -> None:
    m = machine(watchdog="reset")
    assert names(m.cause(WatchdogExpired("poweroff"))) == ["WATCHDOG"]
    assert m.exited


def test_watchdog_needs_a_device_or_an_action() -> None:
    with pytest.raises(MachineError, match="no watchdog"):
        machine().cause(WatchdogExpired())


def test_qemu_0_14_has_no_inject_nmi() -> None:
    with pytest.raises(Exception, match="inject-nmi"):
        machine(QEMU_0_14).cause(WatchdogExpired("inject-nmi"))


# --- guest shutdown, reset, panic, powerdown ---------------------------------------


def test_guest_shutdown_exits() -> None:
    m = machine()
    events = m.cause(GuestShutdown())
    assert [e.to_json().get("data") for e in events] == [
        {"guest": True, "reason": "guest-shutdown"}
    ]
    assert m.exited


def test_guest_shutdown_with_no_shutdown_stops_and_needs_a_reset() -> None:
    m = machine(no_shutdown=True)
    assert names(m.cause(GuestShutdown())) == ["SHUTDOWN", "STOP"]
    assert (m.status, m.exited) == ("shutdown", False)
    assert m.execute("cont", {}).reply == CommandError(
        "GenericError", "Resetting the Virtual Machine is required"
    )
    assert names(m.execute("system_reset", {}).events) == ["RESET"]
    assert m.status == "prelaunch"
    assert names(m.execute("cont", {}).events) == ["RESUME"]
    assert m.status == "running"


def test_qemu_0_14_shutdown_has_no_data_and_cont_works() -> None:
    m = machine(QEMU_0_14, no_shutdown=True)
    assert [e.data for e in m.cause(GuestShutdown())] == [None, None]
    assert names(m.execute("cont", {}).events) == ["RESUME"]


def test_guest_reset() -> None:
    m = machine()
    (event,) = m.cause(GuestReset())
    assert (event.name, event.data) == ("RESET", {"guest": True, "reason": "guest-reset"})
    assert m.status == "running"


def test_guest_panic_powers_off_by_default() -> None:
    m = machine()
    events = m.cause(GuestPanic())
    assert names(events) == ["GUEST_PANICKED", "STOP", "SHUTDOWN"]
    assert events[2].data == {"guest": True, "reason": "guest-panic"}
    assert m.exited


def test_guest_panic_with_no_shutdown_pauses() -> None:
    m = machine(no_shutdown=True)
    events = m.cause(GuestPanic())
    assert names(events) == ["GUEST_PANICKED", "STOP"]
    assert events[0].data == {"action": "pause"}
    assert m.status == "guest-panicked"


def test_cont_resumes_a_panicked_guest_without_a_reset() -> None:
    m = machine(no_shutdown=True)
    m.cause(GuestPanic())
    outcome = m.execute("cont", {})
    assert (outcome.reply, names(outcome.events)) == ({}, ["RESUME"])
    assert m.status == "running"
    # and it can panic again; the HMP `cont` (and `c`) does the same
    assert names(m.cause(GuestPanic())) == ["GUEST_PANICKED", "STOP"]
    hmp = m.execute("human-monitor-command", {"command-line": "c"})
    assert (hmp.reply, names(hmp.events)) == ("", ["RESUME"])


def test_a_loaded_crash_kernel_is_reported_and_the_guest_runs_on() -> None:
    m = machine()
    events = m.cause(GuestCrashLoaded())
    assert names(events) == ["GUEST_CRASHLOADED"] and events[0].data == {"action": "run"}
    assert m.status == "running" and not m.exited
    m.execute("stop", {})
    with pytest.raises(MachineError, match="running"):
        m.cause(GuestCrashLoaded())  # a paused guest loads nothing
    old = Machine(VmConfig(), get_profile("qemu-4.2"))
    with pytest.raises(MachineError, match="no crash-loaded notification"):
        old.cause(GuestCrashLoaded())


def test_guest_powerdown() -> None:
    assert names(machine().cause(GuestPowerdown())) == ["POWERDOWN"]


@pytest.mark.parametrize(
    "cause", [GuestShutdown(), GuestReset(), RtcChange(5), WatchdogExpired("reset")]
)
def test_guest_causes_need_a_running_guest(cause: Any) -> None:
    m = machine()
    m.execute("stop", {})
    with pytest.raises(MachineError, match="needs a running guest"):
        m.cause(cause)


def test_nothing_happens_after_exit() -> None:
    m = machine()
    m.cause(GuestShutdown())
    assert m.cause_error(GuestReset()) == "the VM has exited"


@pytest.mark.parametrize(
    ("profile", "expected", "exits"),
    [
        # before 2.9 GuestPanicAction had only `pause`: the guest stays panicked
        ("qemu-2.5", ["GUEST_PANICKED pause", "STOP"], False),
        # 2.9 to 5.2: paused, then powered off unless -no-shutdown
        ("qemu-4.2", ["GUEST_PANICKED pause", "STOP", "GUEST_PANICKED poweroff", "SHUTDOWN"], True),
        # 6.0's -action panic=shutdown, the default
        ("qemu-7.2", ["GUEST_PANICKED poweroff", "STOP", "SHUTDOWN"], True),
    ],
)
def test_a_panic_speaks_as_its_version(profile: str, expected: list[str], exits: bool) -> None:
    m = machine(get_profile(profile))
    events = m.cause(GuestPanic())
    assert [" ".join([e.name, *(e.data or {}).get("action", "").split()]) for e in events] == (
        expected
    )
    assert m.exited == exits
