"""The checker's suspend and balloon rules: what QEMU's suspend, wake-up and balloon streams
may hold, on streams made by hand and by the machine."""

from __future__ import annotations

import json
from typing import Any

from test_conformance import ev

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import RULES, check, check_events
from qmpsim.vm.machine import (
    BalloonResized,
    DeviceConfig,
    GuestConfig,
    GuestSuspend,
    Machine,
    ManualClock,
    VmConfig,
)

MiB = 1 << 20


def rules(events: list[dict[str, Any]], profile: str = "qemu-7.2", **kw: Any) -> list[str]:
    return [v.rule for v in check_events(events, profile, **kw)]


def test_the_rules_are_listed() -> None:
    assert {"suspend", "balloon-change"} <= set(RULES)


def test_wakeup_needs_a_suspend_and_a_suspended_vm_does_not_suspend_again() -> None:
    assert rules([ev("SUSPEND", 0), ev("WAKEUP", 1)]) == []
    assert rules([ev("SUSPEND", 0), ev("SUSPEND", 1)]) == ["suspend"]
    # the stream's start is unknown: a WAKEUP may end a suspend that began before it
    assert rules([ev("WAKEUP", 0)]) == []
    assert rules([ev("WAKEUP", 0)], initial_status="running") == ["suspend"]
    assert rules([ev("SUSPEND", 0), ev("WAKEUP", 1), ev("WAKEUP", 2)]) == ["suspend"]
    reset = {"guest": False, "reason": "host-qmp-system-reset"}
    assert rules([ev("SUSPEND", 0), ev("RESET", 1, reset), ev("WAKEUP", 2)]) == ["suspend"]
    # QEMU 7.2: a suspended VM reset is in prelaunch, and cont resumes it
    assert rules([ev("SUSPEND", 0), ev("RESET", 1, reset), ev("RESUME", 2)]) == []


def test_a_suspended_vm_may_be_paused_and_resumed_as_qemu_9_does() -> None:
    stream = [ev("SUSPEND", 0), ev("STOP", 1), ev("RESUME", 2), ev("WAKEUP", 3)]
    assert rules(stream, "qemu-10.0") == []
    # query-status says suspended (running false): a STOP may still come
    lines = [
        json.dumps(ev("SUSPEND", 0)),
        json.dumps({"return": {"status": "suspended", "singlestep": False, "running": False}}),
        json.dumps(ev("STOP", 1)),
    ]
    assert check(lines, "qemu-10.0") == []


def test_balloon_change_counts_whole_pages() -> None:
    assert rules([ev("BALLOON_CHANGE", 0, {"actual": 64 * MiB})]) == []
    assert rules([ev("BALLOON_CHANGE", 0, {"actual": 64 * MiB + 1})]) == ["balloon-change"]
    assert rules([ev("BALLOON_CHANGE", 0, {"actual": 0})]) == ["balloon-change"]
    # throttled like RTC_CHANGE: a third within the second of the first cannot have been held
    sent = ((0, 96), (0.5, 80), (0.9, 64))
    burst = [ev("BALLOON_CHANGE", t, {"actual": a * MiB}) for t, a in sent]
    assert rules(burst) == ["throttle"]


def test_the_machines_streams_pass() -> None:
    for profile in ("qemu-7.2", "qemu-10.0"):
        clock = ManualClock()
        vm = VmConfig(
            cpus=1,
            devices=(DeviceConfig("virtio-balloon-pci", "balloon0"),),
            guest=GuestConfig(balloon_rate=16 * MiB, balloon_delay=0.0),
        )
        m = Machine(vm, get_profile(profile), clock)
        out = [*m.execute("balloon", {"value": 64 * MiB}).events]
        for _ in range(30):
            clock.advance(0.25)
            out += m.poll()
        out += m.cause(GuestSuspend())
        out += m.execute("stop", {}).events
        out += m.execute("cont", {}).events
        out += m.execute("system_wakeup", {}).events
        out += m.cause(BalloonResized(100 * MiB))
        clock.advance(2)
        out += m.poll()
        events = [e.to_json() for e in out]
        assert "WAKEUP" in {e["event"] for e in events}
        assert check_events(events, profile, initial_status="running") == []
