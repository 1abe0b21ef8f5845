"""The shipped scenario library: every file loads, and together they cover the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpsim.scenario import load_scenario, shipped_scenarios

SHIPPED = shipped_scenarios()


def test_the_library_has_at_least_twelve_scenarios() -> None:
    assert len(SHIPPED) >= 12


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_loads_and_says_what_it_mimics(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description
    assert path.read_text().startswith("# "), "each file opens with a comment on what it mimics"
