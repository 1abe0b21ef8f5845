"""The package's front: lazy re-exports, cheap import, the console entry points."""

from __future__ import annotations

import subprocess
import sys

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
