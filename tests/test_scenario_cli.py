"""qmpsim list, validate, show and schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmpsim.cli import main


def test_list_names_every_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tour " in out and "watchdog-reset " in out
    assert len(out.splitlines()) >= 12


def test_validate_reports_each_file_and_fails_when_one_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("steps:\n  - wait: 1s\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - wait: 1s\n  - cause: guest-rest\n")
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: ok (good, 1 steps)"
    assert lines[-1].startswith(f"{bad}:3:12: unknown value 'guest-rest' (did you mean ")


def test_show_prints_the_timeline_with_its_events(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "watchdog-pause"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("watchdog-pause: ")
    assert "-> WATCHDOG (pause), STOP" in out
    assert "-> when it does: RESUME" in out


def test_show_a_broken_file_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("vm: {disks: [{name: vda}]}\nsteps:\n  - cause: disk-error\n    device: vdb\n")
    assert main(["show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"qmpsim show: {bad}:4:13: no disk named 'vdb'")


def test_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "qmpsim scenario"
