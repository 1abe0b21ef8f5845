"""Every YAML example in docs/scenarios.md is a valid scenario."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qmpsim.scenario.json_schema import scenario_schema
from qmpsim.scenario.library import SHIPPED_DIR
from qmpsim.scenario.loader import loads_scenario

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_reference_has_examples() -> None:
    assert len(BLOCKS) >= 12


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_doc_example_loads(block: str) -> None:
    # anchored in the shipped library so that `include` examples resolve
    scenario = loads_scenario(block, str(SHIPPED_DIR / "doc-example.yaml"))
    assert scenario.steps or scenario.actions or scenario.vm.disks


def _cause_rows() -> dict[str, str]:
    """The cause table: each cause named in the first column, with its row."""
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        cells = line.split("|")
        if len(cells) > 3 and cells[1].strip().startswith("`"):
            for name in re.findall(r"`([a-z-]+)`", cells[1]):
                rows[name] = cells[2]
    return rows


def test_the_cause_table_names_every_cause_and_key_of_the_schema() -> None:
    rows = _cause_rows()
    for branch in scenario_schema()["$defs"]["step"]["oneOf"]:
        properties = branch["properties"]
        if "cause" not in properties:
            continue
        kind = properties["cause"]["const"]
        assert kind in rows, f"the cause table lacks {kind}"
        for key in set(properties) - {"cause"}:
            assert f"`{key}`" in rows[kind], f"the {kind} row lacks its key {key}"
