"""docs/migration.md: its Python examples print what the page says; the show outputs are
current."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from qmpsim.scenario.dryrun import show_timeline
from qmpsim.scenario.library import resolve
from qmpsim.scenario.loader import load_scenario

DOC = Path(__file__).resolve().parent.parent / "docs" / "migration.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.parametrize("index", [0, 1], ids=["one-vm", "two-vms"])
def test_the_python_examples_print_what_the_page_shows(index: int) -> None:
    code = blocks("python")[index]
    printed = [t for t in blocks("text") if not t.startswith("$ ")][index]
    out = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "migration_doc_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), namespace)
    assert out.getvalue() == printed


def test_the_show_outputs_are_the_shipped_scenarios() -> None:
    shown = [t for t in blocks("text") if t.startswith("$ ")]
    assert len(shown) == 2
    for text in shown:
        command, _, output = text.partition("\n")
        name = command.split()[-1]
        assert command == f"$ qmpsim show {name}"
        assert output == show_timeline(load_scenario(resolve(name)))
