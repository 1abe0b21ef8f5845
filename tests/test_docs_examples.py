"""The model's pages in docs/: each Python example prints the text block that follows it
on the page, and each ``$ qmpsim show NAME`` block is that shipped scenario's timeline."""

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

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("block.md", "balloon-suspend.md", "migration.md")
"""The model's pages that show a shipped scenario."""
EXAMPLE_PAGES = (*PAGES, "descriptors.md")


def blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)


def examples() -> list[Any]:
    found = []
    for page in EXAMPLE_PAGES:
        printed = [t for t in blocks(page, "text") if not t.startswith("$ ")]
        codes = blocks(page, "python")
        assert len(codes) == len(printed), f"{page}: each example is followed by its output"
        found += [
            pytest.param(page, c, p, id=f"{page}-{i}")
            for i, (c, p) in enumerate(zip(codes, printed, strict=True))
        ]
    return found


@pytest.mark.parametrize(("page", "code", "printed"), examples())
def test_the_python_example_prints_what_the_page_shows(page: str, code: str, printed: str) -> None:
    out = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "doc_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOCS / page), "exec"), namespace)
    assert out.getvalue() == printed


@pytest.mark.parametrize("page", PAGES)
def test_the_show_outputs_are_the_shipped_scenarios(page: str) -> None:
    shown = [t for t in blocks(page, "text") if t.startswith("$ ")]
    assert shown, f"{page} shows a shipped scenario"
    for text in shown:
        command, _, output = text.partition("\n")
        name = command.split()[-1]
        assert command == f"$ qmpsim show {name}"
        assert output == show_timeline(load_scenario(resolve(name)))
