"""One rule for matching arguments: the same in until:, on:, transcripts and strict mode."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
import trio.testing

from qmpsim.qmp.profiles import QEMU_7_2, Builtin, CommandSpec, Field, Object
from qmpsim.qmp.transcript import arguments_match
from qmpsim.runtime.engine import ScenarioRunner
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.loader import loads_scenario
from qmpsim.vm.machine import Machine, ManualClock

SENT = {
    "driver": "qcow2",
    "node-name": "n1",
    "file": {"driver": "file", "filename": "/srv/a.qcow2"},
    "cache": [{"direct": True}, {"no-flush": False}],
    "size": 1,
}


@pytest.mark.parametrize(
    ("expected", "matches"),
    [
        ({}, True),
        ({"driver": "qcow2"}, True),
        ({"driver": "raw"}, False),
        ({"missing": None}, False),
        ({"file": {"filename": "/srv/a.qcow2"}}, True),  # a subset, nested
        ({"file": {"filename": "/srv/b.qcow2"}}, False),
        ({"file": {"filename": "/srv/a.qcow2", "locking": "off"}}, False),
        ({"file": "/srv/a.qcow2"}, False),
        ({"cache": [{"direct": True}, {}]}, True),  # items match one by one
        ({"cache": [{"direct": True}]}, False),  # a list is matched whole
        ({"size": 1}, True),
        ({"size": 1.0}, True),
        ({"size": True}, False),  # true is not 1
    ],
)
def test_the_rule(expected: dict[str, Any], matches: bool) -> None:
    assert arguments_match(SENT, expected) is matches


def test_booleans_and_numbers_stay_apart_both_ways() -> None:
    assert not arguments_match({"on": 1}, {"on": True})
    assert not arguments_match({"on": True}, {"on": 1})
    assert arguments_match({"on": False}, {"on": False})


# A profile with one command that takes nested arguments, so the protocol lets it through.
_FILE = Object(
    "BlockdevOptionsFile", (Field("driver", Builtin("str")), Field("filename", Builtin("str")))
)
_ADD = Object(
    "BlockdevOptions",
    (
        Field("driver", Builtin("str")),
        Field("node-name", Builtin("str")),
        Field("file", _FILE),
    ),
)
PROFILE = dataclasses.replace(
    QEMU_7_2, commands={**QEMU_7_2.commands, "blockdev-add": CommandSpec("blockdev-add", _ADD)}
)
ARGS = {"file": {"filename": "/srv/a.qcow2"}}


@pytest.mark.trio
async def test_until_on_and_the_transcript_agree_on_nested_arguments() -> None:
    # on: used exact equality of each given member, so a nested subset never fired
    scenario = loads_scenario(
        "steps:\n"
        f"  - on: blockdev-add\n    arguments: {ARGS}\n    steps: [{{cause: guest-reset}}]\n"
        f"  - until: blockdev-add\n    arguments: {ARGS}\n"
        "  - cause: guest-powerdown\n"
    )
    machine = Machine(profile=PROFILE, clock=ManualClock())
    async with Simulator(machine) as sim, trio.open_nursery() as nursery:
        runner = ScenarioRunner(sim, scenario)
        await nursery.start(runner.run)
        server, client = trio.testing.memory_stream_pair()
        nursery.start_soon(sim.handle_stream, server)
        await client.send_all(b'{"execute": "qmp_capabilities"}')
        await sim.wait_negotiated()
        for filename in ("/srv/b.qcow2", "/srv/a.qcow2"):
            await client.send_all(
                b'{"execute": "blockdev-add", "arguments": {"driver": "qcow2", "node-name": "n1",'
                b' "file": {"driver": "file", "filename": "' + filename.encode() + b'"}}}'
            )
        with trio.fail_after(5):
            await runner.done.wait()
        await trio.testing.wait_all_tasks_blocked()  # the handler's steps and the deliveries
        events = [m["event"] for m in sim.transcript.events_sent()]
        assert sorted(events) == ["POWERDOWN", "RESET"]  # one match: one RESET
        (matched,) = sim.transcript.assert_command_sent("blockdev-add", ARGS, count=1)
        assert matched.arguments["file"]["filename"] == "/srv/a.qcow2"
        nursery.cancel_scope.cancel()
