"""Every YAML example in docs/scenarios.md is a valid scenario."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qmpsim.scenario import SHIPPED_DIR, loads_scenario

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_reference_has_examples() -> None:
    assert len(BLOCKS) >= 12


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_doc_example_loads(block: str) -> None:
    # anchored in the shipped library so that `include` examples resolve
    scenario = loads_scenario(block, str(SHIPPED_DIR / "doc-example.yaml"))
    assert scenario.steps or scenario.actions or scenario.vm.disks
