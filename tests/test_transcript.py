from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from qmpsim.qmp.transcript import Direction, Entry, Transcript

IN, OUT = Direction.IN, Direction.OUT


def _session() -> Transcript:
    t = Transcript()
    t.record(OUT, 1, 0.0, b'{"QMP": {"version": {}, "capabilities": ["oob"]}}\r\n')
    t.record(IN, 1, 0.1, b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    t.record(OUT, 1, 0.1, b'{"return": {}}\r\n')
    # one read holding one command and the first half of the next
    t.record(IN, 1, 0.2, b'{"execute": "stop", "id": 1}{"exec-oob": "migrate-')
    t.record(IN, 1, 0.3, b'pause", "id": "x"}')
    t.record(OUT, 1, 0.2, b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n')
    t.record(OUT, 1, 0.2, b'{"return": {}, "id": 1}\r\n')
    t.record(IN, 2, 0.4, b'{"execute": "device_del", "arguments": {"id": "d1", "x": {"a": 1}}}')
    return t


def test_record_keeps_raw_bytes_and_parses_across_reads() -> None:
    t = _session()
    assert t.entries[3].raw == b'{"execute": "stop", "id": 1}{"exec-oob": "migrate-'
    assert t.entries[3].messages == ({"execute": "stop", "id": 1},)
    assert t.entries[4].messages == ({"exec-oob": "migrate-pause", "id": "x"},)
    assert len(t) == 8


def test_commands_sent_by_name_with_oob_and_ids() -> None:
    t = _session()
    names = [c.command for c in t.commands_sent()]
    assert names == ["qmp_capabilities", "stop", "migrate-pause", "device_del"]
    (pause,) = t.commands_sent("migrate-pause")
    assert pause.oob and pause.id == "x" and pause.client == 1
    (dev,) = t.commands_sent("device_del")
    assert dev.client == 2 and dev.arguments["id"] == "d1"


def test_events_and_replies_sent() -> None:
    t = _session()
    assert [e["event"] for e in t.events_sent()] == ["STOP"]
    assert t.events_sent("RESUME") == []
    assert t.replies_sent() == [{"return": {}}, {"return": {}, "id": 1}]


def test_assert_command_sent_matches_argument_subsets() -> None:
    t = _session()
    t.assert_command_sent("stop")
    t.assert_command_sent("stop", count=1)
    t.assert_command_sent("device_del", {"id": "d1"})
    t.assert_command_sent("device_del", {"x": {"a": 1}}, count=1)
    t.assert_command_sent("cont", count=0)


def test_assert_command_sent_failure_lists_what_was_sent() -> None:
    t = _session()
    with pytest.raises(AssertionError) as info:
        t.assert_command_sent("device_del", {"id": "d2"})
    text = str(info.value)
    assert 'expected at least 1 device_del with arguments ⊇ {"id": "d2"}, found 0' in text
    assert 'client 2: {"execute": "device_del"' in text
    with pytest.raises(AssertionError, match="expected exactly 2 stop, found 1"):
        t.assert_command_sent("stop", count=2)
    with pytest.raises(AssertionError, match="no command was sent"):
        Transcript().assert_command_sent("stop")


def test_assert_event_sent() -> None:
    t = _session()
    assert t.assert_event_sent("STOP", count=1)[0]["event"] == "STOP"
    with pytest.raises(AssertionError, match=r"expected at least 1 RESUME .* events sent: STOP"):
        t.assert_event_sent("RESUME")


def test_jsonl_round_trip_keeps_bytes_exactly() -> None:
    t = _session()
    t.record(IN, 3, 0.5, b"\xff{'execute': 'x'}")
    out = io.StringIO()
    t.dump(out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 9
    first = json.loads(lines[0])
    assert first["dir"] == "out" and first["client"] == 1 and first["raw"].startswith('{"QMP"')
    assert "raw_b64" in json.loads(lines[-1])
    again = Transcript.load(lines)
    assert [e.raw for e in again] == [e.raw for e in t]
    assert [e.messages for e in again] == [e.messages for e in t]
    assert [e.direction for e in again] == [e.direction for e in t]


def test_save_and_read_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    t = _session()
    t.save(path)
    assert Transcript.read(path).entries == t.entries


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("[1]", "must be a JSON object"),
        ('{"dir": "sideways", "client": 1, "time": 0, "raw": ""}', "malformed"),
        ('{"dir": "in", "client": "a", "time": 0, "raw": ""}', "must be numbers"),
        ('{"dir": "in", "client": 1, "time": 0, "raw_b64": "!!"}', "malformed"),
        ("{not json", "Expecting property name"),
    ],
)
def test_load_names_the_bad_line(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=rf"rec\.jsonl:2: .*{why}"):
        Transcript.load(["", line], source="rec.jsonl")


def test_observers_see_each_entry_until_unsubscribed() -> None:
    t = Transcript()
    seen: list[Entry] = []
    unsubscribe = t.subscribe(seen.append)
    t.record(IN, 1, 0.0, b'{"execute": "stop"}')
    unsubscribe()
    unsubscribe()
    t.record(IN, 1, 0.0, b'{"execute": "cont"}')
    assert [e.messages for e in seen] == [({"execute": "stop"},)]


def test_end_client_resets_parsing_state_and_clear_drops_entries() -> None:
    t = Transcript()
    t.record(IN, 1, 0.0, b'{"execute": ')
    t.end_client(1)
    entry = t.record(IN, 1, 0.0, b'{"execute": "cont"}')
    assert entry.messages == ({"execute": "cont"},)
    t.clear()
    assert len(t) == 0 and t.commands_sent() == []


def test_a_bounded_transcript_keeps_the_newest_entries_and_counts_the_rest() -> None:
    t = Transcript(max_entries=10)
    for i in range(100):
        t.record(IN, 1, float(i), b'{"execute": "query-status", "id": %d}' % i)
        assert len(t) <= 11
    ids = [c.id for c in t.commands_sent()]
    assert ids == list(range(100 - len(t), 100))
    assert t.dropped + len(t) == 100
    t.clear()
    assert (len(t), t.dropped) == (0, 0)


def test_an_unbounded_transcript_keeps_everything() -> None:
    t = Transcript()
    for _ in range(1000):
        t.record(OUT, 1, 0.0, b"{}\r\n")
    assert (len(t), t.dropped) == (1000, 0)


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        Transcript(max_entries=0)
