"""The import layering of docs/design.md, enforced.

Two checks: every intra-package import (at any depth in a module) points to a
module the map allows, and importing a core module in a fresh interpreter does
not pull in the heavy optional dependencies it has no business with.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qmpsim"

# module -> the qmpsim modules it may import (errors is everyone's leaf).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "wire": set(),
    "catalog": {"errors"},
    "protocol": {"wire", "catalog", "errors"},
    "fakedata": {"errors"},
    "machine": {"catalog", "errors"},
    "transcript": {"wire", "errors"},
    "conformance": {"catalog", "wire", "transcript", "errors"},
    # scenario_text only inside Scenario.to_yaml(): the writer lives beside the loader.
    "scenario": {"machine", "catalog", "fakedata", "scenario_text", "errors"},
    "server": {"protocol", "machine", "scenario", "transcript", "catalog", "wire", "errors"},
    "engine": {
        "scenario_text",
        "scenario",
        "server",
        "control",
        "protocol",
        "machine",
        "catalog",
        "fakedata",
        "transcript",
        "wire",
        "errors",
    },
    "control": {
        "engine",
        "server",
        "scenario",
        "machine",
        "protocol",
        "catalog",
        "transcript",
        "wire",
        "errors",
    },
    "fleet": {
        "logs",
        "server",
        "engine",
        "control",
        "scenario",
        "machine",
        "catalog",
        "fakedata",
        "transcript",
        "wire",
        "errors",
    },
    "cassette": {"catalog", "transcript", "wire", "errors"},
    "replay": {"cassette", "server", "machine", "protocol", "transcript", "wire", "errors"},
    "record": {"server", "cassette", "transcript", "errors"},
    "logs": {"transcript"},
    "vcr": {"cassette", "record", "replay", "server", "transcript", "wire", "errors"},
    "cli_record": {
        "cli",
        "logs",
        "cassette",
        "record",
        "replay",
        "scenario_from",
        "server",
        "transcript",
        "errors",
    },
    "scenario_text": {"scenario", "errors"},
    "scenario_from": {
        "cassette",
        "scenario_text",
        "scenario",
        "machine",
        "catalog",
        "errors",
    },
    "strategies": {"machine", "catalog", "fakedata", "scenario", "conformance", "errors"},
    "pytest_plugin": {
        "logs",
        "vcr",
        "cassette",
        "server",
        "engine",
        "scenario",
        "transcript",
        "machine",
        "catalog",
        "errors",
    },
    # the drop-in QEMU, a package: its modules import each other and these
    "qemu": {
        "server",
        "engine",
        "control",
        "scenario",
        "machine",
        "catalog",
        "transcript",
        "wire",
        "errors",
    },
    "cli_dropin": {"cli", "qemu"},
}

# Third-party modules a core module must not load when imported.
HEAVY = ("trio", "pytest", "hypothesis", "faker")
LIGHT_MODULES = (
    "wire",
    "catalog",
    "protocol",
    "machine",
    "transcript",
    "conformance",
    "cassette",
    # `qemu-system-x86_64 -version` and a command line QEMU refuses answer without trio
    "qemu.main",
)


def _qmpsim_imports(path: Path, depth: int = 1) -> set[str]:
    """The qmpsim modules ``path`` imports; ``depth`` is how deep in the package it is
    (2 for a module of a subpackage, whose own sibling imports are not counted)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == depth and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == depth:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("qmpsim."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qmpsim."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_down_the_map(module: str) -> None:
    path = PACKAGE / f"{module}.py"
    if (PACKAGE / module).is_dir():
        imported = set().union(*(_qmpsim_imports(p, 2) for p in (PACKAGE / module).glob("*.py")))
    elif path.exists():
        imported = _qmpsim_imports(path)
    else:
        pytest.skip(f"qmpsim/{module}.py does not exist")
    unexpected = imported - ALLOWED[module] - {module}
    assert not unexpected, f"qmpsim.{module} imports {sorted(unexpected)}, against the layering"


def test_every_module_is_on_the_map() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "cli"}
    modules |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert modules <= set(ALLOWED), f"not on the layering map: {sorted(modules - set(ALLOWED))}"


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_core_modules_stay_light(module: str) -> None:
    if not (PACKAGE / f"{module.replace('.', '/')}.py").exists():
        pytest.skip(f"qmpsim/{module}.py does not exist")
    code = f"import sys, qmpsim.{module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing qmpsim.{module} loaded {out}"
