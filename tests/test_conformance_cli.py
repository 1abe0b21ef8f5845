"""`qmpsim check` and `qmpsim generate`: output, exit status, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmpsim.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_generate_is_reproducible_and_checks_clean(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, first, _ = run(capsys, "generate", "--seed", "11", "--count", "15")
    assert status == 0
    assert run(capsys, "generate", "--seed", "11", "--count", "15")[1] == first
    assert run(capsys, "generate", "--seed", "12", "--count", "15")[1] != first
    lines = first.splitlines()
    assert 0 < len(lines) <= 15
    assert all("event" in json.loads(line) for line in lines)
    log = tmp_path / "events.jsonl"
    log.write_text(first)
    assert run(capsys, "check", str(log)) == (0, f"{log}: conforms to qemu-7.2\n", "")


def test_generate_for_the_old_profile_and_some_causes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "--seed", "3", "--count", "8", "--profile", "qemu-0.14"]
    status, out, _ = run(capsys, *argv, "--causes", "stop,cont")
    assert status == 0
    assert {json.loads(line)["event"] for line in out.splitlines()} <= {"STOP", "RESUME"}


def test_generate_rejects_unknown_causes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--causes", "meteor"])
    assert exit_info.value.code == 2
    assert "unknown causes: meteor" in capsys.readouterr().err


def test_check_reports_every_violation_with_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "bad.jsonl"
    stop = {"timestamp": {"seconds": 5, "microseconds": 0}, "event": "STOP"}
    log.write_text(f"{json.dumps(stop)}\n{json.dumps(stop)}\nnot json\n")
    status, out, _ = run(capsys, "check", str(log), str(tmp_path / "missing.jsonl"))
    assert status == 1
    assert out.splitlines() == [
        f"{log}:2: stop-while-stopped: STOP while the VM is already stopped",
        f"{log}:3: json: not JSON: not json",
        f"{log}: 2 violation(s) of qemu-7.2",
        f"{tmp_path / 'missing.jsonl'}: cannot read: No such file or directory",
    ]


def test_check_initial_status_and_profile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "resume.jsonl"
    log.write_text(json.dumps({"timestamp": {"seconds": 1, "microseconds": 0}, "event": "RESUME"}))
    assert run(capsys, "check", "--profile", "qemu-0.14", str(log))[0] == 0
    status, out, _ = run(capsys, "check", "--initial-status", "running", str(log))
    assert status == 1
    assert "resume-while-running" in out


def test_serve_random_takes_no_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--unix", "/nonexistent/qmp.sock", "--random", "tour.yaml"])
    assert exit_info.value.code == 2
    assert "either SCENARIO or --random" in capsys.readouterr().err
