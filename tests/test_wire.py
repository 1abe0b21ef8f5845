"""Unit tests for qmpsim.qmp.wire: QEMU's JSON writer, lexer, streamer and parser."""

from __future__ import annotations

import pytest

from qmpsim.qmp import json_lexer
from qmpsim.qmp.wire import JsonStreamer, ParseError, encode, qdict_insertion, qdict_order


def feed_all(*chunks: bytes) -> list[object]:
    streamer = JsonStreamer()
    out: list[object] = []
    for chunk in chunks:
        out += streamer.feed(chunk)
    return out


def err(text: str) -> ParseError:
    return ParseError("JSON parse error, " + text)


# -- writer ------------------------------------------------------------------


def test_encode_uses_qemu_separators_and_crlf() -> None:
    assert encode([1, "a", None, True, False]) == b'[1, "a", null, true, false]\r\n'
    assert encode({}) == b"{}\r\n"
    assert encode([]) == b"[]\r\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"return": {}, "id": 1}, b'{"return": {}, "id": 1}'),
        ({"error": {"class": "GenericError", "desc": "d"}, "id": "x"}, b'{"id": "x", "error": {'),
        ({"major": 7, "minor": 2, "micro": 22}, b'{"micro": 22, "minor": 2, "major": 7}'),
        (
            {"running": True, "singlestep": False, "status": "running"},
            b'{"status": "running", "singlestep": false, "running": true}',
        ),
    ],
)
def test_encode_orders_members_like_a_qdict(value: object, expected: bytes) -> None:
    assert encode(value).startswith(expected)


def test_members_sharing_a_bucket_come_out_in_reverse_insertion_order() -> None:
    assert qdict_order(["minor", "micro"]) == ["micro", "minor"]
    assert qdict_order(["micro", "minor"]) == ["minor", "micro"]
    parsed = {"micro": 1, "minor": 2}
    assert encode(parsed) == b'{"minor": 2, "micro": 1}\r\n'
    assert encode(qdict_insertion(parsed)) == b'{"micro": 1, "minor": 2}\r\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"\\/', '"\\"\\\\/"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x1f\x7f", '"\\u0000\\u0001\\u001F\\u007F"'),
        ("é☃", '"\\u00E9\\u2603"'),
        ("\U0001f600", '"\\uD83D\\uDE00"'),
        ("\ud800", '"\\uFFFD"'),
        ("\ufffe\ufdd0", '"\\uFFFD\\uFFFD"'),
    ],
)
def test_encode_escapes_strings_like_qemu(text: str, expected: str) -> None:
    assert encode(text) == expected.encode() + b"\r\n"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0, b"0"),
        (-(2**63), b"-9223372036854775808"),
        (2**64 - 1, b"18446744073709551615"),
        (0.1, b"0.10000000000000001"),
        (1.0, b"1"),
        (-0.0, b"-0"),
        (1.8446744073709552e19, b"1.8446744073709552e+19"),
        (float("inf"), b"inf"),
    ],
)
def test_encode_numbers_like_qemu(number: float, expected: bytes) -> None:
    assert encode(number) == expected + b"\r\n"


def test_encode_rejects_what_qemu_cannot_say() -> None:
    with pytest.raises(TypeError):
        encode({1: 2})
    with pytest.raises(TypeError):
        encode(object())


def test_encode_handles_deep_nesting() -> None:
    value: object = 1
    for _ in range(3000):
        value = [value]
    assert encode(value) == b"[" * 3000 + b"1" + b"]" * 3000 + b"\r\n"


# -- streamer ----------------------------------------------------------------


def test_values_need_no_newline_and_may_be_split_anywhere() -> None:
    data = b'{"execute":"a"}{"execute":"b","id":[1,{"x":null}]}\n\n'
    expected = [{"execute": "a"}, {"execute": "b", "id": [1, {"x": None}]}]
    assert feed_all(data) == expected
    assert feed_all(*(bytes((b,)) for b in data)) == expected


def test_objects_keep_input_order() -> None:
    (value,) = feed_all(b'{"z":1,"a":2,"m":3}')
    assert list(value) == ["z", "a", "m"]  # type: ignore[call-overload]


def test_whitespace_and_partial_values_produce_nothing() -> None:
    streamer = JsonStreamer()
    assert streamer.feed(b" \t\r\n") == []
    assert streamer.feed(b'{"a": [1, 2') == []
    assert streamer.buffered > 0
    assert streamer.feed(b"]}") == [{"a": [1, 2]}]
    assert streamer.buffered == 0


def test_top_level_scalars_are_values() -> None:
    # Scalars need a following byte to end; QEMU's protocol layer rejects them.
    assert feed_all(b"1 \"x\" 'y' true null 2.5 ") == [1, "x", "y", True, None, 2.5]


def test_flush_finishes_a_pending_token() -> None:
    streamer = JsonStreamer()
    assert streamer.feed(b"12") == []
    assert streamer.flush() == [12]
    assert streamer.feed(b'"abc') == []
    assert streamer.flush() == [err("stray '\"abc'")]
    assert streamer.feed(b"[1,") == []
    assert streamer.flush() == [err("premature EOI")]


def test_reset_drops_partial_input() -> None:
    streamer = JsonStreamer()
    streamer.feed(b'{"a": "b')
    streamer.reset()
    assert streamer.feed(b"{}") == [{}]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'"\\u00e9\\ud83d\\ude00\\u0000"', "é\U0001f600\x00"),
        (b'"a\xc0\x80b"', "a\x00b"),
        (b"'it\\'s \"ok\"'", 'it\'s "ok"'),
        (b'"\\"\\\\\\/\\b\\f\\n\\r\\t\\\'"', "\"\\/\b\f\n\r\t'"),
        (b"-0 ", 0),
        (b"18446744073709551615 ", 2**64 - 1),
        (b"18446744073709551616 ", 1.8446744073709552e19),
        (b"-9223372036854775809 ", -9.223372036854776e18),
        (b"1e400 ", float("inf")),
        (b"1.5E-7 ", 1.5e-7),
    ],
)
def test_scalar_decoding(data: bytes, expected: object) -> None:
    (value,) = feed_all(data)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"X ", [err("stray 'X'")]),
        (b"x ", [err("invalid keyword 'x'")]),
        (b"\x00", [err("stray ''")]),
        (b"\xff", [err("stray '\ufffd'")]),
        (b'"a\x01', [err("stray '\"a\x01'")]),
        (b"01", [err("stray '01'")]),
        (b"1.}", [err("stray '1.}'")]),
        (b"nul ", [err("invalid keyword 'nul'")]),
        (b", : ] }", [err("expecting value")] * 4),
        (b'{"a":1,"a":2}', [err("duplicate key")]),
        (b"{1:2}", [err("key is not a string in object")]),
        (b'{"a" 1}', [err("missing : in object pair")]),
        (b'{"a":1 "b":2}', [err("expected separator in dict")]),
        (b"[1 2]", [err("expected separator in list")]),
        (b"[1,]", [err("expecting value")]),
        (b'"\\x"', [err("invalid escape sequence in string")]),
        (b'"\\u12"', [err('\\u12" is not a valid Unicode character')]),
        (b'"\\ud800x"', [err("\\ud800 is not a valid Unicode character")]),
        (b'"\\ud800\\u0041"', [err("\\ud800 is not a valid Unicode character")]),
        (b'"\xc3\x28"', [err("invalid UTF-8 sequence in string")]),
        (b'"\xef\xbf\xbe"', [err("invalid UTF-8 sequence in string")]),
        (b"@abc,x ", [err("stray '@'"), err("expecting value"), err("invalid keyword 'x'")]),
        (b"@ab\tcd\n{}", [err("stray '@'"), {}]),
    ],
)
def test_errors_and_recovery(data: bytes, expected: list[object]) -> None:
    assert feed_all(data) == expected


def test_parser_messages_are_cut_like_qemus_buffer() -> None:
    (error,) = feed_all(b"z" * 3000 + b" ")
    assert isinstance(error, ParseError)
    assert error.message == "JSON parse error, " + ("invalid keyword '" + "z" * 3000)[:1023]


def test_nesting_limit() -> None:
    (deepest,) = feed_all(b"[" * 1024 + b"]" * 1024)
    for _ in range(1023):
        (deepest,) = deepest  # type: ignore[misc]
    assert deepest == []
    out = feed_all(b"[" * 1025 + b"]" * 1025)
    assert out[0] == ParseError("JSON nesting depth limit exceeded")
    assert out[1:] == [err("expecting value")] * 1025


def test_token_count_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_lexer, "MAX_TOKEN_COUNT", 5)
    assert feed_all(b"[1,2]") == [[1, 2]]
    # The sixth token is refused; what follows is lexed from a clean state.
    assert feed_all(b"[1,2,3]") == [
        ParseError("JSON token count limit exceeded"),
        err("expecting value"),
    ]


def test_token_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_lexer, "MAX_TOKEN_SIZE", 10)
    # Total size: each new token must fit with one byte to spare.
    assert feed_all(b'["abcde"]') == [["abcde"]]
    assert feed_all(b'["abcdef"]') == [ParseError("JSON token size limit exceeded")]
    # A single token longer than the limit is cut by the lexer, which starts afresh.
    streamer = JsonStreamer()
    assert streamer.feed(b'"abcdefghijklmn" ') == [
        ParseError("JSON token size limit exceeded"),
        err("invalid keyword 'klmn'"),
    ]
    assert streamer.flush() == [err("stray '\" '")]
