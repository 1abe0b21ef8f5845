"""The Makefile: ``make run`` installs what running needs, ``make test`` the test tools too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def planned(target: str, tmp_path: Path) -> list[str]:
    """The commands ``make TARGET`` would run on a machine without a venv (make -n)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", target],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


def test_make_run_installs_only_the_runtime(tmp_path: Path) -> None:
    commands = planned("run", tmp_path)
    installs = [c for c in commands if "pip install" in c]
    assert installs and all(c.endswith("pip install -q -e .") for c in installs), installs
    assert commands[-1].endswith("-m qmpsim demo scenarios/tour.yaml")


@pytest.mark.parametrize("target", ["lint", "typecheck"])
def test_the_tools_get_the_test_extra(target: str, tmp_path: Path) -> None:
    installs = [c for c in planned(target, tmp_path) if "pip install" in c]
    assert any(c.endswith("pip install -q -e '.[test]'") for c in installs), installs
