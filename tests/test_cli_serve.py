"""``qmpsim serve`` (and ``demo``) as a user runs them: a subprocess, signals, messages."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qmpsim.cli.app import build_parser
from qmpsim.cli.common import SUBCOMMANDS, TcpAddress, parse_tcp

ROOT = Path(__file__).resolve().parent.parent
QMPSIM = [sys.executable, "-m", "qmpsim"]
TIMEOUT = 20


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QMPSIM, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qs-") as tmp:
        yield Path(tmp)


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``qmpsim serve ARGS`` once it said it listens; the process and that line."""
    proc = subprocess.Popen(
        [*QMPSIM, "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the readiness signal: no polling, no sleep
        assert "listening on" in line, f"unexpected first line {line!r}"
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def session(path: str, *requests: bytes) -> list[dict[str, object]]:
    """Greeting, negotiation and ``requests`` on a Unix socket; every message received."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        reader = sock.makefile("rb")
        out = [json.loads(reader.readline())]
        for request in (b'{"execute": "qmp_capabilities"}', *requests):
            sock.sendall(request)
            while True:
                msg = json.loads(reader.readline())
                out.append(msg)
                if "event" not in msg:
                    break
        reader.close()
        return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_unix_until_a_signal(sock_dir: Path, signum: signal.Signals) -> None:
    path = str(sock_dir / "qmp.sock")
    with serving("--unix", path) as (proc, line):
        assert line.strip() == f"qmpsim: listening on {path} (an idle VM)"
        messages = session(path, b'{"execute": "stop", "id": 1}')
        assert messages[1:] == [
            {"return": {}},
            {"timestamp": messages[2]["timestamp"], "event": "STOP"},
            {"return": {}, "id": 1},
        ]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0
        assert "Traceback" not in err
        assert f"{signum.name}, stopping" in err
    assert not os.path.exists(path)


def test_serve_stops_when_the_vm_quits(sock_dir: Path) -> None:
    path = str(sock_dir / "qmp.sock")
    with serving("--unix", path) as (proc, _):
        messages = session(path, b'{"execute": "quit"}')
        assert [m.get("event") for m in messages[-2:]] == ["SHUTDOWN", None]
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0 and "the VM exited" in err
    assert not os.path.exists(path)


def test_serve_verbose_logs_one_line_per_message(sock_dir: Path) -> None:
    path = str(sock_dir / "qmp.sock")
    with serving("--unix", path, "-v") as (proc, _):
        session(path, b'{"execute": "query-status", "id": "s"}')
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    # Each line: its time, then what happened (see tests/test_cli_verbose.py).
    lines = [line.split(" ", 1)[1] for line in err.splitlines() if line[:1].isdigit()]
    assert 'qmpsim: client 1 -> {"execute": "query-status", "id": "s"}' in lines
    assert any(line.startswith('qmpsim: client 1 <- {"QMP": ') for line in lines)
    assert any(line.startswith('qmpsim: client 1 <- {"return": {"status": "run') for line in lines)


def test_serve_tcp_with_a_scenario(sock_dir: Path) -> None:
    scenario = sock_dir / "s.yaml"
    scenario.write_text("name: paused\nvm: {initial_state: paused}\nsteps: []\n")
    with serving(str(scenario), "--tcp", "127.0.0.1:0") as (proc, line):
        assert "scenario 'paused'" in line
        port = int(line.split(" (")[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            assert "QMP" in json.loads(reader.readline())
            sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-status"}')
            assert json.loads(reader.readline()) == {"return": {}}
            assert json.loads(reader.readline())["return"]["status"] == "paused"
            reader.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the arguments --unix --tcp is required"),
        (["--tcp", "4444"], "expected HOST:PORT, e.g. 127.0.0.1:4444"),
        (["--tcp", "localhost:http"], "the port must be a number from 0 to 65535"),
        (["--tcp", "::1:4444"], "write IPv6 hosts in brackets"),
        (["--tcp", "0.0.0.0:4444"], "not a loopback address; the monitor has no authentication"),
        (["--unix", "x", "--tcp", ":0"], "not allowed with argument"),
        (["--tcp", ":0", "--profile", "qemu-9"], "invalid choice: 'qemu-9'"),
        (["--tcp", ":0", "--max-input", "0"], "--max-input must be a positive number of bytes"),
        (["--tcp", ":0", "--max-input", "lots"], "invalid int value: 'lots'"),
        (
            ["--unix", "q.sock", "--control", "./q.sock"],
            "--control and --unix name the same path: give each a socket",
        ),
    ],
)
def test_serve_bad_arguments(args: list[str], message: str) -> None:
    result = run("serve", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_unusable_places_fail_with_status_1(sock_dir: Path) -> None:
    missing = run("serve", "--unix", str(sock_dir / "no" / "such" / "dir.sock"))
    assert missing.returncode == 1
    assert "cannot listen on" in missing.stderr and "No such file or directory" in missing.stderr
    regular = sock_dir / "file"
    regular.write_text("")
    clobber = run("serve", "--unix", str(regular))
    assert clobber.returncode == 1 and "is not a socket" in clobber.stderr
    scenario = sock_dir / "bad.yaml"
    scenario.write_text("name: bad\nsteps:\n  - cause: nonsense\n")
    bad = run("serve", str(scenario), "--unix", str(sock_dir / "q.sock"))
    assert bad.returncode == 1 and f"{scenario}:3" in bad.stderr
    assert not (sock_dir / "q.sock").exists()
    control = run(
        "serve", "--unix", str(sock_dir / "q.sock"), "--control", str(sock_dir / "no" / "c.sock")
    )
    assert control.returncode == 1
    assert control.stderr.splitlines()[-1] == (
        f"qmpsim serve: cannot listen on {sock_dir / 'no' / 'c.sock'}: No such file or directory"
    )
    assert not (sock_dir / "q.sock").exists()
    for result in (missing, clobber, bad, control):
        assert "Traceback" not in result.stderr


def test_help_explains_with_examples() -> None:
    top = run("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "demo" in top.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0
    for text in ("examples:", "--unix PATH", "--tcp HOST:PORT", "--allow-remote", "exit status"):
        assert text in serve.stdout
    assert run().returncode == 2


def test_help_does_not_import_trio() -> None:
    code = (
        "import sys\nfrom qmpsim.cli.app import main\ntry:\n    main(['serve', '--help'])\n"
        "except SystemExit:\n    pass\nprint('trio' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_demo_of_an_idle_vm() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "<- greeting: QEMU 7.2.22" in out
    assert out.index("<- event STOP") < out.index('-> {"execute": "cont"}')
    assert "<- (connection closed by the server)" in out


def test_demo_plays_the_tour_and_the_client_resumes_the_vm() -> None:
    result = run("demo", "scenarios/tour.yaml", "--speed", "20")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("<- event BLOCK_IO_ERROR", "<- event STOP", "<- event RESUME", "<- event RESET"):
        assert text in out
    assert out.index("<- event STOP") < out.index('-> {"execute": "cont"}')
    assert "(the scenario's timeline has ended)" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4444", TcpAddress("127.0.0.1", 4444)),
        (":0", TcpAddress("127.0.0.1", 0)),
        ("[::1]:5", TcpAddress("::1", 5)),
        ("localhost:65535", TcpAddress("localhost", 65535)),
    ],
)
def test_parse_tcp(text: str, expected: TcpAddress) -> None:
    assert parse_tcp(text) == expected


@pytest.mark.parametrize("text", ["[::1]", "host:", "host:-1", "host:70000"])
def test_parse_tcp_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_tcp(text)


def test_subcommands_are_registered_once_each() -> None:
    parser = build_parser()
    assert {"serve", "demo"} <= set(SUBCOMMANDS)
    assert parser.parse_args(["serve", "--tcp", ":0"]).tcp == TcpAddress("127.0.0.1", 0)


def test_serve_accepts_a_shipped_scenario_name() -> None:
    from qmpsim.cli.common import load_scenario_arg
    from qmpsim.scenario.library import SHIPPED_DIR
    from qmpsim.scenario.loader import load_scenario

    assert load_scenario_arg("tour") == load_scenario(SHIPPED_DIR / "tour.yaml")


def test_serve_passes_the_input_bound_to_the_simulator() -> None:
    from qmpsim.cli.common import make_simulator

    assert make_simulator(None, profile=None, max_input=4096).max_input_buffer == 4096
    assert make_simulator(None, profile=None).max_input_buffer is None


def test_serve_keeps_a_bounded_transcript() -> None:
    from qmpsim.cli.common import SERVE_TRANSCRIPT_LIMIT, make_simulator

    assert make_simulator(None, profile=None).transcript.max_entries == SERVE_TRANSCRIPT_LIMIT
