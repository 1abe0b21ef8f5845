"""Scenarios from recordings, and scenarios back to YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_server_peer import connect

from qmpsim.qmp.cassette import Cassette, load_cassette
from qmpsim.qmp.transcript import Direction, Transcript
from qmpsim.runtime.engine import ScenarioRunner
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.from_recording import derive_scenario
from qmpsim.scenario.library import shipped_scenarios
from qmpsim.scenario.loader import load_scenario, loads_scenario
from qmpsim.scenario.model import Scenario
from qmpsim.scenario.text import scenario_document, to_yaml
from qmpsim.testing.conformance import check

CASSETTES = Path(__file__).parent / "cassettes"
GUEST_EVENTS = CASSETTES / "qemu-7.2-guest-events.jsonl"
"""QEMU 7.2.22 ``-M pc -device ib700 -watchdog-action pause -device pvpanic -action
panic=pause``, driven by qemu.qmp: a watchdog expiry, ``cont``, a CMOS clock write
and a guest panic, each made through ``human-monitor-command`` port writes."""


@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_a_scenario_dumped_as_yaml_loads_back_the_same(path: Path) -> None:
    scenario = load_scenario(path)
    again = loads_scenario(to_yaml(scenario))
    assert scenario_document(again) == scenario_document(scenario)
    assert again.vm == scenario.vm and again.clock == scenario.clock


def test_the_yaml_leaves_defaults_out() -> None:
    text = to_yaml(load_scenario(shipped_scenarios()[0]))
    assert text.startswith("name: disk-read-error-stop\n")
    assert "on_write_error" not in text  # the default, enospc
    assert "- {until: cont" in text


def test_a_recording_becomes_cause_emit_until_and_reply_steps() -> None:
    derived = derive_scenario(load_cassette(GUEST_EVENTS))
    doc = derived.document
    assert doc["vm"] == {"initial_state": "running", "watchdog": "pause"}
    steps = doc["steps"]
    heads = [next(iter(step)) for step in steps]
    # The port writes answer "" where the simulator answers otherwise: reply steps,
    # installed first, in the order the client sends them.
    assert steps[heads.index("reply")] == {
        "reply": "query-status",
        "return": {"status": "running", "singlestep": False, "running": True},
        "times": "once",
    }
    assert {"cause": "watchdog"} in steps  # WATCHDOG and STOP, explained by the machine
    assert {"until": "cont"} in steps  # RESUME comes from cont itself: no step
    assert not any(step.get("emit") == "RESUME" for step in steps)
    assert any(step.get("cause") == "rtc-change" for step in steps)
    assert {"emit": "GUEST_PANICKED", "data": {"action": "pause"}} in steps
    text = derived.to_yaml("guest-events.jsonl")
    assert text.startswith("# Made by `qmpsim scenario-from guest-events.jsonl`")
    assert loads_scenario(text).name == "recorded"


def recorded_requests(path: Path) -> list[tuple[bytes, int]]:
    """Each chunk the recorded client sent, with how many events it had received by then."""
    out: list[tuple[bytes, int]] = []
    events = 0
    for entry in Transcript.read(path):
        if entry.direction is Direction.OUT:
            events += sum(1 for m in entry.messages if isinstance(m, dict) and "event" in m)
        elif entry.raw:
            out.append((entry.raw, events))
    return out


async def play_like_the_recorded_client(
    scenario: Scenario, requests: list[tuple[bytes, int]]
) -> tuple[list[Any], Transcript]:
    """Serve ``scenario``; send what the recorded client sent, each once the events it
    had seen have arrived; the events received."""
    sim = Simulator(build_machine(scenario))
    async with sim, trio.open_nursery() as nursery:
        await nursery.start(ScenarioRunner(sim, scenario).run)
        peer, _ = connect(sim, nursery)
        received: list[Any] = []
        await peer.recv()  # the greeting
        for chunk, seen in requests:
            while len(received) < seen:
                received.append(await peer.recv())
            await peer.send(chunk)
            while "event" in (message := await peer.recv()):
                received.append(message)
            if b'"quit"' in chunk:
                break
        nursery.cancel_scope.cancel()
    return [m for m in received if "event" in m], sim.transcript


@pytest.mark.trio
async def test_the_scenario_plays_back_the_recorded_events(
    autojump_clock: trio.abc.Clock,
) -> None:
    cassette = load_cassette(GUEST_EVENTS)
    scenario = loads_scenario(derive_scenario(cassette).to_yaml(str(GUEST_EVENTS)))
    events, transcript = await play_like_the_recorded_client(
        scenario, recorded_requests(GUEST_EVENTS)
    )
    recorded = [(e.name, e.message.get("data")) for e in cassette.sessions[0].events()]
    assert [(e["event"], e.get("data")) for e in events] == recorded
    lines = [json.dumps(entry.to_json()) for entry in transcript]
    assert check(lines, "qemu-7.2") == []


def test_commands_the_profile_lacks_are_noted_not_waited_for() -> None:
    cassette = load_cassette(CASSETTES / "qemu-7.2-session.jsonl")
    derived = derive_scenario(cassette, name="session")
    assert not any(step.get("until") == "nonexistent" for step in derived.document["steps"])
    assert derived.notes == []  # QEMU did not know it either: nothing is lost


def test_an_empty_recording_is_an_idle_vm() -> None:
    derived = derive_scenario(Cassette(()))
    assert loads_scenario(derived.to_yaml("nothing")).steps == ()
