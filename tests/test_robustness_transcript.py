"""Under load the transcript keeps its word: what it records for each message written
equals what lexing the bytes (as a client would) gives, member order included."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.qmp.transcript import Direction, Transcript
from qmpsim.runtime.server import Simulator
from qmpsim.testing.strategies import events
from qmpsim.vm.machine import Event

_odd_data = st.dictionaries(
    st.text(max_size=4),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
        st.lists(st.integers(-(2**70), 2**70), max_size=3),
        st.sampled_from([2**64, 2**64 - 1, -(2**63) - 1, 1.0, 1e300, "\u00e9", "\x00", "\x7f"]),
    ),
    max_size=4,
)


def _written(messages: list[dict[str, Any]], raw_first: bool) -> Transcript:
    async def main() -> Transcript:
        async with Simulator(epoch=1_700_000_000.0) as sim, trio.open_nursery() as nursery:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(sim.handle_stream, server)
            await client.send_all(b'{"execute": "qmp_capabilities"}')
            await sim.wait_negotiated()
            if raw_first:
                sim.send_raw(b'{"partial": ')  # from here on the client's lexer is mid-value
            for message in messages:
                stamp = message["timestamp"]
                event = Event(
                    message["event"], message.get("data"), stamp["seconds"], stamp["microseconds"]
                )
                sim.deliver([event])
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
            return sim.transcript

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _lexed(transcript: Transcript) -> list[str]:
    reference = Transcript()
    out = []
    for entry in transcript:
        if entry.direction is Direction.OUT:
            lexed = reference.record(entry.direction, entry.client, entry.time, entry.raw)
            out.append(json.dumps([lexed.messages, lexed.errors]))
    return out


def _recorded(transcript: Transcript) -> list[str]:
    return [
        json.dumps([entry.messages, entry.errors])
        for entry in transcript
        if entry.direction is Direction.OUT
    ]


@settings(derandomize=True, max_examples=200, deadline=None)
@given(messages=st.lists(events(), min_size=1, max_size=6), raw_first=st.booleans())
def test_recorded_events_equal_the_lexed_bytes(
    messages: list[dict[str, Any]], raw_first: bool
) -> None:
    transcript = _written(messages, raw_first)
    assert _recorded(transcript) == _lexed(transcript)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(data=st.lists(_odd_data, min_size=1, max_size=4))
def test_odd_values_are_recorded_as_lexed_too(data: list[dict[str, Any]]) -> None:
    stamp = {"seconds": 1_700_000_000, "microseconds": 5}
    messages = [{"event": "X_ODD", "data": d, "timestamp": stamp} for d in data]
    transcript = _written(messages, False)
    assert _recorded(transcript) == _lexed(transcript)
