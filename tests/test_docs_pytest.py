"""docs/pytest.md: every Python example runs; the failing ones fail as the page shows.

A ``python`` block followed by ``text`` blocks is expected to fail, with each
text (paths, addresses and timings aside) in its output; the others must pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# Shared with pytester's inline runs rather than imported afresh by each of them.
import qmpsim.conformance
import qmpsim.engine  # noqa: F401

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "pytest.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, list[str]]]:
    """(python code, the text blocks that follow it: its documented output)."""
    found = [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text())]
    out: list[tuple[str, list[str]]] = []
    for lang, body in found:
        if lang == "python":
            out.append((body, []))
        elif lang == "text" and out:
            out[-1][1].append(body)
    return out


def patterns(text: str) -> list[str]:
    """The documented output as fnmatch patterns: what varies between runs is a wildcard."""
    out = []
    for line in text.strip().splitlines():
        line = re.sub(r"^_+ (\w+) _+$", r"*_ \1 _*", line)
        line = re.sub(r"\((scenarios/)", r"(*\1", line)
        line = re.sub(r"\+\d+\.\d+s", "+*s", line)
        line = line.replace("0x...", "0x*").replace("[", "[[]")
        out.append(line)
    return out


EXAMPLES = blocks()


def test_the_page_has_its_examples() -> None:
    assert len(EXAMPLES) == 5
    assert sum(1 for _, texts in EXAMPLES if texts) == 2


@pytest.mark.parametrize(
    ("code", "expected"), EXAMPLES, ids=[f"example{i + 1}" for i in range(len(EXAMPLES))]
)
def test_example(pytester: pytest.Pytester, code: str, expected: list[str]) -> None:
    pytester.makepyfile(test_example=code)
    result = pytester.runpytest("-p", "no:cacheprovider")
    if not expected:
        outcomes = result.parseoutcomes()
        assert outcomes.get("passed", 0) >= 1, result.stdout.str()
        result.assert_outcomes(passed=outcomes["passed"])
        return
    result.assert_outcomes(failed=1)
    for text in expected:
        result.stdout.fnmatch_lines(patterns(text), consecutive=True)
