"""The Hypothesis strategies: conformant events, streams the checker accepts, scenarios."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from qmpsim.qmp.profiles import get_profile, validate_event
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.model import CauseStep, Scenario, WaitStep
from qmpsim.testing.conformance import check_events
from qmpsim.testing.strategies import (
    CAUSES,
    COMMANDS,
    event_streams,
    events,
    generate,
    random_scenario,
    scenarios,
    vm_configs,
)
from qmpsim.vm import machine as m

PROFILES = ("qemu-7.2", "qemu-0.14")
FAST = settings(max_examples=60, derandomize=True, database=None, deadline=None)


def stamp(event: dict[str, Any]) -> int:
    ts = event["timestamp"]
    return int(ts["seconds"]) * 1_000_000 + int(ts["microseconds"])


def initial_status(vm: m.VmConfig) -> str:
    return "running" if vm.initial_state == "running" else "paused"


@pytest.mark.parametrize("profile", PROFILES)
def test_events_conform_to_their_profile(profile: str) -> None:
    spec = get_profile(profile)

    @FAST
    @given(events(profile=profile))
    def conforms(event: dict[str, Any]) -> None:
        assert validate_event(spec, event) == []

    conforms()


def test_events_restricted_by_name() -> None:
    @FAST
    @given(events(names={"STOP", "RTC_CHANGE"}))
    def named(event: dict[str, Any]) -> None:
        assert event["event"] in ("STOP", "RTC_CHANGE")

    named()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stream_passes_the_checker(profile: str) -> None:
    @settings(FAST, max_examples=100)
    @given(st.data())
    def passes(data: st.DataObject) -> None:
        vm = data.draw(vm_configs(profile=profile), label="vm")
        stream = data.draw(event_streams(profile=profile, vm=vm), label="stream")
        assert check_events(stream, profile, initial_status=initial_status(vm)) == []
        assert len(stream) <= 20

    passes()


def test_sizes_and_causes_are_respected() -> None:
    vm = m.VmConfig(vnc=m.VncConfig())

    @FAST
    @given(event_streams(vm=vm, min_size=3, max_size=5, causes={"vnc-connect", "vnc-disconnect"}))
    def bounded(stream: list[dict[str, Any]]) -> None:
        assert 3 <= len(stream) <= 5
        assert {e["event"] for e in stream} <= {"VNC_CONNECTED", "VNC_DISCONNECTED"}

    bounded()


def test_streams_exercise_throttling() -> None:
    # two RTC_CHANGE less than a second apart: the second was held back by the throttle
    def held_back(stream: list[dict[str, Any]]) -> bool:
        rtc = [stamp(e) for e in stream if e["event"] == "RTC_CHANGE"]
        return any(b - a < 1_000_000 for a, b in itertools.pairwise(rtc))

    fast_find = settings(phases=[Phase.generate], derandomize=True, database=None, max_examples=500)
    stream = find(
        event_streams(vm=m.VmConfig(), causes={"rtc-change"}), held_back, settings=fast_find
    )
    assert check_events(stream, initial_status="running") == []


def test_throttled_event_keeps_its_timestamp() -> None:
    walk = event_streams(vm=m.VmConfig(), causes={"rtc-change", "stop"}, min_size=4)
    fast_find = settings(phases=[Phase.generate], derandomize=True, database=None, max_examples=500)
    # a STOP sent before a held-back RTC_CHANGE that carries an older timestamp
    stream = find(
        walk,
        lambda s: any(
            a["event"] == "STOP" and b["event"] == "RTC_CHANGE" and stamp(b) < stamp(a)
            for a, b in itertools.pairwise(s)
        ),
        settings=fast_find,
    )
    assert check_events(stream, initial_status="running") == []


@pytest.mark.parametrize("profile", PROFILES)
def test_scenarios_run_to_conformant_streams(profile: str) -> None:
    @settings(FAST, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios(profile=profile, max_events=12))
    def runs(scenario: Scenario) -> None:
        assert scenario.profile == profile
        clock = m.ManualClock()
        machine = build_machine(scenario, clock=clock)
        out: list[dict[str, Any]] = []
        for step in scenario.steps:
            if isinstance(step, WaitStep):
                clock.advance(step.seconds)
                out += [e.to_json() for e in machine.poll()]
            else:
                assert isinstance(step, CauseStep)
                out += [e.to_json() for e in machine.cause(step.cause)]
        status = initial_status(machine.vm)
        assert check_events(out, profile, initial_status=status) == []

    runs()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: events(profile="qemu-9"), "unknown profile"),
        (lambda: events(names={"NOPE"}), "unknown event names of qemu-7.2: NOPE"),
        (lambda: events(names="STOP"), "collection of names"),
        (lambda: event_streams(min_size=-1), "min_size must be an integer >= 0"),
        (lambda: event_streams(min_size=5, max_size=2), "max_size=2 is less than min_size=5"),
        (lambda: event_streams(causes={"meteor"}), "unknown causes: meteor"),
        (lambda: event_streams(causes=set()), "at least one"),
        (lambda: event_streams(vm="big"), "vm must be a qmpsim.vm.machine.VmConfig"),
        (lambda: scenarios(causes={"stop"}), "unknown causes: stop"),
        (lambda: scenarios(max_events=True), "max_events must be an integer"),
    ],
)
def test_arguments_are_checked_eagerly(make: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make()


def test_move_names() -> None:
    assert "disk-error" in CAUSES
    assert "cont" in COMMANDS
    assert not set(CAUSES) & set(COMMANDS)


@pytest.mark.parametrize("profile", PROFILES)
def test_generate_is_reproducible_and_conformant(profile: str) -> None:
    for seed in range(40):
        stream = generate(seed=seed, count=25, profile=profile)
        assert stream == generate(seed=seed, count=25, profile=profile)
        assert len(stream) <= 25
        assert check_events(stream, profile) == []
    assert generate(seed=1, count=25) != generate(seed=2, count=25)
    assert generate(seed=7, count=0) == []


def test_random_scenario_is_reproducible() -> None:
    first = random_scenario(seed=3, max_events=10)
    assert isinstance(first, Scenario)
    assert first.steps == random_scenario(seed=3, max_events=10).steps
    assert first.name == "random-3"
