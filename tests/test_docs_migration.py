"""docs/migration.md: its Python example prints what the page says; the show output is current."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from qmpsim.scenario.dryrun import show_timeline
from qmpsim.scenario.library import resolve
from qmpsim.scenario.loader import load_scenario

DOC = Path(__file__).resolve().parent.parent / "docs" / "migration.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_python_example_prints_what_the_page_shows() -> None:
    (code,) = blocks("python")
    printed, _show = blocks("text")
    out = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "migration_doc_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), namespace)
    assert out.getvalue() == printed


def test_the_show_output_is_the_shipped_scenarios() -> None:
    _printed, shown = blocks("text")
    command, _, output = shown.partition("\n")
    name = command.split()[-1]
    assert command == f"$ qmpsim show {name}"
    assert output == show_timeline(load_scenario(resolve(name)))
