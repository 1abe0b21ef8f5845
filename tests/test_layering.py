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
    "schema": {"wire", "errors"},
    "catalog": {"schema", "errors"},
    "protocol": {"wire", "catalog", "schema", "errors"},
    "fakedata": {"errors"},
    "vm.values": {"errors"},
    "vm.replies": {"catalog", "schema", "wire"},
    "vm.component": {"vm.values", "catalog"},
    "vm.display": {"vm.component", "vm.values"},
    "vm.guest": {"vm.component", "vm.values"},
    "vm.ghash": set(),
    "vm.device_types": set(),
    "vm.backends": {"vm.component", "vm.ghash", "vm.values"},
    "vm.devices": {
        "vm.backends",
        "vm.component",
        "vm.device_types",
        "vm.ghash",
        "vm.guest",
        "vm.values",
    },
    "vm.images": {"vm.values"},
    "vm.nodes": {"vm.images"},
    "vm.block_info": {"vm.images", "vm.nodes"},
    "vm.block": {
        "vm.block_info",
        "vm.component",
        "vm.guest",
        "vm.images",
        "vm.nodes",
        "vm.values",
    },
    "vm.jobs": {"vm.component", "vm.nodes", "vm.values"},
    "vm.job_kinds": {
        "vm.block",
        "vm.component",
        "vm.images",
        "vm.jobs",
        "vm.nodes",
        "vm.values",
    },
    "machine": {
        "vm.backends",
        "vm.block",
        "vm.jobs",
        "vm.job_kinds",
        "vm.component",
        "vm.devices",
        "vm.display",
        "vm.guest",
        "vm.images",
        "vm.values",
        "vm.replies",
        "catalog",
        "errors",
    },
    "transcript": {"wire", "errors"},
    "conformance": {"catalog", "wire", "transcript", "errors"},
    # scenario_text only inside Scenario.to_yaml(): the writer lives beside the loader.
    "scenario": {"machine", "catalog", "schema", "fakedata", "scenario_text", "errors"},
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
    "walk": {"machine", "catalog", "scenario", "errors"},
    "strategies": {"walk", "machine", "catalog", "errors"},
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
    "vm.component",
    "vm.devices",
    "wire",
    "schema",
    "catalog",
    "vm.replies",
    "protocol",
    "machine",
    "transcript",
    "conformance",
    "cassette",
    # `qemu-system-x86_64 -version` and a command line QEMU refuses answer without trio
    "qemu.main",
    "walk",
)


def _qmpsim_imports(module: str) -> set[str]:
    """The qmpsim modules (dotted: ``catalog``, ``vm.values``) that ``module`` imports."""
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    package = ["qmpsim", *module.split(".")[:-1]]
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None:  # from . import a, b: each name is a module
                found.update(".".join([*target, a.name][1:]) for a in node.names)
            elif target[0] == "qmpsim":
                found.add(".".join(target[1:]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qmpsim."):
                    found.add(alias.name.removeprefix("qmpsim."))
    return found


def _on_map(name: str) -> str:
    """The map's entry for a module: itself, else its package's (``qemu.main`` is ``qemu``:
    a package on the map as a whole), else the module a name was imported from."""
    while name not in ALLOWED and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _modules() -> set[str]:
    """Every module of the package, dotted (``machine``, ``vm.guest``, ``qemu.main``)."""
    return {
        ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if p.stem not in ("__init__", "__main__") and p.relative_to(PACKAGE) != Path("cli.py")
    }


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_point_down_the_map(module: str) -> None:
    own = [m for m in _modules() if _on_map(m) == module]
    if not own:
        pytest.skip(f"qmpsim/{module} does not exist")
    imported = {_on_map(name) for m in own for name in _qmpsim_imports(m)}
    unexpected = imported - ALLOWED[module] - {module}
    assert not unexpected, f"qmpsim.{module} imports {sorted(unexpected)}, against the layering"


def test_every_module_is_on_the_map() -> None:
    missing = sorted(m for m in _modules() if _on_map(m) not in ALLOWED)
    assert not missing, f"not on the layering map: {missing}"


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_core_modules_stay_light(module: str) -> None:
    if not (PACKAGE / f"{module.replace('.', '/')}.py").exists():
        pytest.skip(f"qmpsim/{module}.py does not exist")
    code = f"import sys, qmpsim.{module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing qmpsim.{module} loaded {out}"
