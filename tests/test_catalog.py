from __future__ import annotations

from typing import Any

import pytest

from qmpsim.errors import CatalogError
from qmpsim.qmp.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    QEMU_0_14,
    QEMU_7_2,
    check_value,
    get_profile,
    validate_event,
)

SPEC_EVENTS = {
    "BLOCK_IO_ERROR",
    "RESET",
    "RESUME",
    "RTC_CHANGE",
    "SHUTDOWN",
    "STOP",
    "VNC_CONNECTED",
    "VNC_DISCONNECTED",
    "VNC_INITIALIZED",
    "SPICE_CONNECTED",
    "SPICE_DISCONNECTED",
    "SPICE_INITIALIZED",
    "WATCHDOG",
    "POWERDOWN",
}
TS = {"seconds": 1267020223, "microseconds": 435656}


def msg(name: str, data: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp": dict(TS), "event": name}
    if data is not None:
        out["data"] = data
    return out


def test_default_profile_is_qemu_7_2() -> None:
    assert DEFAULT_PROFILE == "qemu-7.2"
    compiled = [f"qemu-2.{minor}" for minor in range(5, 13)]
    compiled += [f"qemu-{major}.{minor}" for major in range(3, 10) for minor in range(3)]
    compiled.remove("qemu-3.2")
    compiled += ["qemu-10.0", "qemu-11.1"]
    assert list(PROFILES) == ["qemu-0.14", *compiled]


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(CatalogError, match=r"'qemu-9'.*qemu-0\.14, qemu-2\.5, .*, qemu-11\.1\)"):
        get_profile("qemu-9")


@pytest.mark.parametrize("profile", [QEMU_0_14, QEMU_7_2], ids=lambda p: p.name)
def test_every_spec_event_is_in_every_profile(profile: Any) -> None:
    assert set(profile.events) >= SPEC_EVENTS


# The examples of shared/spec/qmp-events.txt, verbatim.
SPEC_EXAMPLES = [
    msg("BLOCK_IO_ERROR", {"device": "ide0-hd1", "operation": "write", "action": "stop"}),
    msg("RESET"),
    msg("RESUME"),
    msg("RTC_CHANGE", {"offset": 78}),
    msg("SHUTDOWN"),
    msg("STOP"),
    msg(
        "VNC_CONNECTED",
        {
            "server": {"auth": "sasl", "family": "ipv4", "service": "5901", "host": "0.0.0.0"},
            "client": {"family": "ipv4", "service": "58425", "host": "127.0.0.1"},
        },
    ),
    msg(
        "VNC_DISCONNECTED",
        {
            "server": {"auth": "sasl", "family": "ipv4", "service": "5901", "host": "0.0.0.0"},
            "client": {
                "family": "ipv4",
                "service": "58425",
                "host": "127.0.0.1",
                "sasl_username": "luiz",
            },
        },
    ),
    msg(
        "SPICE_CONNECTED",
        {
            "server": {"port": "5920", "family": "ipv4", "host": "127.0.0.1"},
            "client": {"port": "52873", "family": "ipv4", "host": "127.0.0.1"},
        },
    ),
    msg(
        "SPICE_INITIALIZED",
        {
            "server": {"auth": "spice", "port": "5921", "family": "ipv4", "host": "127.0.0.1"},
            "client": {
                "port": "49004",
                "family": "ipv4",
                "channel-type": 3,
                "connection-id": 1804289383,
                "host": "127.0.0.1",
                "channel-id": 0,
                "tls": True,
            },
        },
    ),
    msg("WATCHDOG", {"action": "reset"}),
]


@pytest.mark.parametrize("message", SPEC_EXAMPLES, ids=lambda m: m["event"])
def test_spec_examples_conform_to_qemu_0_14(message: dict[str, Any]) -> None:
    assert validate_event(QEMU_0_14, message) == []


# Captured from qemu-system-x86_64 7.2 (the differential tests re-check VNC live).
QEMU_7_2_SAMPLES = [
    msg("RESET", {"guest": False, "reason": "host-qmp-system-reset"}),
    msg("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}),
    msg("POWERDOWN"),
    msg(
        "VNC_CONNECTED",
        {
            "server": {
                "auth": "none",
                "family": "ipv4",
                "service": "5977",
                "host": "127.0.0.1",
                "websocket": False,
            },
            "client": {
                "family": "ipv4",
                "service": "35530",
                "host": "127.0.0.1",
                "websocket": False,
            },
        },
    ),
    msg(
        "BLOCK_IO_ERROR",
        {
            "device": "virtio0",
            "node-name": "#block103",
            "operation": "write",
            "action": "stop",
            "nospace": False,
            "reason": "Input/output error",
        },
    ),
    msg("RTC_CHANGE", {"offset": 78, "qom-path": "/machine/unattached/device[9]"}),
    msg("WATCHDOG", {"action": "inject-nmi"}),
]


@pytest.mark.parametrize("message", QEMU_7_2_SAMPLES, ids=lambda m: m["event"])
def test_qemu_7_2_samples_conform_to_qemu_7_2(message: dict[str, Any]) -> None:
    assert validate_event(QEMU_7_2, message) == []


@pytest.mark.parametrize("message", QEMU_7_2_SAMPLES, ids=lambda m: m["event"])
def test_qemu_7_2_samples_do_not_conform_to_the_spec(message: dict[str, Any]) -> None:
    if message["event"] == "POWERDOWN":
        assert validate_event(QEMU_0_14, message) == []
    else:
        assert validate_event(QEMU_0_14, message) != []


def test_spec_reset_without_data_fails_in_qemu_7_2() -> None:
    assert validate_event(QEMU_7_2, msg("RESET")) == ["RESET: missing member 'data'"]


def test_problems_name_the_path() -> None:
    bad = msg(
        "VNC_CONNECTED",
        {
            "server": {"host": "::1", "service": 5900, "family": "ipv6", "websocket": False},
            "client": {"host": "::1", "service": "1", "family": "ipx", "websocket": False},
        },
    )
    assert validate_event(QEMU_7_2, bad) == [
        "VNC_CONNECTED: data.server.service: expected str, got a number",
        # the compiled schema masks type names: the values speak instead
        "VNC_CONNECTED: data.client.family: 'ipx' is not one of: ipv4, ipv6, unix, vsock, unknown",
    ]


def test_unknown_member_unknown_event_and_bad_timestamp() -> None:
    assert validate_event(QEMU_7_2, msg("WATCHDOG", {"action": "none", "x": 1})) == [
        "WATCHDOG: data: unexpected member 'x'"
    ]
    assert validate_event(QEMU_7_2, msg("NOPE")) == [
        "event 'NOPE' does not exist in profile qemu-7.2"
    ]
    stop = msg("STOP")
    stop["timestamp"] = {"seconds": 1, "microseconds": 1_000_000}
    stop["extra"] = True
    assert validate_event(QEMU_7_2, stop) == [
        "unexpected member 'extra' in an event message",
        "timestamp.microseconds: must be in 0..999999",
    ]
    assert validate_event(QEMU_7_2, msg("STOP", {})) == ["STOP: has no data in profile qemu-7.2"]


def test_check_value_builtins_reject_bool_as_int() -> None:
    spec = QEMU_7_2.events["RTC_CHANGE"].data
    assert spec is not None
    assert check_value(spec, {"offset": True, "qom-path": "/x"}) == [
        "offset: expected int, got a boolean"
    ]


def test_greetings_and_commands() -> None:
    assert QEMU_7_2.greeting()["QMP"]["capabilities"] == ["oob"]
    assert QEMU_0_14.greeting()["QMP"]["capabilities"] == []
    assert QEMU_0_14.greeting()["QMP"]["version"]["qemu"] == {"micro": 0, "minor": 14, "major": 0}
    hmp = QEMU_7_2.commands["human-monitor-command"].arguments
    assert [(f.name, f.optional) for f in hmp.fields] == [
        ("command-line", False),
        ("cpu-index", True),
    ]
    assert QEMU_0_14.commands["qmp_capabilities"].arguments.fields == ()
    assert "query-events" not in QEMU_0_14.commands


def test_throttled_events_only_in_qemu_7_2() -> None:
    assert QEMU_7_2.throttle == {"RTC_CHANGE": 1.0, "WATCHDOG": 1.0, "BALLOON_CHANGE": 1.0}
    assert QEMU_0_14.throttle == {}
