"""The engine plays scenarios on a Simulator, under virtual time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from qmpsim.runtime.engine import ScenarioRunner
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.loader import loads_scenario
from qmpsim.scenario.model import Scenario

EPOCH = 1_700_000_000.0


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Client:
    """A minimal line-reading QMP client over an in-memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""
        self.events: list[dict[str, Any]] = []

    async def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    async def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(await self.line())
        return msg

    async def send(self, command: str, **arguments: Any) -> None:
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        await self.stream.send_all(json.dumps(req).encode())

    async def execute(self, command: str, **arguments: Any) -> Any:
        await self.send(command, **arguments)
        while True:
            msg = await self.message()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg.get("return", msg.get("error"))

    async def event(self) -> dict[str, Any]:
        if self.events:
            return self.events.pop(0)
        msg = await self.message()
        assert "event" in msg, msg
        return msg

    async def names(self, count: int) -> list[str]:
        return [(await self.event())["event"] for _ in range(count)]


@asynccontextmanager
async def playing(
    scenario: Scenario, *, negotiate: bool = True
) -> AsyncIterator[tuple[Simulator, ScenarioRunner, Client]]:
    async with Simulator(build_machine(scenario), epoch=EPOCH) as sim, trio.open_nursery() as n:
        runner = ScenarioRunner(sim, scenario)
        await n.start(runner.run)
        server_side, client_side = trio.testing.memory_stream_pair()
        n.start_soon(sim.handle_stream, server_side)
        client = Client(client_side)
        assert "QMP" in await client.message()
        if negotiate:
            assert await client.execute("qmp_capabilities") == {}
        yield sim, runner, client
        n.cancel_scope.cancel()


DISK = "vm: {disks: [{name: vda, on_read_error: stop}]}\n"


@pytest.mark.trio
async def test_disk_error_stop_then_cont_under_virtual_time(
    mock_clock: trio.testing.MockClock,
) -> None:
    s = loads_scenario(
        DISK + "steps:\n  - wait: 1h\n  - cause: disk-error\n    device: vda\n  - until: cont\n"
    )
    async with playing(s) as (_, runner, client):
        event = await client.event()
        assert (event["event"], event["data"]["action"]) == ("BLOCK_IO_ERROR", "stop")
        assert event["timestamp"]["seconds"] == EPOCH + 3600
        assert await client.names(1) == ["STOP"]
        assert (await client.execute("query-status"))["status"] == "io-error"
        assert not runner.done.is_set()
        await client.execute("cont")
        await runner.done.wait()
        assert (await client.execute("query-status"))["running"] is True
        assert await client.names(1) == ["RESUME"]


@pytest.mark.trio
async def test_until_timeout_goes_on_and_notes_it(mock_clock: trio.testing.MockClock) -> None:
    s = loads_scenario("steps:\n  - until: cont\n    timeout: 30s\n  - cause: guest-reset\n")
    async with playing(s) as (_, runner, client):
        assert await client.names(1) == ["RESET"]
        assert runner.notes == ["<scenario>:2: no cont within 30s, going on"]


@pytest.mark.trio
async def test_on_handler_runs_once_and_reply_overrides(mock_clock: trio.testing.MockClock) -> None:
    s = loads_scenario(
        DISK + "steps:\n"
        "  - reply: query-version\n    error: {class: GenericError, desc: busy}\n    times: once\n"
        "  - on: system_reset\n    times: once\n    steps:\n      - wait: 1s\n"
        "      - cause: rtc-change\n        offset: 9\n"
    )
    async with playing(s) as (_, runner, client):
        await runner.done.wait()
        assert await client.execute("query-version") == {"class": "GenericError", "desc": "busy"}
        assert "qemu" in await client.execute("query-version")
        await client.execute("system_reset")
        await client.execute("system_reset")
        events = [await client.event() for _ in range(3)]
        assert [e["event"] for e in events] == ["RESET", "RESET", "RTC_CHANGE"]
        assert events[2]["data"]["offset"] == 9


@pytest.mark.trio
async def test_repeat_and_throttled_rtc(mock_clock: trio.testing.MockClock) -> None:
    s = loads_scenario(
        "steps:\n  - repeat: 4\n    steps:\n      - cause: rtc-change\n        offset: 1\n"
        "      - wait: 300ms\n      - cause: rtc-change\n        offset: 2\n      - wait: 300ms\n"
        "  - wait: 2s\n"
    )
    async with playing(s) as (_, runner, client):
        await runner.done.wait()
        seen = []
        while client.buf or not seen or seen[-1]["data"]["offset"] != 2:
            seen.append(await client.event())
        # 8 writes in 2.4 s: QEMU lets one through per second, keeping the latest offset
        assert 2 <= len(seen) < 8


@pytest.mark.trio
async def test_fake_data_is_seeded_and_valid(mock_clock: trio.testing.MockClock) -> None:
    text = "vm: {seed: 5}\nsteps:\n  - emit: VNC_CONNECTED\n    fake: true\n"
    first = []
    for _ in range(2):
        async with playing(loads_scenario(text)) as (_, _runner, client):
            first.append((await client.event())["data"])
    assert first[0] == first[1]
    assert {"host", "service", "family"} <= set(first[0]["client"])


@pytest.mark.trio
async def test_startup_clock_drops_events_before_negotiation(
    mock_clock: trio.testing.MockClock,
) -> None:
    s = loads_scenario(
        "clock: startup\nsteps:\n  - cause: guest-reset\n  - wait: 1s\n  - emit: STOP\n"
    )
    async with playing(s, negotiate=False) as (_, runner, client):
        await trio.sleep(0.5)
        assert await client.execute("qmp_capabilities") == {}
        assert await client.names(1) == ["STOP"]
        await runner.done.wait()


@pytest.mark.trio
async def test_first_client_clock_waits_for_negotiation(
    mock_clock: trio.testing.MockClock,
) -> None:
    s = loads_scenario("steps:\n  - cause: guest-reset\n")
    async with playing(s, negotiate=False) as (_, runner, client):
        await trio.sleep(60)
        assert not runner.done.is_set()
        assert await client.execute("qmp_capabilities") == {}
        assert await client.names(1) == ["RESET"]


@pytest.mark.trio
async def test_wire_faults(mock_clock: trio.testing.MockClock) -> None:
    s = loads_scenario(
        "steps:\n  - fault: garbage\n    text: '}{'\n  - fault: error-without-id\n"
        "  - fault: unknown-id-reply\n  - fault: split\n    chunk: 2\n  - emit: STOP\n"
        "  - wait: 1s\n  - fault: disconnect\n"
    )
    async with playing(s) as (_, _runner, client):
        assert await client.line() == b"}{\r"
        assert "id" not in await client.message()
        assert (await client.message())["id"] == "qmpsim-unknown-id"
        assert (await client.event())["event"] == "STOP"
        with pytest.raises(EOFError):
            await client.line()


@pytest.mark.trio
async def test_cause_the_vm_refuses_is_noted_not_fatal(mock_clock: trio.testing.MockClock) -> None:
    s = loads_scenario(
        DISK + "steps:\n  - cause: disk-error\n    device: vda\n  - cause: guest-reset\n"
    )
    async with playing(s) as (_, runner, client):
        await runner.done.wait()
        assert await client.names(2) == ["BLOCK_IO_ERROR", "STOP"]
        assert runner.notes[0].startswith("<scenario>:5: guest-reset skipped: ")


@pytest.mark.trio
async def test_the_timeline_outlives_a_client_and_the_next_one_joins_midway(
    mock_clock: trio.testing.MockClock,
) -> None:
    s = loads_scenario(
        DISK + "steps:\n  - wait: 1s\n  - cause: guest-reset\n  - wait: 10s\n"
        "  - cause: disk-error\n    device: vda\n  - wait: 10s\n  - cause: guest-reset\n"
    )
    async with playing(s) as (sim, runner, first), trio.open_nursery() as n:
        assert await first.names(1) == ["RESET"]
        await first.stream.aclose()
        await trio.sleep(15)  # the disk error happens while nobody listens: it is dropped
        server_side, client_side = trio.testing.memory_stream_pair()
        n.start_soon(sim.handle_stream, server_side)
        second = Client(client_side)
        assert "QMP" in await second.message()
        await second.execute("qmp_capabilities")
        assert (await second.execute("query-status"))["status"] == "io-error"
        await second.execute("cont")
        assert await second.names(2) == ["RESUME", "RESET"]
        await runner.done.wait()
        n.cancel_scope.cancel()


@pytest.mark.trio
async def test_event_before_greeting_reaches_the_next_client_first(
    mock_clock: trio.testing.MockClock,
) -> None:
    s = loads_scenario(
        "steps:\n  - fault: event-before-greeting\n  - wait: 1s\n  - fault: disconnect\n"
    )
    async with playing(s) as (sim, runner, first), trio.open_nursery() as n:
        await runner.done.wait()
        with pytest.raises(EOFError):
            await first.line()
        server_side, client_side = trio.testing.memory_stream_pair()
        n.start_soon(sim.handle_stream, server_side)
        second = Client(client_side)
        early = await second.message()
        assert early["event"] == "RESUME"
        assert early["timestamp"] == {"seconds": int(EPOCH), "microseconds": 0}
        assert "QMP" in await second.message()
        n.cancel_scope.cancel()
