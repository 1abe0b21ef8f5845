"""The marker's cassettes: replay=, the record modes, and what a failing replay says."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from qemu_harness import require_qemu

# Shared with pytester's inline runs rather than imported afresh by each of them.
from qmpsim.qmp.cassette import load_cassette

pytest_plugins = ["pytester"]

RECORDED = Path(__file__).parent / "cassettes" / "qemu-7.2-session.jsonl"
QEMU = "qemu-system-x86_64 -M none -nodefaults -display none"

CLIENT = '''
import json, socket

def session(path, *commands):
    """Negotiate as qemu.qmp did when the cassette was recorded; the replies."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        with sock.makefile("rwb") as f:
            f.readline()
            f.write(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
            f.flush()
            f.readline()
            replies = []
            for number, command in enumerate(commands):
                f.write(json.dumps({"execute": command, "id": f"__qmp#{number:05d}"}).encode())
                f.flush()
                while "event" in (message := json.loads(f.readline())):
                    pass
                replies.append(message)
            return replies
'''


def run(pytester: pytest.Pytester, body: str, *options: str) -> pytest.RunResult:
    (pytester.path / "cassettes").mkdir(exist_ok=True)
    shutil.copy(RECORDED, pytester.path / "cassettes" / "session.jsonl")
    pytester.makepyfile(test_user=CLIENT + body)
    return pytester.runpytest("-p", "no:cacheprovider", *options)


def test_a_cassette_replays_what_qemu_answered(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(replay="cassettes/session.jsonl")
def test_replayed(qmp_server):
    status, stop = session(qmp_server.path, "query-status", "stop")
    assert status["return"]["status"] == "running"
    assert stop == {"return": {}, "id": "__qmp#00001"}
    qmp_server.assert_event_sent("STOP", count=1)
    assert qmp_server.status == "running"  # the simulator's VM: a replay does not drive it
""",
    )
    result.assert_outcomes(passed=1)


def test_a_request_the_cassette_lacks_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(replay="cassettes/session.jsonl")
def test_replayed(qmp_server):
    (reply,) = session(qmp_server.path, "query-kvm")
    assert "expected next" in reply["error"]["desc"]
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "qmpsim replay of *cassettes/session.jsonl: the client did not do as recorded",
            '  unexpected {"execute": "query-kvm"}; expected next: {"execute": "query-status"}'
            " (request 1 of 7)",
        ]
    )


def test_strict_mode_also_wants_every_recorded_request(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(replay="cassettes/session.jsonl", strict=True)
def test_replayed(qmp_server):
    session(qmp_server.path, "query-status", "stop", "query-status", "cont")
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*never sent: session 1, request 5: "
            '{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}',
            '*never sent: session 1, request 7: {"execute": "quit"}',
        ]
    )


def test_a_missing_cassette_says_how_to_record_it(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(replay="cassettes/nothing.jsonl")
def test_replayed(qmp_server):
    pass

@pytest.mark.qmpsim(replay="cassettes/nothing.jsonl", record_mode="once")
def test_no_qemu(qmp_server):
    pass

@pytest.mark.qmpsim(replay="cassettes/session.jsonl", scenario="tour")
def test_both(qmp_server):
    pass
""",
    )
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*no cassette at *nothing.jsonl (record mode none); to record it, give a real "
            "QEMU: --qmpsim-qemu=COMMAND or --qmpsim-upstream=SOCKET",
            "*no cassette at *nothing.jsonl (record mode once) and no QEMU to record with*",
            "*give scenario= or replay=, not both*",
        ]
    )


def test_new_episodes_without_qemu_replays_leniently(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(replay="cassettes/session.jsonl", record_mode="new_episodes")
def test_replayed(qmp_server):
    kvm, status = session(qmp_server.path, "query-kvm", "query-status")
    assert kvm["return"] == {"enabled": False, "present": True}  # the simulator's
    assert status["return"]["status"] == "running"  # the cassette's
""",
    )
    result.assert_outcomes(passed=1)


@pytest.mark.qemu
def test_once_records_then_replays(pytester: pytest.Pytester) -> None:
    require_qemu()
    body = """
import pytest

@pytest.mark.qmpsim(replay="cassettes/fresh.jsonl")
def test_recorded(qmp_server, request):
    stop, status = session(qmp_server.path, "stop", "query-status")
    assert stop["return"] == {}
    assert status["return"]["status"] == "paused"
    qmp_server.assert_event_sent("STOP")
    if request.config.getoption("qmpsim_qemu"):  # recording: the VM is the real QEMU
        with pytest.raises(RuntimeError, match="records a real QEMU"):
            qmp_server.status
"""
    recording = run(pytester, body, "--qmpsim-record-mode=once", f"--qmpsim-qemu={QEMU}")
    recording.assert_outcomes(passed=1)
    cassette = load_cassette(pytester.path / "cassettes" / "fresh.jsonl")
    assert [e.command for e in cassette.sessions[0].exchanges] == ["stop", "query-status"]
    replayed = run(pytester, body)
    replayed.assert_outcomes(passed=1)


@pytest.mark.qemu
def test_new_episodes_appends_connections(pytester: pytest.Pytester) -> None:
    require_qemu()
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(replay="cassettes/session.jsonl", record_mode="new_episodes")
def test_two_connections(qmp_server):
    session(qmp_server.path, "query-status")  # the recorded session
    (name,) = session(qmp_server.path, "query-name")  # a new one: recorded
    assert name["return"] == {}
""",
        f"--qmpsim-qemu={QEMU}",
    )
    result.assert_outcomes(passed=1)
    cassette = load_cassette(pytester.path / "cassettes" / "session.jsonl")
    assert [[e.command for e in s.exchanges] for s in cassette.sessions][1] == ["query-name"]
    assert len(cassette.sessions) == 2
