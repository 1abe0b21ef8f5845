"""Commands, run states and their events (the causal rules live in test_machine_rules.py)."""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.errors import CatalogError
from qmpsim.qmp.profiles import QEMU_0_14, QEMU_7_2, ProfileSpec, validate_event
from qmpsim.vm.machine import (
    CommandError,
    Event,
    Machine,
    MachineError,
    ManualClock,
    Outcome,
    VmConfig,
    VncConfig,
    VncConnect,
    virtual_clock,
)


def machine(profile: ProfileSpec = QEMU_7_2, **vm: Any) -> Machine:
    return Machine(vm=VmConfig(**vm), profile=profile, clock=ManualClock())


def names(outcome: Outcome | list[Event]) -> list[str]:
    events = outcome.events if isinstance(outcome, Outcome) else outcome
    return [e.name for e in events]


def status(m: Machine) -> str:
    reply = m.execute("query-status", {}).reply
    assert isinstance(reply, dict)
    return str(reply["status"])


def test_query_status_members_in_schema_order() -> None:
    m = machine()
    assert m.execute("query-status", {}).reply == {
        "running": True,
        "singlestep": False,
        "status": "running",
    }
    assert list(m.execute("query-status", {}).reply) == ["running", "singlestep", "status"]


def test_qemu_0_14_query_status_has_no_status() -> None:
    m = machine(QEMU_0_14)
    m.execute("stop", {})
    assert m.execute("query-status", {}).reply == {"running": False, "singlestep": False}


def test_stop_then_cont() -> None:
    m = machine()
    assert names(m.execute("stop", {})) == ["STOP"]
    assert status(m) == "paused"
    assert names(m.execute("cont", {})) == ["RESUME"]
    assert status(m) == "running"


def test_stop_when_stopped_and_cont_when_running_emit_nothing() -> None:
    m = machine()
    assert m.execute("cont", {}) == Outcome({})
    m.execute("stop", {})
    assert m.execute("stop", {}) == Outcome({})
    assert status(m) == "paused"


def test_stop_in_prelaunch_stays_prelaunch() -> None:
    m = machine(initial_state="prelaunch")
    assert m.execute("stop", {}) == Outcome({})
    assert status(m) == "prelaunch"
    assert names(m.execute("cont", {})) == ["RESUME"]


def test_system_reset_while_running_keeps_running() -> None:
    m = machine()
    out = m.execute("system_reset", {})
    assert [e.to_json()["data"] for e in out.events] == [
        {"guest": False, "reason": "host-qmp-system-reset"}
    ]
    assert status(m) == "running"


def test_system_reset_while_paused_leaves_prelaunch() -> None:
    m = machine()
    m.execute("stop", {})
    assert names(m.execute("system_reset", {})) == ["RESET"]
    assert status(m) == "prelaunch"


def test_qemu_0_14_reset_has_no_data_and_keeps_paused() -> None:
    m = machine(QEMU_0_14)
    m.execute("stop", {})
    out = m.execute("system_reset", {})
    assert [e.data for e in out.events] == [None]
    assert m.status == "paused"


def test_system_powerdown_only_asks_the_guest() -> None:
    m = machine()
    assert names(m.execute("system_powerdown", {})) == ["POWERDOWN"]
    assert status(m) == "running"
    m.execute("stop", {})
    assert names(m.execute("system_powerdown", {})) == ["POWERDOWN"]


def test_quit_shuts_down_then_closes() -> None:
    m = machine()
    out = m.execute("quit", {})
    assert out.reply == {}
    assert out.close
    assert [e.to_json()["data"] for e in out.events] == [
        {"guest": False, "reason": "host-qmp-quit"}
    ]
    assert m.exited
    with pytest.raises(MachineError, match="exited"):
        m.execute("query-status", {})


def test_unknown_and_other_profile_commands_are_not_found() -> None:
    m = machine()
    assert m.execute("query-events", {}).reply == CommandError(
        "CommandNotFound", "The command query-events has not been found"
    )


def test_identity_queries() -> None:
    m = machine(name="guest1", uuid="12345678-1234-1234-1234-123456789abc")
    assert m.execute("query-name", {}).reply == {"name": "guest1"}
    assert m.execute("query-uuid", {}).reply == {"UUID": "12345678-1234-1234-1234-123456789abc"}
    assert m.execute("query-kvm", {}).reply == {"enabled": False, "present": True}
    assert machine().execute("query-name", {}).reply == {}
    assert machine().execute("query-uuid", {}).reply == {
        "UUID": "00000000-0000-0000-0000-000000000000"
    }


def test_query_version_and_commands_follow_the_profile() -> None:
    assert machine(QEMU_0_14).execute("query-version", {}).reply == {
        "qemu": {"micro": 0, "minor": 14, "major": 0},
        "package": "",
    }
    listed = machine().execute("query-commands", {}).reply
    assert {"name": "human-monitor-command"} in listed
    assert len(listed) == len(QEMU_7_2.commands)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("info status", "VM status: running\r\n"),
        # hmp_info_version() prints the package right after the version, as QEMU 7.2.22 does
        ("info version", "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3\r\n"),
        ("info name", "vm1\r\n"),
        ("info uuid", "00000000-0000-0000-0000-000000000000\r\n"),
        ("info kvm", "kvm support: disabled\r\n"),
        ("", ""),
        ("foo bar", "unknown command: 'foo'\r\n"),
        ("info nothing", "unknown command: 'info nothing'\r\n"),
    ],
)
def test_hmp_texts(line: str, reply: str) -> None:
    m = machine(name="vm1")
    assert m.execute("human-monitor-command", {"command-line": line}).reply == reply


def test_hmp_stop_and_info_status_with_a_run_state() -> None:
    m = machine(no_shutdown=True)
    out = m.execute("human-monitor-command", {"command-line": "stop"})
    assert (out.reply, names(out)) == ("", ["STOP"])
    hmp = {"command-line": "info status"}
    assert m.execute("human-monitor-command", hmp).reply == "VM status: paused\r\n"
    m.execute("human-monitor-command", {"command-line": "system_reset"})
    assert m.execute("human-monitor-command", hmp).reply == "VM status: paused (prelaunch)\r\n"


def test_every_event_carries_the_clock_time() -> None:
    clock = ManualClock(1267041653.0095181)
    m = Machine(clock=clock)
    (event,) = m.execute("stop", {}).events
    assert (event.seconds, event.microseconds) == (1267041653, 9518)
    assert event.to_json() == {
        "timestamp": {"seconds": 1267041653, "microseconds": 9518},
        "event": "STOP",
    }


def test_virtual_clock_adds_elapsed_time() -> None:
    elapsed = [0.0]
    clock = virtual_clock(1000.0, lambda: elapsed[0])
    elapsed[0] = 2.5
    assert clock() == 1002.5


def test_manual_clock_never_goes_back() -> None:
    with pytest.raises(ValueError, match="back in time"):
        ManualClock().advance(-1)


def test_emit_validates_and_emit_raw_does_not() -> None:
    m = machine()
    assert m.emit("POWERDOWN").name == "POWERDOWN"
    with pytest.raises(CatalogError, match=r"RESET does not conform to profile qemu-7\.2"):
        m.emit("RESET")
    raw = m.emit_raw("RESET", {"nonsense": 1})
    assert validate_event(QEMU_7_2, raw.to_json()) != []


def test_bad_vm_descriptions_are_refused() -> None:
    with pytest.raises(MachineError, match="initial_state 'dead'"):
        VmConfig(initial_state="dead")


def test_reset_restores_the_described_vm() -> None:
    m = machine(initial_state="paused", vnc=VncConfig())
    first = m.cause(VncConnect("a"))
    m.execute("cont", {})
    m.execute("quit", {})
    m.reset()
    assert (m.status, m.exited) == ("paused", False)
    assert m.cause(VncConnect("a")) == first  # same client port: the generator rewound


def test_hmp_cpu_index_must_name_a_cpu() -> None:
    args = {"command-line": "info status", "cpu-index": 0}
    assert machine().execute("human-monitor-command", args).reply == CommandError(
        "GenericError", "Parameter 'cpu-index' expects a CPU number"
    )
    assert machine(cpus=1).execute("human-monitor-command", args).reply == "VM status: running\r\n"


def test_hmp_info_alone_lists_the_info_commands() -> None:
    text = machine().execute("human-monitor-command", {"command-line": "info"}).reply
    assert text.startswith("info balloon  -- show balloon information\r\n")
    assert "info status  -- show the current VM status (running|paused)\r\n" in text


def test_an_event_message_is_built_once_and_to_json_stays_a_fresh_copy() -> None:
    data = {"device": "virtio0", "operation": "write", "action": "report", "reason": "EIO"}
    event = machine().emit("BLOCK_IO_ERROR", data)
    assert event.message() is event.message()
    assert event.message() == event.to_json()
    copy = event.to_json()
    copy["data"]["device"] = "changed"
    assert event.message()["data"]["device"] == "virtio0"
    assert event.to_json()["data"]["device"] == "virtio0"
    assert event == Event(event.name, event.data, event.seconds, event.microseconds)


def test_the_run_state_is_not_a_constructor_argument() -> None:
    # it used to be accepted and then overwritten by reset(): now it is refused
    with pytest.raises(TypeError, match="status"):
        Machine(status="paused")  # type: ignore[call-arg]
    assert Machine(vm=VmConfig(initial_state="paused")).status == "paused"
