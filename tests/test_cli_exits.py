"""How every ``qmpsim`` command ends when it is stopped or fed junk: quietly, with the status
shells expect, or with one line that says where, never with a traceback.

The policy lives once, in ``qmpsim.cli.app.main``: Ctrl-C ends with 130 (128 + SIGINT),
a reader that went away (``qmpsim generate | head -1``) with 141 (128 + SIGPIPE, as
``cat`` ends), both silently, whether or not the command runs under trio.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from qmpsim.cli import app as cli
from qmpsim.cli import common
from qmpsim.errors import QmpSimError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30  # seconds; a guard against a hang, not an assertion on timing

# `qmpsim check -` whose standard input says on stderr when the command starts reading it.
CHECK_STDIN = """\
import sys

class Announcing:
    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        print("reading", file=sys.stderr, flush=True)
        return iter(self.inner)

sys.stdin = Announcing(sys.stdin)
from qmpsim.cli import main
sys.exit(main(["check", "-"]))
"""


@contextmanager
def started(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def readline(stream: IO[str]) -> str:
    """The next line of a child's output, or a failure (not a hang) when none comes in time."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(stream.readline).result(timeout=TIMEOUT)
    finally:
        pool.shutdown(wait=False)  # a stuck read ends when the child is killed


def interrupted(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C (SIGINT, as a terminal sends it) to a process inside ``main``: status, stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, err


def test_ctrl_c_in_generate(tmp_path: Path) -> None:
    with started([sys.executable, "-m", "qmpsim", "generate", "--count", "1000000"]) as proc:
        assert proc.stdout is not None
        assert json.loads(readline(proc.stdout))["event"]  # it is walking: inside main
        assert interrupted(proc) == (cli.EXIT_INTERRUPTED, "")


def test_ctrl_c_in_check_reading_standard_input() -> None:
    with started([sys.executable, "-c", CHECK_STDIN]) as proc:
        assert proc.stderr is not None
        assert readline(proc.stderr) == "reading\n"
        assert interrupted(proc) == (cli.EXIT_INTERRUPTED, "")


def test_ctrl_c_in_demo_under_trio(tmp_path: Path) -> None:
    scenario = tmp_path / "long.yaml"
    scenario.write_text("name: long\nclock: startup\nsteps:\n  - wait: 1h\n  - emit: STOP\n")
    with started([sys.executable, "-m", "qmpsim", "demo", str(scenario)]) as proc:
        assert proc.stdout is not None
        while "greeting" not in (line := readline(proc.stdout)):
            assert line, "the demo ended before its client was greeted"
        assert interrupted(proc) == (cli.EXIT_INTERRUPTED, "")


def test_generate_into_a_closed_pipe_ends_quietly() -> None:
    with started([sys.executable, "-m", "qmpsim", "generate", "--count", "1000000"]) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert readline(proc.stdout)
        proc.stdout.close()  # as `head -1` exits after its line
        assert proc.wait(timeout=TIMEOUT) == cli.EXIT_BROKEN_PIPE
        assert proc.stderr.read() == ""


def test_generate_piped_to_head_in_a_shell() -> None:
    script = 'qmpsim() { "$PY" -m qmpsim "$@"; }\nqmpsim generate --count 100000 | head -1\n'
    script += 'echo "status ${PIPESTATUS[0]}"\n'
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        env={"PY": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    first, status = result.stdout.splitlines()
    assert json.loads(first)["event"]
    assert status == f"status {cli.EXIT_BROKEN_PIPE}"
    assert result.stderr == ""


def test_check_quotes_a_binary_file_escaped_and_bounded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.bin"
    every_byte = bytes(b for b in range(256) if b not in b"\r\n")  # but line ends
    junk.write_bytes(
        b"\x7fELF\x02\x01\x00\x00\x1b[2J\x1b]0;owned\x07\xff\xfe" + every_byte * 40 + b"\n"
        b"\x00\x00\x0c\x00 \xe2\x80\xa8 \x1b[31mred\n"
    )
    status = cli.main(["check", str(junk)])
    out = capsys.readouterr().out
    assert status == 1
    lines = out.splitlines()
    assert len(lines) == 3
    for line in lines[:2]:
        assert line.isprintable(), repr(line)
        place, _, quoted = line.partition(": json: not JSON: ")
        assert place.startswith(f"{junk}:")
        assert len(quoted) <= 80
    assert lines[0].split("not JSON: ")[1].startswith(r"\x7fELF\x02\x01\x00\x00\x1b[2J\x1b]0;")
    assert lines[1].split("not JSON: ")[1] == r"\x00\x00\x0c\x00 \u2028 \x1b[31mred"


def test_check_escapes_what_a_rule_quotes_from_the_log(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    vnc = {"host": "127.0.0.1", "service": "5900", "family": "ipv4", "websocket": False}
    client = {"host": "\x1b[2J", "service": "1", "family": "ipv4", "websocket": False}
    event = {
        "event": "VNC_INITIALIZED",
        "timestamp": {"seconds": 1, "microseconds": 0},
        "data": {"server": {**vnc, "auth": "none"}, "client": client},
    }
    log = tmp_path / "vnc.jsonl"
    log.write_text(json.dumps(event) + "\n")
    assert cli.main(["check", str(log)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{log}:1: vnc-session: VNC_INITIALIZED for \\x1b[2J:1, which is not connected"


def test_check_reads_a_binary_standard_input_as_a_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qmpsim", "check", "-"],
        input=b"\xff\xfe\x00\x1b[2J\n",
        capture_output=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr == b""
    assert (
        result.stdout.splitlines()[0]
        == b"-:1: json: not JSON: \xef\xbf\xbd\xef\xbf\xbd\\x00\\x1b[2J"
    )


# --- the policy, on commands that fail inside trio's exception groups ----------------------


def failing(exc: BaseException) -> common.Subcommand:
    def run(args: argparse.Namespace) -> int:
        raise exc

    return common.Subcommand("boom", "fail", "Fail.", "", lambda parser: None, run)


@pytest.mark.parametrize(
    ("exc", "status", "err"),
    [
        (BaseExceptionGroup("tasks", [QmpSimError("no such VM")]), 1, "qmpsim boom: no such VM\n"),
        (
            BaseExceptionGroup("a", [BaseExceptionGroup("b", [FileNotFoundError(2, "gone")])]),
            1,
            "qmpsim boom: [Errno 2] gone\n",
        ),
        (BaseExceptionGroup("t", [KeyboardInterrupt(), ValueError("by the way")]), 130, ""),
        (KeyboardInterrupt(), 130, ""),
    ],
)
def test_exception_groups_are_unwrapped(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    status: int,
    err: str,
) -> None:
    monkeypatch.setitem(common.SUBCOMMANDS, "boom", failing(exc))
    assert cli.main(["boom"]) == status
    assert capsys.readouterr().err == err


def test_a_usage_error_in_a_group_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        common.SUBCOMMANDS, "boom", failing(ExceptionGroup("g", [common.UsageError("--x is bad")]))
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["boom"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "qmpsim boom: error: --x is bad\n"


@pytest.mark.parametrize(
    "exc", [RuntimeError("a bug"), ExceptionGroup("g", [OSError(), RuntimeError("a bug")])]
)
def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    monkeypatch.setitem(common.SUBCOMMANDS, "boom", failing(exc))
    with pytest.raises(type(exc)):
        cli.main(["boom"])


def test_a_broken_pipe_that_is_not_standard_output_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(common.SUBCOMMANDS, "boom", failing(BrokenPipeError(32, "Broken pipe")))
    assert cli.main(["boom"]) == 1
    assert capsys.readouterr().err == "qmpsim boom: [Errno 32] Broken pipe\n"
