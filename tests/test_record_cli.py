"""record over TCP, and what replay and scenario-from say when things go wrong (no QEMU needed)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from qmpsim.cli import main
from qmpsim.qmp.cassette import read_cassette
from qmpsim.qmp.transcript import Direction
from qmpsim.runtime.record import Recorder
from qmpsim.runtime.server import Simulator

RECORDED = Path(__file__).parent / "cassettes" / "qemu-7.2-session.jsonl"
TIMEOUT = 20


def talk(address: tuple[str, int] | str, *requests: bytes) -> list[dict[str, object]]:
    """Greeting, then each request and its reply (events kept too)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        reader = sock.makefile("rb")
        out = [json.loads(reader.readline())]
        for request in requests:
            sock.sendall(request)
            while "event" in (message := json.loads(reader.readline())):
                out.append(message)
            out.append(message)
        reader.close()
        return out


@pytest.mark.trio
async def test_the_proxy_records_tcp_both_ways() -> None:
    # The upstream here is qmpsim itself: what the proxy does is the same for any monitor.
    async with Simulator() as upstream, trio.open_nursery() as nursery:
        host, port = await upstream.listen_tcp("127.0.0.1", 0)
        recorder = Recorder((host, port))
        proxy = await nursery.start(recorder.serve_tcp)
        messages = await trio.to_thread.run_sync(
            talk, proxy, b'{"execute": "qmp_capabilities"}', b'{"execute": "stop", "id": 1}'
        )
        await recorder.wait_no_clients()
        nursery.cancel_scope.cancel()
    assert messages[-1] == {"return": {}, "id": 1}
    (session,) = read_cassette(recorder.transcript).sessions
    assert session.greeting == messages[0]
    (stop,) = session.exchanges
    assert stop.reply == {"return": {}, "id": 1} and [e.name for e in stop.events] == ["STOP"]
    # Byte for byte what the upstream sent, read by read.
    sent = b"".join(e.raw for e in upstream.transcript if e.direction is Direction.OUT)
    assert b"".join(e.raw for e in recorder.transcript if e.direction is Direction.OUT) == sent


def test_replay_exits_1_naming_what_the_client_did_wrong(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpsim", "replay", str(RECORDED), "--unix", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the readiness line: no polling
        assert "listening on" in line and "1 recorded session(s)" in line, line
        replies = talk(
            str(path),
            b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
            b'{"execute": "query-kvm", "id": 5}',
        )
        assert replies[-1]["id"] == 5 and "expected next" in str(replies[-1]["error"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert (
        'qmpsim replay: unexpected {"execute": "query-kvm"}; expected next: '
        '{"execute": "query-status"} (request 1 of 7)'
    ) in err
    assert 'qmpsim replay: never sent: session 1, request 7: {"execute": "quit"}' in err


def test_a_file_that_is_not_a_transcript_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"dir": "in"}\n')
    assert main(["scenario-from", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"qmpsim scenario-from: {bad}:1: malformed transcript entry: 'client'\n"
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--unix", "x.sock"]) == 1
    assert "No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["record", "--upstream", "/nonexistent/qemu.sock", "--tcp", "0.0.0.0:4444"],
        ["replay", "/nonexistent/session.jsonl", "--tcp", "192.168.122.1:4444"],
    ],
    ids=["record", "replay"],
)
def test_a_remote_tcp_host_needs_allow_remote(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # refused before anything is opened: the same rule and text as serve's
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "not a loopback address; the monitor has no authentication" in capsys.readouterr().err


def test_localhost_is_loopback() -> None:
    from qmpsim.runtime.listen import is_loopback

    assert [is_loopback(h) for h in ("localhost", "127.0.0.1", "::1", "10.0.0.7", "x")] == [
        True,
        True,
        True,
        False,
        False,
    ]
