"""Shipped scenarios on the command line: did-you-mean, ``list --paths``, ``show --yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpsim.cli import main
from qmpsim.scenario.library import shipped_scenarios
from qmpsim.scenario.loader import load_scenario, loads_scenario
from qmpsim.scenario.text import scenario_document


@pytest.mark.parametrize("command", [["show", "tuor"], ["serve", "tuor", "--unix", "x.sock"]])
def test_a_mistyped_shipped_name_gets_a_suggestion(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"qmpsim {command[0]}: tuor: no such file or shipped scenario")
    assert "(did you mean 'tour'?)" in err and "shipped: disk-read-error-stop" in err
    assert len(err.splitlines()) == 1


def test_a_missing_file_is_not_taken_for_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "nowhere/tour.yaml"]) == 1
    assert "cannot read the file" in capsys.readouterr().err


def test_list_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--paths"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [name for name, _ in rows] == [p.stem for p in shipped_scenarios()]
    assert all(Path(path).is_file() and Path(path).stem == name for name, path in rows)


def test_show_yaml_prints_a_file_that_loads_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--yaml", "tour"]) == 0
    text = capsys.readouterr().out
    tour = load_scenario(next(p for p in shipped_scenarios() if p.stem == "tour"))
    assert scenario_document(loads_scenario(text)) == scenario_document(tour)
