"""The package's front: lazy re-exports, cheap import, the console entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import qmpsim


@pytest.mark.parametrize("name", qmpsim.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(qmpsim, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = qmpsim.nope  # type: ignore[attr-defined]


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = (
        "import sys, qmpsim; "
        "print(','.join(m for m in ('trio', 'faker', 'hypothesis', 'pytest', 'yaml') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qmpsim", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "serve" in result.stdout


def test_the_package_ships_its_type_marker() -> None:
    from importlib.resources import files

    assert files("qmpsim").joinpath("py.typed").is_file()


def test_a_wheel_ships_the_scenarios_and_finds_them(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("qmpsim-*.whl")
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    shipped = sorted(p.name for p in (root / "scenarios").glob("*.yaml"))
    assert sorted(p.name for p in (unpacked / "qmpsim" / "scenarios").glob("*.yaml")) == shipped
    assert (unpacked / "qmpsim" / "py.typed").is_file()
    out = subprocess.run(
        [sys.executable, "-c", "import qmpsim.scenario as s; print(s.SHIPPED_DIR)"],
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out) == unpacked / "qmpsim" / "scenarios"
    profiles = sorted(p.name for p in (root / "qmpsim" / "profiles").iterdir())
    assert sorted(p.name for p in (unpacked / "qmpsim" / "profiles").iterdir()) == profiles
    count = subprocess.run(
        [
            sys.executable,
            "-c",
            "import qmpsim.catalog as c; print(len(c.PROFILES['qemu-10.0'].commands))",
        ],
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert count == "233"
