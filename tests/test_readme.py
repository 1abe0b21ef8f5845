"""README.md: every example runs as shown.

``python`` blocks that define tests run through pytester and must pass; other
``python`` blocks run as scripts; ``yaml`` blocks load as scenarios; in ``sh``
blocks, the ``qmpsim`` commands that finish on their own (list, show, validate,
schema, generate, check) run from the repository's root and must succeed.
``serve``, ``fleet``, ``demo``, ``record``, ``replay``, ``scenario-from`` and
``make`` lines are exercised by their own tests (tests/test_cli_serve.py,
tests/test_fleet.py, tests/test_record_qemu.py).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qmpsim.scenario.loader import loads_scenario

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)
FINISHING = {"list", "show", "validate", "schema", "generate", "check", "commands"}


def blocks(lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(README.read_text()) if m.group(1) == lang]


def commands() -> list[str]:
    out = []
    for block in blocks("sh"):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            words = shlex.split(line) if line else []
            if len(words) > 1 and words[0] == "qmpsim" and words[1] in FINISHING:
                out.append(line)
    return out


def test_the_readme_has_its_examples() -> None:
    assert len(blocks("python")) >= 3
    assert len(blocks("yaml")) >= 1
    assert {c.split()[1] for c in commands()} >= {"list", "show", "validate", "generate", "check"}


@pytest.mark.parametrize("code", [b for b in blocks("python") if "def test_" in b])
def test_test_examples_pass(pytester: pytest.Pytester, code: str) -> None:
    pytester.makepyfile(test_readme_example=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=code.count("def test_"))


@pytest.mark.parametrize("code", [b for b in blocks("python") if "def test_" not in b])
def test_script_examples_run(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("text", blocks("yaml"))
def test_yaml_examples_load(text: str) -> None:
    scenario = loads_scenario(text, file="README.md")
    assert scenario.steps


@pytest.mark.parametrize("line", commands())
def test_shell_examples_succeed(line: str, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Files the examples write (events.jsonl) go to a scratch copy of the names.
    script = line.replace("events.jsonl", str(tmp_path / "events.jsonl"))
    if "qmpsim check" in script and not (tmp_path / "events.jsonl").exists():
        with (tmp_path / "events.jsonl").open("w") as out:
            subprocess.run(
                ["qmpsim", "generate", "--seed", "7", "--count", "20"],
                stdout=out,
                env=env,
                check=True,
            )
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if ">" in script:
        assert (tmp_path / "events.jsonl").stat().st_size > 0, f"{line!r} wrote nothing"
    else:
        assert result.stdout.strip(), f"{line!r} printed nothing"


def test_the_number_of_shipped_scenarios_is_the_readmes() -> None:
    from qmpsim.scenario.library import shipped_scenarios

    said = re.search(r"(\d+) scenarios ship with qmpsim", README.read_text())
    assert said is not None
    assert int(said.group(1)) == len(shipped_scenarios())
