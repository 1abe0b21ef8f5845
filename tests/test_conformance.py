"""The conformance checker: each rule, on valid and invalid streams, for both profiles."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpsim.testing.conformance import RULES, Violation, check, check_events

T0 = 1_700_000_000


def ev(name: str, t: float, data: dict[str, Any] | None = None) -> dict[str, Any]:
    seconds = int(t)
    micro = round((t - seconds) * 1_000_000)
    msg: dict[str, Any] = {
        "timestamp": {"seconds": T0 + seconds, "microseconds": micro},
        "event": name,
    }
    if data is not None:
        msg["data"] = data
    return msg


def reason(why: str, guest: bool = False) -> dict[str, Any]:
    return {"guest": guest, "reason": why}


def bio(action: str, device: str = "ide0-hd0") -> dict[str, Any]:
    return {
        "device": device,
        "operation": "write",
        "action": action,
        "reason": "Input/output error",
    }


def rtc(offset: int) -> dict[str, Any]:
    return {"offset": offset, "qom-path": "/machine/unattached/device[6]"}


def vnc(port: str, *, host: str = "127.0.0.1") -> dict[str, Any]:
    side = {"host": host, "service": port, "family": "ipv4", "websocket": False}
    server = {"host": "127.0.0.1", "service": "5900", "family": "ipv4", "websocket": False}
    return {"server": {**server, "auth": "none"}, "client": side}


def spice(port: str) -> dict[str, Any]:
    side = {"host": "127.0.0.1", "port": port, "family": "ipv4"}
    return {"server": {"host": "127.0.0.1", "port": "5930", "family": "ipv4"}, "client": side}


def spice_init(port: str) -> dict[str, Any]:
    data = spice(port)
    data["server"]["auth"] = "spice"
    data["client"].update({"connection-id": 1, "channel-type": 1, "channel-id": 0, "tls": False})
    return data


def rules(events: list[dict[str, Any]], profile: str = "qemu-7.2", **kw: Any) -> list[str]:
    return [v.rule for v in check_events(events, profile, **kw)]


VALID_7_2: dict[str, list[dict[str, Any]]] = {
    "stop-cont": [ev("STOP", 0), ev("RESUME", 0.1), ev("STOP", 0.2)],
    "io-error-stop": [ev("BLOCK_IO_ERROR", 0, bio("stop")), ev("STOP", 0)],
    "io-errors-one-stop": [
        ev("BLOCK_IO_ERROR", 0, bio("stop")),
        ev("BLOCK_IO_ERROR", 0, bio("stop", "virtio0")),
        ev("STOP", 0.001),
        ev("BLOCK_IO_ERROR", 0.002, bio("stop")),
    ],
    "io-error-report": [ev("BLOCK_IO_ERROR", 0, bio("report"))],
    "watchdog-reset": [
        ev("WATCHDOG", 0, {"action": "reset"}),
        ev("RESET", 0, reason("guest-reset", True)),
    ],
    "watchdog-pause": [ev("WATCHDOG", 0, {"action": "pause"}), ev("STOP", 0)],
    "watchdog-shutdown": [ev("WATCHDOG", 0, {"action": "shutdown"}), ev("POWERDOWN", 0)],
    "watchdog-none": [ev("WATCHDOG", 0, {"action": "none"})],
    "watchdog-poweroff": [ev("WATCHDOG", 0, {"action": "poweroff"})],
    # the second WATCHDOG is held back until the window closes; its RESET is not
    "watchdog-delayed": [
        ev("WATCHDOG", 0, {"action": "reset"}),
        ev("RESET", 0, reason("guest-reset", True)),
        ev("RESET", 0.5, reason("guest-reset", True)),
        ev("WATCHDOG", 0.5, {"action": "reset"}),
        ev("STOP", 1.0),
    ],
    "no-shutdown": [ev("SHUTDOWN", 0, reason("guest-shutdown", True)), ev("STOP", 0)],
    "no-shutdown-reset-cont": [
        ev("SHUTDOWN", 0, reason("guest-shutdown", True)),
        ev("STOP", 0),
        ev("RESET", 1, reason("host-qmp-system-reset")),
        ev("RESUME", 2),
    ],
    "quit": [ev("RESUME", 0), ev("SHUTDOWN", 1, reason("host-qmp-quit"))],
    "rtc-throttled": [
        ev("RTC_CHANGE", 0, rtc(1)),
        ev("RTC_CHANGE", 0.5, rtc(2)),  # held back, sent at 1.0
        ev("STOP", 1.0),
        ev("RTC_CHANGE", 1.2, rtc(3)),  # held back, sent at 2.0
        ev("RTC_CHANGE", 2.5, rtc(4)),
    ],
    "vnc": [
        ev("VNC_CONNECTED", 0, vnc("40000")),
        ev("VNC_CONNECTED", 0, vnc("40001")),
        ev("VNC_INITIALIZED", 1, vnc("40001")),
        ev("VNC_DISCONNECTED", 2, vnc("40000")),
        ev("VNC_DISCONNECTED", 2, vnc("40001")),
        ev("VNC_CONNECTED", 3, vnc("40000")),
    ],
    "spice": [
        ev("SPICE_CONNECTED", 0, spice("50000")),
        ev("SPICE_INITIALIZED", 0, spice_init("50000")),
        ev("SPICE_DISCONNECTED", 1, spice("50000")),
        ev("SPICE_CONNECTED", 2, spice("50001")),
        ev("SPICE_INITIALIZED", 2, spice_init("50001")),  # the same channel, reconnected
    ],
    "panic-pause": [  # cont resumes a panicked guest, no reset needed (QEMU 7.2)
        ev("GUEST_PANICKED", 0, {"action": "pause"}),
        ev("STOP", 0),
        ev("RESUME", 1),
        ev("GUEST_PANICKED", 2, {"action": "pause"}),
        ev("STOP", 2),
    ],
    "panic-poweroff": [
        ev("GUEST_PANICKED", 0, {"action": "poweroff"}),
        ev("STOP", 0),
        ev("SHUTDOWN", 0, reason("guest-panic", True)),
    ],
}


@pytest.mark.parametrize("name", sorted(VALID_7_2))
def test_valid_streams_pass(name: str) -> None:
    assert check_events(VALID_7_2[name], "qemu-7.2") == []


INVALID_7_2: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
    "stop-twice": ([ev("STOP", 0), ev("STOP", 1)], ["stop-while-stopped"]),
    "resume-twice": ([ev("RESUME", 0), ev("RESUME", 1)], ["resume-while-running"]),
    "io-error-no-stop": ([ev("BLOCK_IO_ERROR", 0, bio("stop"))], ["block-io-error-stop"]),
    "io-error-resume": (
        [ev("RESUME", 0), ev("BLOCK_IO_ERROR", 1, bio("stop")), ev("RESUME", 2)],
        ["block-io-error-stop"],
    ),
    "watchdog-reset-missing": ([ev("WATCHDOG", 0, {"action": "reset"})], ["watchdog-action"]),
    "watchdog-pause-missing": (
        [ev("WATCHDOG", 0, {"action": "pause"}), ev("RESET", 0, reason("guest-reset", True))],
        ["watchdog-action"],
    ),
    "watchdog-shutdown-as-0.14": (
        [ev("WATCHDOG", 0, {"action": "shutdown"}), ev("SHUTDOWN", 0, reason("guest-shutdown"))],
        ["watchdog-action"],
    ),
    "shutdown-then-resume": (
        [
            ev("STOP", 0),
            ev("RESUME", 1),
            ev("SHUTDOWN", 2, reason("guest-shutdown", True)),
            ev("RESET", 3, reason("guest-reset")),
        ],
        ["shutdown-stop"],
    ),
    "resume-without-reset": (
        [ev("SHUTDOWN", 0, reason("guest-shutdown", True)), ev("STOP", 0), ev("RESUME", 1)],
        ["resume-needs-reset"],
    ),
    "time-backwards": ([ev("STOP", 1), ev("RESUME", 0.5)], ["timestamp-order"]),
    "rtc-third-too-soon": (
        [ev("RTC_CHANGE", 0, rtc(1)), ev("RTC_CHANGE", 0.5, rtc(2)), ev("RTC_CHANGE", 0.9, rtc(3))],
        ["throttle"],
    ),
    "rtc-delayed-sent-too-early": (
        [ev("RTC_CHANGE", 0, rtc(1)), ev("RTC_CHANGE", 0.5, rtc(2)), ev("STOP", 0.7)],
        ["throttle"],
    ),
    "rtc-backwards": (
        [ev("RTC_CHANGE", 1, rtc(1)), ev("RTC_CHANGE", 0, rtc(2))],
        ["timestamp-order"],
    ),
    "vnc-init-unknown": ([ev("VNC_INITIALIZED", 0, vnc("40000"))], ["vnc-session"]),
    "vnc-init-twice": (
        [
            ev("VNC_CONNECTED", 0, vnc("1")),
            ev("VNC_INITIALIZED", 0, vnc("1")),
            ev("VNC_INITIALIZED", 0, vnc("1")),
        ],
        ["vnc-session"],
    ),
    "vnc-disconnect-twice": (
        [
            ev("VNC_CONNECTED", 0, vnc("1")),
            ev("VNC_DISCONNECTED", 0, vnc("1")),
            ev("VNC_DISCONNECTED", 0, vnc("1")),
        ],
        ["vnc-session"],
    ),
    "vnc-other-host": (
        [ev("VNC_CONNECTED", 0, vnc("1")), ev("VNC_DISCONNECTED", 0, vnc("1", host="10.0.0.1"))],
        ["vnc-session"],
    ),
    "vnc-connect-twice": (
        [ev("VNC_CONNECTED", 0, vnc("1")), ev("VNC_CONNECTED", 0, vnc("1"))],
        ["vnc-session"],
    ),
    "spice-init-unknown": ([ev("SPICE_INITIALIZED", 0, spice_init("7"))], ["spice-session"]),
    "spice-disconnect-unknown": ([ev("SPICE_DISCONNECTED", 0, spice("7"))], ["spice-session"]),
    "spice-channel-twice": (
        [
            ev("SPICE_CONNECTED", 0, spice("7")),
            ev("SPICE_INITIALIZED", 0, spice_init("7")),
            ev("SPICE_CONNECTED", 0, spice("8")),
            ev("SPICE_INITIALIZED", 0, spice_init("8")),
        ],
        ["spice-session"],
    ),
    "panic-no-stop": ([ev("GUEST_PANICKED", 0, {"action": "pause"})], ["guest-panicked"]),
    "schema-unknown-event": ([ev("NO_SUCH_EVENT", 0)], ["schema"]),
    "schema-bad-data": ([ev("RTC_CHANGE", 0, {"offset": "x", "qom-path": "/m"})], ["schema"]),
    "schema-no-timestamp": ([{"event": "STOP"}], ["schema"]),
}


@pytest.mark.parametrize("name", sorted(INVALID_7_2))
def test_each_rule_is_caught(name: str) -> None:
    events, expected = INVALID_7_2[name]
    assert rules(events) == expected
    assert all(rule in RULES for rule in expected)


def test_qemu_0_14_rules() -> None:
    assert rules([ev("WATCHDOG", 0, {"action": "shutdown"}), ev("SHUTDOWN", 0)], "qemu-0.14") == []
    assert rules([ev("WATCHDOG", 0, {"action": "reset"}), ev("RESET", 0)], "qemu-0.14") == []
    # 0.14 does not throttle, and may resume after -no-shutdown stopped the VM
    burst = [ev("RTC_CHANGE", i / 10, {"offset": i}) for i in range(5)]
    assert rules(burst, "qemu-0.14") == []
    assert rules([ev("SHUTDOWN", 0), ev("STOP", 0), ev("RESUME", 1)], "qemu-0.14") == []
    assert rules([ev("WATCHDOG", 0, {"action": "shutdown"}), ev("RESET", 0)], "qemu-0.14") == [
        "watchdog-action"
    ]
    assert rules([ev("SHUTDOWN", 0, reason("host-qmp-quit"))], "qemu-0.14") == ["schema"]


def test_initial_status_and_query_status() -> None:
    assert rules([ev("RESUME", 0)], initial_status="running") == ["resume-while-running"]
    assert rules([ev("BLOCK_IO_ERROR", 0, bio("stop"))], initial_status="paused") == []
    lines = [
        json.dumps({"return": {"status": "paused", "singlestep": False, "running": False}}),
        json.dumps(ev("STOP", 0)),
    ]
    assert [v.rule for v in check(lines)] == ["stop-while-stopped"]
    with pytest.raises(ValueError, match="initial_status"):
        check([], initial_status="asleep")


def test_violation_names_line_and_rule() -> None:
    lines = ["", json.dumps(ev("STOP", 0)), "   ", json.dumps(ev("STOP", 1))]
    (violation,) = check(lines)
    assert violation == Violation(4, "stop-while-stopped", "STOP while the VM is already stopped")
    assert str(violation) == "line 4: stop-while-stopped: STOP while the VM is already stopped"


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="unknown profile 'qemu-9'"):
        check([], "qemu-9")


def test_every_event_rule_of_the_checker_is_in_its_table() -> None:
    # A rule method left without its @_on_event mark would never run.
    from qmpsim.testing.conformance import _EVENT_RULES, _StreamChecker

    methods = {
        f
        for klass in _StreamChecker.__mro__
        for name, f in vars(klass).items()
        if name.startswith("_on_")
    }
    assert methods == set(_EVENT_RULES.values())
    assert all(name == name.upper() for name in _EVENT_RULES)
