"""Drawn scenarios played by the real engine and server: what a client receives conforms."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings

from qmpsim.runtime.engine import ScenarioRunner
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.model import Scenario
from qmpsim.testing.conformance import check_events
from qmpsim.testing.strategies import scenarios

EPOCH = 1_700_000_000.0


async def play(scenario: Scenario) -> list[dict[str, Any]]:
    """Every event one negotiated client receives while the scenario plays to its end."""
    received: list[dict[str, Any]] = []
    async with Simulator(build_machine(scenario), epoch=EPOCH) as sim, trio.open_nursery() as n:
        server_side, client_side = trio.testing.memory_stream_pair()
        n.start_soon(sim.handle_stream, server_side)
        buffer = b""

        async def message() -> dict[str, Any] | None:
            nonlocal buffer
            while b"\n" not in buffer:
                data = await client_side.receive_some()
                if not data:
                    return None
                buffer += data
            line, buffer = buffer.split(b"\n", 1)
            msg: dict[str, Any] = json.loads(line)
            return msg

        assert (await message() or {}).get("QMP")
        await client_side.send_all(b'{"execute": "qmp_capabilities"}')
        assert await message() == {"return": {}}
        runner = ScenarioRunner(sim, scenario)
        await n.start(runner.run)
        await runner.done.wait()
        await trio.sleep(2)  # virtual time: throttle windows close, held-back events go out
        # once the VM exited the connection is closed: the events are all in
        with contextlib.suppress(trio.BrokenResourceError):
            await client_side.send_all(b'{"execute": "query-status", "id": "end"}')
        while (msg := await message()) is not None and msg.get("id") != "end":
            if "event" in msg:
                received.append(msg)
        n.cancel_scope.cancel()
    return received


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-0.14"])
def test_drawn_scenarios_play_conformant_streams(profile: str) -> None:
    @settings(
        max_examples=25,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(scenarios(profile=profile, max_events=10))
    def plays(scenario: Scenario) -> None:
        clock = trio.testing.MockClock(autojump_threshold=0)
        events = trio.run(play, scenario, clock=clock)
        causes = [step for step in scenario.steps if hasattr(step, "cause")]
        assert bool(events) == bool(causes)  # every cause emits at least one event
        status = "running" if scenario.vm.initial_state == "running" else "paused"
        assert check_events(events, profile, initial_status=status) == []

    plays()
