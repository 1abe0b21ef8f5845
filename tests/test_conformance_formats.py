"""The checker's inputs: raw server messages, transcripts, qemu.qmp logs, broken lines."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.qmp.transcript import Direction, Transcript
from qmpsim.testing.conformance import RULES, check


def event(name: str, seconds: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"timestamp": {"seconds": seconds, "microseconds": 0}, "event": name}
    if data is not None:
        msg["data"] = data
    return msg


def wire(msg: Any) -> bytes:
    return (json.dumps(msg) + "\r\n").encode()


def test_raw_server_messages_and_commands() -> None:
    lines = [
        json.dumps({"QMP": {"version": {}, "capabilities": ["oob"]}}),
        json.dumps({"execute": "qmp_capabilities"}),
        json.dumps({"return": {}}),
        json.dumps({"execute": "stop", "id": 1}),
        json.dumps(event("STOP", 1)),
        json.dumps({"return": {}, "id": 1}),
        json.dumps({"error": {"class": "GenericError", "desc": "x"}}),
    ]
    assert check(lines) == []


def test_transcripts_are_checked_per_client() -> None:
    transcript = Transcript()
    transcript.record(Direction.IN, 1, 0.0, b'{"execute": "stop"}')
    transcript.record(Direction.OUT, 1, 0.0, wire(event("STOP", 1)))
    transcript.record(Direction.OUT, 2, 0.0, wire(event("STOP", 1)))
    transcript.record(Direction.OUT, 1, 0.0, wire(event("RESUME", 2)))
    transcript.record(Direction.OUT, 2, 0.0, wire(event("RESUME", 2)))
    transcript.record(Direction.OUT, 2, 0.0, wire(event("RESUME", 3)))
    out = io.StringIO()
    transcript.dump(out)
    violations = check(out.getvalue().splitlines())
    assert [(v.line, v.rule) for v in violations] == [(6, "resume-while-running")]


def test_direction_message_records() -> None:
    lines = [
        json.dumps({"direction": "in", "message": {"execute": "cont"}}),
        json.dumps({"direction": "out", "message": event("RESUME", 1)}),
        json.dumps({"direction": "out", "message": event("RESUME", 2)}),
    ]
    assert [v.rule for v in check(lines)] == ["resume-while-running"]


QEMU_QMP_LOG = """\
DEBUG:qemu.qmp.protocol:Connecting to /tmp/qmp.sock ...
DEBUG:qemu.qmp.qmp_client:<-- {
  "QMP": {
    "capabilities": ["oob"]
  }
}
DEBUG:qemu.qmp.qmp_client:--> {
  "execute": "stop"
}
DEBUG:qemu.qmp.qmp_client:<-- {
  "timestamp": {
    "seconds": 10,
    "microseconds": 5
  },
  "event": "STOP"
}
DEBUG:qemu.qmp.qmp_client:<-- {
  "return": {}
}
DEBUG:qemu.qmp.qmp_client:<-- {"timestamp": {"seconds": 11, "microseconds": 0}, "event": "STOP"}
INFO:qemu.qmp.protocol:Task.Reader: end-of-file
"""


def test_qemu_qmp_debug_log() -> None:
    violations = check(QEMU_QMP_LOG.splitlines())
    assert [(v.line, v.rule) for v in violations] == [(20, "stop-while-stopped")]


def test_truncated_log_record() -> None:
    text = 'DEBUG:x:<-- {\n  "event": "STOP",\n'
    assert [(v.line, v.rule) for v in check(text.splitlines())] == [(1, "json")]


def test_bad_lines_are_reported_and_checking_goes_on() -> None:
    lines = [
        "not json at all",
        "[1, 2]",
        json.dumps({"hello": "world"}),
        json.dumps("STOP"),
        json.dumps({"dir": "sideways", "json": []}),
        json.dumps(event("STOP", 1)),
        json.dumps(event("STOP", 2)),
    ]
    assert [(v.line, v.rule) for v in check(lines)] == [
        (1, "json"),
        (2, "message"),
        (3, "message"),
        (4, "message"),
        (5, "message"),
        (7, "stop-while-stopped"),
    ]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = ("event", "data", "timestamp", "return", "dir", "json", "direction", "message", "client")
MESSAGES = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=4)


@settings(max_examples=150, derandomize=True, database=None)
@given(st.lists(st.one_of(st.text(max_size=30), JSON.map(json.dumps), MESSAGES.map(json.dumps))))
def test_any_input_gives_violations_never_an_exception(lines: list[str]) -> None:
    for v in check(lines):
        assert v.rule in RULES
        assert 1 <= v.line <= len(lines)


def test_a_broken_log_record_does_not_swallow_the_next_ones() -> None:
    text = (
        'DEBUG:x:<-- {"event": "STOP", oops\n'
        "  more garbage\n"
        'DEBUG:x:<-- {"timestamp": {"seconds": 1, "microseconds": 0}, "event": "STOP"}\n'
        'DEBUG:x:<-- {"timestamp": {"seconds": 2, "microseconds": 0}, "event": "STOP"}\n'
    )
    assert [(v.line, v.rule) for v in check(text.splitlines())] == [
        (1, "json"),
        (4, "stop-while-stopped"),
    ]
