"""The loader's causal check is a dry run on the machine: it refuses what the machine
refuses whatever a client does, and leaves to run time what a client may change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpsim.errors import ScenarioError
from qmpsim.qmp.profiles import QEMU_7_2
from qmpsim.scenario.grammar_causes import _CAUSES
from qmpsim.scenario.loader import loads_scenario
from qmpsim.testing.conformance import check_events
from qmpsim.vm import display
from qmpsim.vm.display import (
    ClientState,
    DisplayMove,
    DisplayRefusal,
    VncConnect,
    VncInitialize,
)
from qmpsim.vm.machine import GuestConfig, Machine, ManualClock, VmConfig

# (cause step, the VM's watchdog action, whether it runs with -no-shutdown)
ENDINGS = [
    (step, watchdog, no_shutdown)
    for step in (
        {"cause": "guest-shutdown"},
        {"cause": "guest-panic"},
        {"cause": "guest-reset"},
        {"cause": "guest-powerdown"},
        {"cause": "watchdog"},
        *({"cause": "watchdog", "action": a} for a in ("reset", "shutdown", "poweroff", "pause")),
    )
    for watchdog in ("reset", "shutdown", "poweroff", "pause", "none")
    for no_shutdown in (False, True)
]


def _end(step: dict[str, Any], watchdog: str, no_shutdown: bool) -> str | None:
    """The first step of ``[step, wait 60s, emit]`` that the machine never reaches."""
    clock = ManualClock(0.0)
    vm = VmConfig(watchdog=watchdog, no_shutdown=no_shutdown, guest=GuestConfig())
    machine = Machine(vm=vm, profile=QEMU_7_2, clock=clock)
    _keys, build, _doc = _CAUSES[step["cause"]]
    machine.cause(build({k: v for k, v in step.items() if k != "cause"}))
    if machine.exited:
        return "steps[1]"
    clock.now = 60.0
    machine.poll()
    return "steps[2]" if machine.exited else None


@pytest.mark.parametrize(("step", "watchdog", "no_shutdown"), ENDINGS, ids=repr)
def test_steps_after_the_end_are_refused_as_the_machine_ends(
    step: dict[str, Any], watchdog: str, no_shutdown: bool
) -> None:
    vm = {"watchdog": watchdog, "no_shutdown": no_shutdown, "guest": {}}
    doc = {"vm": vm, "steps": [step, {"wait": "60s"}, {"emit": "RESUME"}]}
    end = _end(step, watchdog, no_shutdown)
    if end is not None:
        with pytest.raises(ScenarioError, match="already exited") as info:
            loads_scenario(_yaml(doc))
        assert info.value.path == end
    else:
        loads_scenario(_yaml(doc))


def test_a_delayed_end_is_found_too() -> None:
    # the guest answers the power button by shutting down a moment later
    assert _end({"cause": "guest-powerdown"}, "none", False) == "steps[2]"


def test_a_guest_cause_on_a_paused_vm_is_left_to_run_time() -> None:
    # the client may `cont` at any time: a shutdown now would be skipped, and the
    # steps after it run
    loads_scenario(_yaml({"vm": {"initial_state": "paused"}, "steps": SHUTDOWN_THEN_WAIT}))


SHUTDOWN_THEN_WAIT = [{"cause": "guest-shutdown"}, {"wait": "1s"}]


def test_until_plays_the_command_the_client_sends() -> None:
    doc = {"vm": {"initial_state": "paused"}, "steps": [{"until": "cont"}, *SHUTDOWN_THEN_WAIT]}
    with pytest.raises(ScenarioError, match=r"already exited \(on line \d+\)") as info:
        loads_scenario(_yaml(doc))
    assert info.value.path == "steps[2]"


def test_an_until_with_a_timeout_may_not_have_happened() -> None:
    until = {"until": "cont", "timeout": "5s"}
    doc = {"vm": {"initial_state": "paused"}, "steps": [until, *SHUTDOWN_THEN_WAIT]}
    loads_scenario(_yaml(doc))


def test_a_quit_ends_the_timeline() -> None:
    with pytest.raises(ScenarioError, match="already exited") as info:
        loads_scenario(_yaml({"steps": [{"until": "quit"}, {"emit": "RESUME"}]}))
    assert info.value.path == "steps[1]"


def test_the_order_rules_are_the_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"vm": {"vnc": {}}, "steps": [{"cause": "vnc-initialize", "client": "a"}]}
    with pytest.raises(ScenarioError, match="'a' is not connected"):
        loads_scenario(_yaml(doc))
    # a display whose clients a client's command could move: no longer the order's fault
    monkeypatch.setattr(display.Display, "moved_by_causes_only", False)
    loads_scenario(_yaml(doc))


def test_what_the_hardware_lacks_is_the_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"steps": [{"cause": "guest-balloon", "actual": "1G"}]}
    with pytest.raises(ScenarioError, match=r"no balloon device: add vm\.balloon") as info:
        loads_scenario(_yaml(doc))
    assert (info.value.line, info.value.path) == (1, "steps[0].cause")
    monkeypatch.setattr(
        "qmpsim.vm.balloon.Balloon.cause_unmet", lambda self, cause: None, raising=True
    )
    loads_scenario(_yaml(doc))


def _yaml(doc: dict[str, Any]) -> str:
    return json.dumps(doc)  # JSON is YAML: one line, so places are columns on line 1


def test_the_machine_the_loader_and_the_checker_follow_one_display_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    causes = [VncConnect("a"), VncInitialize("a"), VncInitialize("a")]
    doc = {"vm": {"vnc": {}}, "steps": [{"cause": "vnc-connect", "client": "a"}]}
    doc["steps"] += [{"cause": "vnc-initialize", "client": "a"}] * 2
    rule = display.display_rule

    def twice(move: DisplayMove, now: ClientState | None) -> DisplayRefusal | None:
        refusal = rule(move, now)
        return None if refusal is DisplayRefusal.ALREADY_INITIALIZED else refusal

    # a display that lets a client initialize twice: all three let it
    monkeypatch.setattr(display, "display_rule", twice)
    machine = Machine(vm=VmConfig(vnc=display.VncConfig()), profile=QEMU_7_2, clock=ManualClock())
    stream = [e.to_json() for c in causes for e in machine.cause(c)]
    assert [e["event"] for e in stream] == ["VNC_CONNECTED", *["VNC_INITIALIZED"] * 2]
    assert check_events(stream, QEMU_7_2) == []
    loads_scenario(_yaml(doc))
    # QEMU's display: all three refuse the second initialization
    monkeypatch.undo()
    machine = Machine(vm=VmConfig(vnc=display.VncConfig()), profile=QEMU_7_2, clock=ManualClock())
    machine.cause(causes[0])
    machine.cause(causes[1])
    assert machine.cause_error(causes[2]) == "VNC client 'a' is already initialized"
    assert [v.rule for v in check_events(stream, QEMU_7_2)] == ["vnc-session"]
    with pytest.raises(ScenarioError, match="already initialized"):
        loads_scenario(_yaml(doc))
