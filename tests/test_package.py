"""The package's front: lazy re-exports, cheap import, the console entry points."""

from __future__ import annotations

import ast
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
    # every module of every layer's package ships (a package left out of pyproject's list
    # imports in the source tree and fails in a wheel install)
    source = {p.relative_to(root).as_posix() for p in (root / "qmpsim").rglob("*.py")}
    assert source <= {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*.py")}
    out = subprocess.run(
        [sys.executable, "-c", "import qmpsim.scenario.library as s; print(s.SHIPPED_DIR)"],
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
            "import qmpsim.qmp.profiles as c; print(len(c.PROFILES['qemu-10.0'].commands))",
        ],
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert count == "233"


# --- what type checkers see ---------------------------------------------------------------

INIT = Path(qmpsim.__file__)


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the imports under ``if TYPE_CHECKING:`` in qmpsim/__init__.py."""
    tree = ast.parse(INIT.read_text())
    (block,) = (
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    found: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1, ast.unparse(node)
        for alias in node.names:
            found[alias.asname or alias.name] = f"qmpsim.{node.module}"
    return found


def test_the_lazy_table_the_typed_imports_and_all_agree() -> None:
    lazy: dict[str, str] = qmpsim._LAZY  # type: ignore[attr-defined]
    # a name added to _LAZY is added to the TYPE_CHECKING imports too (mypy sees Any otherwise)
    assert _type_checking_imports() == lazy
    eager = {"CatalogError", "QmpSimError", "ScenarioError", "__version__"}
    assert sorted(qmpsim.__all__) == sorted(set(lazy) | eager)
    assert len(qmpsim.__all__) == len(set(qmpsim.__all__))


def test_mypy_sees_the_real_types_of_the_public_names(tmp_path: Path) -> None:
    snippet = tmp_path / "user.py"
    snippet.write_text(
        "from qmpsim import Simulator, Machine, check, load_scenario, PROFILES\n"
        "reveal_type(Simulator)\nreveal_type(Machine)\nreveal_type(check)\n"
        "reveal_type(load_scenario)\nreveal_type(PROFILES)\n"
    )
    # The project's own configuration and cache (warm after `make typecheck`), from the
    # root, where mypy finds the package's source.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", str(snippet)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = result.stdout.splitlines()
    revealed = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed" in line]
    assert len(revealed) == 5, result.stdout + result.stderr
    assert not any(r == '"Any"' for r in revealed), revealed
    simulator, machine, check, load, profiles = revealed
    assert simulator.endswith('-> qmpsim.runtime.server.Simulator"')
    assert machine.endswith('-> qmpsim.vm.machine.Machine"')
    assert "qmpsim.testing.conformance.core.Violation" in check
    assert load.endswith('-> qmpsim.scenario.model.Scenario"')
    assert "qmpsim.qmp.profile_spec.ProfileSpec" in profiles


# --- the flat layout's documented import paths --------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("qmpsim.machine", "qmpsim.vm.machine"),
        ("qmpsim.strategies", "qmpsim.testing.strategies"),
        ("qmpsim.conformance", "qmpsim.testing.conformance"),
        ("qmpsim.walk", "qmpsim.testing.walk"),
        ("qmpsim.transcript", "qmpsim.qmp.transcript"),
    ],
)
def test_a_documented_old_import_path_is_the_moved_module(old: str, new: str) -> None:
    code = (
        f"import importlib, sys; old = importlib.import_module({old!r}); "
        f"print(old is sys.modules[{new!r}], old is sys.modules[{old!r}])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "True True"
