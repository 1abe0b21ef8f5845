"""Replaying a recorded session: the same bytes, ids rewritten, strict and lenient matching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_server_peer import connect

from qmpsim.qmp.cassette import Cassette, load_cassette, profile_for, read_cassette
from qmpsim.qmp.transcript import Direction, Entry, Transcript
from qmpsim.runtime.replay import replay_simulator

RECORDED = Path(__file__).parent / "cassettes" / "qemu-7.2-session.jsonl"
"""A qemu.qmp session with QEMU 7.2.22, recorded through ``qmpsim record``."""

GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"},
        "capabilities": ["oob"],
    }
}


def line(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\r\n"


def event(name: str, at: float, data: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "timestamp": {"seconds": int(at), "microseconds": round(at % 1 * 1e6)},
        "event": name,
    }
    if data is not None:
        message["data"] = data
    return message


def transcript(*entries: tuple[str, float, Any], client: int = 1) -> Transcript:
    """A transcript from (direction, time, message or raw bytes) triples."""
    out = Transcript()
    for direction, time, message in entries:
        raw = message if isinstance(message, bytes) else json.dumps(message).encode()
        if direction == "out" and not isinstance(message, bytes):
            raw = line(message)
        out.record(Direction(direction), client, time, raw)
    return out


def a_session(*, after: float = 2.0) -> Cassette:
    """Negotiation, query-status, stop (STOP before its reply), an RTC_CHANGE ``after``
    seconds after a query-name arrived, then cont."""
    return read_cassette(
        transcript(
            ("out", 100.0, GREETING),
            ("in", 100.1, {"execute": "qmp_capabilities"}),
            ("out", 100.1, {"return": {}}),
            ("in", 100.2, {"execute": "query-status", "id": 1}),
            ("out", 100.2, {"return": {"status": "running", "singlestep": False, "running": True}}),
            ("in", 100.3, {"execute": "stop", "id": 2}),
            ("out", 100.3, event("STOP", 100.3)),
            ("out", 100.3, {"return": {}, "id": 2}),
            ("in", 101.0, {"execute": "query-name", "id": 3}),
            ("out", 101.0, {"return": {"name": "db01"}, "id": 3}),
            ("out", 101.0 + after, event("RTC_CHANGE", 101.0 + after, {"offset": 7})),
            ("in", 110.0, {"execute": "cont", "id": 4}),
            ("out", 110.0, event("RESUME", 110.0)),
            ("out", 110.0, {"return": {}, "id": 4}),
        )
    )


def test_a_recording_splits_into_requests_replies_and_events() -> None:
    (session,) = a_session().sessions
    assert session.greeting == GREETING
    assert session.negotiation == {"execute": "qmp_capabilities"}
    assert [e.command for e in session.exchanges] == ["query-status", "stop", "query-name", "cont"]
    stop = session.exchanges[1]
    assert [e.name for e in stop.events] == ["STOP"] and stop.after == ()
    rtc = session.exchanges[2].after
    assert [(e.name, e.delay) for e in rtc] == [("RTC_CHANGE", pytest.approx(2.0))]
    assert [e.name for e in session.events()] == ["STOP", "RTC_CHANGE", "RESUME"]


def test_a_real_recording_knows_quit_ends_it() -> None:
    cassette = load_cassette(RECORDED)
    (session,) = cassette.sessions
    assert session.closed
    quit_ = session.exchanges[-1]
    assert quit_.command == "quit" and quit_.closed
    assert [e.name for e in quit_.events] == ["SHUTDOWN"]
    assert profile_for(session.greeting).name == "qemu-7.2"
    # The replay's profile lets through what QEMU answered, even commands qmpsim lacks.
    assert "nonexistent" in cassette.profile().commands


async def replay_raw(sim: Any, nursery: trio.Nursery, chunks: list[bytes]) -> bytes:
    """Send each recorded chunk once the previous one is answered; every byte received."""
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(sim.handle_stream, server)
    received = b""

    async def read_until(count: int) -> None:
        nonlocal received
        while received.count(b"\r\n") < count:
            data = await client.receive_some()
            if not data:
                return
            received += data

    await read_until(1)
    for chunk in chunks:
        replies = sum(1 for m in received.splitlines() if b'"return"' in m or b'"error"' in m)
        await client.send_all(chunk)
        while sum(1 for m in received.splitlines() if b'"return"' in m or b'"error"' in m) <= (
            replies
        ):
            before = len(received)
            await read_until(received.count(b"\r\n") + 1)
            if len(received) == before:
                break
    await read_until(received.count(b"\r\n") + 1)  # to EOF
    return received


@pytest.mark.trio
async def test_replaying_a_real_session_writes_the_recorded_bytes(
    autojump_clock: trio.abc.Clock,
) -> None:
    recorded = Transcript.read(RECORDED)
    sim, replayer = replay_simulator(load_cassette(RECORDED))
    async with sim, trio.open_nursery() as nursery:
        chunks = [e.raw for e in recorded if e.direction is Direction.IN and e.raw]
        received = await replay_raw(sim, nursery, chunks)
        nursery.cancel_scope.cancel()
    expected = b"".join(e.raw for e in recorded if e.direction is Direction.OUT)
    assert received == expected
    assert replayer.failures == [] and replayer.unplayed() == []
    assert sim.exited  # the recorded QEMU quit


@pytest.mark.trio
async def test_replies_carry_the_clients_ids(autojump_clock: trio.abc.Clock) -> None:
    sim, _ = replay_simulator(a_session())
    async with sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        assert (await peer.negotiate())["QMP"]["version"]["qemu"]["micro"] == 22
        reply = await peer.execute("query-status", id={"mine": [1]})
        assert reply["id"] == {"mine": [1]} and reply["return"]["running"] is True
        assert await peer.execute("stop") == {"return": {}}  # no id sent, none echoed
        assert [e["event"] for e in peer.events] == ["STOP"]
        assert peer.events[0]["timestamp"] == {"seconds": 100, "microseconds": 300000}
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_events_come_at_their_recorded_offset(autojump_clock: trio.abc.Clock) -> None:
    sim, _ = replay_simulator(a_session(after=2.0))
    async with sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        await peer.execute("query-status")
        await peer.execute("stop")
        await peer.execute("query-name")
        start = trio.current_time()
        assert (await peer.recv())["event"] == "RTC_CHANGE"
        assert trio.current_time() - start == pytest.approx(2.0)
        await peer.execute("cont")
        assert [e["event"] for e in peer.events] == ["RESUME"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_an_early_request_brings_the_events_before_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim, _ = replay_simulator(a_session(after=60.0), speed=1.0)
    async with sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        for command in ("query-status", "stop", "query-name"):
            await peer.execute(command)
        start = trio.current_time()
        await peer.execute("cont")  # long before the RTC_CHANGE was due
        assert trio.current_time() == pytest.approx(start)
        assert [e["event"] for e in peer.events] == ["RTC_CHANGE", "RESUME"]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_strict_mode_names_what_was_expected(autojump_clock: trio.abc.Clock) -> None:
    sim, replayer = replay_simulator(a_session())
    async with sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        reply = await peer.execute("stop", id=9)
        assert reply["id"] == 9
        assert reply["error"] == {
            "class": "GenericError",
            "desc": 'qmpsim replay: unexpected {"execute": "stop"}; '
            'expected next: {"execute": "query-status"} (request 1 of 4)',
        }
        assert (await peer.execute("query-status"))["return"]["status"] == "running"
        nursery.cancel_scope.cancel()
    assert len(replayer.failures) == 1
    assert replayer.unplayed() == [
        'session 1, request 2: {"execute": "stop"}',
        'session 1, request 3: {"execute": "query-name"}',
        'session 1, request 4: {"execute": "cont"}',
    ]


@pytest.mark.trio
async def test_arguments_must_match(autojump_clock: trio.abc.Clock) -> None:
    cassette = read_cassette(
        transcript(
            ("out", 1.0, GREETING),
            ("in", 1.0, {"execute": "qmp_capabilities"}),
            ("out", 1.0, {"return": {}}),
            ("in", 1.1, {"execute": "human-monitor-command", "arguments": {"command-line": "a"}}),
            ("out", 1.1, {"return": "A\r\n"}),
        )
    )
    sim, _ = replay_simulator(cassette)
    async with sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        reply = await peer.execute("human-monitor-command", {"command-line": "b"})
        assert "expected next" in reply["error"]["desc"]
        reply = await peer.execute("human-monitor-command", {"command-line": "a"})
        assert reply == {"return": "A\r\n"}
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_lenient_mode_falls_through_to_the_profile(autojump_clock: trio.abc.Clock) -> None:
    sim, replayer = replay_simulator(a_session(), strict=False)
    async with sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        # Out of order: the recorded query-name is found all the same.
        assert await peer.execute("query-name") == {"return": {"name": "db01"}}
        # Not recorded: the simulated machine answers.
        assert await peer.execute("query-kvm") == {"return": {"enabled": False, "present": True}}
        nursery.cancel_scope.cancel()
    assert replayer.failures == []
    assert [line.split(": ", 1)[1] for line in replayer.unplayed()] == [
        '{"execute": "query-status"}',
        '{"execute": "stop"}',
        '{"execute": "cont"}',
    ]


@pytest.mark.trio
async def test_each_connection_gets_the_next_session(autojump_clock: trio.abc.Clock) -> None:
    first = transcript(
        ("out", 1.0, GREETING),
        ("in", 1.0, {"execute": "qmp_capabilities"}),
        ("out", 1.0, {"return": {}}),
        ("in", 1.1, {"execute": "query-name"}),
        ("out", 1.1, {"return": {"name": "one"}}),
    )
    second = transcript(
        ("out", 2.0, GREETING),
        ("in", 2.0, {"execute": "qmp_capabilities"}),
        ("out", 2.0, {"return": {}}),
        ("in", 2.1, {"execute": "query-name"}),
        ("out", 2.1, {"return": {"name": "two"}}),
        client=2,
    )
    both = Transcript(entries=[*first.entries, *second.entries])
    sim, _ = replay_simulator(read_cassette(both))
    async with sim, trio.open_nursery() as nursery:
        for name in ("one", "two"):
            peer, _ = connect(sim, nursery)
            await peer.negotiate()
            assert await peer.execute("query-name") == {"return": {"name": name}}
            await peer.stream.aclose()
            await sim.wait_no_clients()
        peer, _ = connect(sim, nursery)
        assert await peer.negotiate() == sim.machine.profile.greeting()  # none left
        reply = await peer.execute("query-name")
        assert "2 session(s), all replayed" in reply["error"]["desc"]
        nursery.cancel_scope.cancel()


def test_entries_round_trip_through_json_lines() -> None:
    entry = Entry(Direction.OUT, 1, 1.5, b"", ())
    assert Entry.from_json(json.loads(json.dumps(entry.to_json()))) == entry
