"""docs/pytest.md: every Python example runs; the failing ones fail as the page shows.

A ``python`` block followed by ``text`` blocks is expected to fail, with each
text (paths, addresses and timings aside) in its output; the others must pass.
The cassette example (``replay=``) records with the page's own ``pytest`` command
against the real QEMU, then replays with no QEMU at all.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from qemu_harness import require_qemu

# Shared with pytester's inline runs rather than imported afresh by each of them.
from qmpsim.cli import main

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


EXAMPLES = [(code, texts) for code, texts in blocks() if "replay=" not in code]
(CASSETTE_EXAMPLE,) = [code for code, _ in blocks() if "replay=" in code]


def test_the_page_has_its_examples() -> None:
    assert len(EXAMPLES) == 6
    assert sum(1 for _, texts in EXAMPLES if texts) == 2


def record_command() -> list[str]:
    """The options of the page's recording ``pytest`` command."""
    found = re.findall(r"^```sh\n(pytest --qmpsim.*?)\n```", DOC.read_text(), re.M | re.S)
    assert len(found) == 1
    return shlex.split(found[0])[1:]


@pytest.mark.qemu
def test_the_cassette_example_records_then_replays(pytester: pytest.Pytester) -> None:
    require_qemu()
    pytester.makepyfile(test_agent=CASSETTE_EXAMPLE)
    cassette = pytester.path / "cassettes" / "pause-resume.jsonl"
    missing = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    missing.assert_outcomes(errors=1)
    missing.stdout.fnmatch_lines(["*no cassette at *pause-resume.jsonl (record mode none)*"])

    recorded = pytester.runpytest_subprocess("-p", "no:cacheprovider", *record_command())
    recorded.assert_outcomes(passed=1)
    assert cassette.exists()
    assert main(["check", str(cassette)]) == 0
    saved = cassette.read_bytes()

    replayed = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # no QEMU now
    replayed.assert_outcomes(passed=1)
    again = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", *record_command()
    )  # once: it exists
    again.assert_outcomes(passed=1)
    assert cassette.read_bytes() == saved


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
