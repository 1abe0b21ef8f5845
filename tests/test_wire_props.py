"""Properties of qmpsim.qmp.wire: encode/feed round trips and split invariance."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.qmp.wire import JsonStreamer, ParseError, encode, encode_message, qdict_insertion


def _representable(ch: str) -> bool:
    cp = ord(ch)
    noncharacter = 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE
    return not noncharacter and not 0xD800 <= cp <= 0xDFFF


texts = st.text(st.characters(codec="utf-8").filter(_representable), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    # -0.0 is written "-0", which QEMU (and we) read back as the integer 0.
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: math.copysign(1, f) > 0)
    | texts
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, except that a float with an integral value reads back as an int."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and not isinstance(b, bool):
        return isinstance(b, (int, float)) and a == b
    return type(a) is type(b) and a == b


@given(values)
def test_encode_then_feed_round_trips(value: Any) -> None:
    line = encode(value)
    assert line.endswith(b"\r\n") and line.isascii()
    (back,) = JsonStreamer().feed(b"[" + line.rstrip() + b"]")
    assert _same(value, back[0])
    assert encode(qdict_insertion(back[0])) == line


@given(
    st.dictionaries(texts, values, max_size=4) | st.dictionaries(texts, st.integers(), max_size=3)
)
def test_encode_message_parses_to_what_it_says(message: dict[str, Any]) -> None:
    line, parsed = encode_message(message)
    assert line == encode(message)
    (back,) = JsonStreamer().feed(line)
    if parsed is not None:
        # Same values, same types, same member order as QEMU's parser gives.
        assert repr(parsed) == repr(back)


flat_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63) - 2, max_value=2**64 + 2)
    | st.sampled_from(["", "a%sb", "%", '"', "\\", "write", "\n", "\u00e9"])
)
flat_keys = st.sampled_from(["a", "b", "%s", "seconds", "microseconds", "event", "data", "\t"])


@given(
    st.lists(
        st.dictionaries(
            flat_keys,
            flat_scalars | st.dictionaries(flat_keys, flat_scalars, max_size=4),
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_encode_message_of_event_like_messages(messages: list[dict[str, Any]]) -> None:
    # Repeats of the same shape go through the encoder's caches.
    for message in messages + messages:
        line, parsed = encode_message(message)
        assert line == encode(message)
        if parsed is not None:
            (back,) = JsonStreamer().feed(line)
            assert repr(parsed) == repr(back)


event_messages = st.fixed_dictionaries(
    {
        "timestamp": st.fixed_dictionaries(
            {"seconds": st.integers(-1, 2**64), "microseconds": st.integers(-1, 999_999)}
        ),
        "event": st.sampled_from(["STOP", "BLOCK_IO_ERROR", 'A"B', "%s", "\u00e9"]),
    },
    optional={
        "data": st.dictionaries(
            flat_keys, flat_scalars | st.dictionaries(flat_keys, flat_scalars, max_size=3)
        )
        | values
    },
)


@given(st.lists(event_messages, min_size=1, max_size=3))
def test_encode_message_of_events(messages: list[dict[str, Any]]) -> None:
    for message in messages + messages:
        line, parsed = encode_message(message)
        assert line == encode(message)
        if parsed is not None:
            (back,) = JsonStreamer().feed(line)
            assert repr(parsed) == repr(back)


def test_encode_message_tells_true_from_one_and_keeps_no_shared_value() -> None:
    first = encode_message({"data": {"a": True, "b": "x"}})
    second = encode_message({"data": {"a": 1, "b": "x"}})
    assert first[0] == b'{"data": {"a": true, "b": "x"}}\r\n'
    assert second[0] == b'{"data": {"a": 1, "b": "x"}}\r\n'
    again = encode_message({"data": {"a": True, "b": "x"}})
    assert again == first
    assert first[1] is not None and again[1] is not None
    assert again[1]["data"] is not first[1]["data"]


def test_encode_message_vouches_only_for_what_parses_back_identically() -> None:
    assert encode_message({"event": "STOP", "n": 2**64 - 1}) == (
        b'{"n": 18446744073709551615, "event": "STOP"}\r\n',
        {"n": 2**64 - 1, "event": "STOP"},
    )
    assert encode_message({"n": 2**64})[1] is None  # QEMU reads it back as a float
    assert encode_message({"s": "a\nb"})[1] is None
    assert encode_message({"f": 1.5})[1] is None


streams = st.lists(
    st.one_of(
        values.map(lambda v: encode(v)),
        st.binary(max_size=6),
        st.sampled_from([b"{", b"}", b"[", b"]", b",", b":", b'"', b"'", b"\\", b"\xff", b"\x00"]),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=200)
@given(streams, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_any_split_gives_the_same_result_as_one_write(data: bytes, cuts: list[int]) -> None:
    whole = JsonStreamer()
    expected = whole.feed(data) + whole.flush()
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    split = JsonStreamer()
    got: list[Any] = []
    for piece in pieces:
        got += split.feed(piece)
    got += split.flush()
    assert got == expected
    assert whole.buffered == split.buffered == 0


def test_streams_with_errors_are_exercised() -> None:
    # The split property above is only meaningful if garbage yields errors mid-stream.
    out = JsonStreamer().feed(b'\xff{"a": 1}[,]')
    assert out == [ParseError("JSON parse error, stray '\ufffd'"), {"a": 1}, out[2]]
    assert isinstance(out[2], ParseError)


def test_an_event_is_written_in_qdict_order_and_vouched_for() -> None:
    message = {
        "timestamp": {"seconds": 1700000000, "microseconds": 5},
        "event": "BLOCK_IO_ERROR",
        "data": {"device": "virtio0", "operation": "write", "action": "report", "nospace": False},
    }
    line, parsed = encode_message(message)
    assert (
        line
        == encode(message)
        == (
            b'{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "BLOCK_IO_ERROR",'
            b' "data": {"device": "virtio0", "nospace": false, "operation": "write",'
            b' "action": "report"}}\r\n'
        )
    )
    assert parsed is not None and repr(parsed) == repr(JsonStreamer().feed(line)[0])
