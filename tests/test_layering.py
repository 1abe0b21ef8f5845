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
    "qmp.wire": set(),
    "qmp.schema": {"qmp.wire", "errors"},
    "qmp.profiles": {"qmp.schema", "errors"},
    "qmp.protocol": {"qmp.wire", "qmp.profiles", "qmp.schema", "errors"},
    "fakedata": {"errors"},
    "vm.values": {"errors"},
    "vm.replies": {"qmp.profiles", "qmp.schema", "qmp.wire"},
    "vm.component": {"vm.values", "qmp.profiles"},
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
    "vm.machine": {
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
        "qmp.profiles",
        "errors",
    },
    "qmp.transcript": {"qmp.wire", "errors"},
    "testing.conformance": {"qmp.profiles", "qmp.wire", "qmp.transcript", "errors"},
    # scenario_text only inside Scenario.to_yaml(): the writer lives beside the loader.
    "scenario.loader": {
        "vm.machine",
        "qmp.profiles",
        "qmp.schema",
        "fakedata",
        "scenario.text",
        "errors",
    },
    "runtime.server": {
        "qmp.protocol",
        "vm.machine",
        "scenario.loader",
        "qmp.transcript",
        "qmp.profiles",
        "qmp.wire",
        "errors",
    },
    "runtime.engine": {
        "scenario.text",
        "scenario.loader",
        "runtime.server",
        "runtime.control",
        "qmp.protocol",
        "vm.machine",
        "qmp.profiles",
        "fakedata",
        "qmp.transcript",
        "qmp.wire",
        "errors",
    },
    "runtime.control": {
        "runtime.engine",
        "runtime.server",
        "scenario.loader",
        "vm.machine",
        "qmp.protocol",
        "qmp.profiles",
        "qmp.transcript",
        "qmp.wire",
        "errors",
    },
    "runtime.fleet": {
        "logs",
        "runtime.server",
        "runtime.engine",
        "runtime.control",
        "scenario.loader",
        "vm.machine",
        "qmp.profiles",
        "fakedata",
        "qmp.transcript",
        "qmp.wire",
        "errors",
    },
    "qmp.cassette": {"qmp.profiles", "qmp.transcript", "qmp.wire", "errors"},
    "runtime.replay": {
        "qmp.cassette",
        "runtime.server",
        "vm.machine",
        "qmp.protocol",
        "qmp.transcript",
        "qmp.wire",
        "errors",
    },
    "runtime.record": {"runtime.server", "qmp.cassette", "qmp.transcript", "errors"},
    "logs": {"qmp.transcript"},
    "runtime.vcr": {
        "qmp.cassette",
        "runtime.record",
        "runtime.replay",
        "runtime.server",
        "qmp.transcript",
        "qmp.wire",
        "errors",
    },
    "cli.record": {
        "cli.app",
        "logs",
        "qmp.cassette",
        "runtime.record",
        "runtime.replay",
        "scenario.from_recording",
        "runtime.server",
        "qmp.transcript",
        "errors",
    },
    "scenario.text": {"scenario.loader", "errors"},
    "scenario.from_recording": {
        "qmp.cassette",
        "scenario.text",
        "scenario.loader",
        "vm.machine",
        "qmp.profiles",
        "errors",
    },
    "testing.walk": {"vm.machine", "qmp.profiles", "scenario.loader", "errors"},
    "testing.strategies": {"testing.walk", "vm.machine", "qmp.profiles", "errors"},
    "testing.pytest_plugin": {
        "logs",
        "runtime.vcr",
        "qmp.cassette",
        "runtime.server",
        "runtime.engine",
        "scenario.loader",
        "qmp.transcript",
        "vm.machine",
        "qmp.profiles",
        "errors",
    },
    # the drop-in QEMU, a package: its modules import each other and these
    "qemu": {
        "runtime.server",
        "runtime.engine",
        "runtime.control",
        "scenario.loader",
        "vm.machine",
        "qmp.profiles",
        "qmp.transcript",
        "qmp.wire",
        "errors",
    },
    "cli.dropin": {"cli.app", "qemu"},
}
# the command line's registry and exit policy may import everything (its subcommands
# register themselves when it has been imported)
ALLOWED["cli.app"] = set(ALLOWED)

# Third-party modules a core module must not load when imported.
HEAVY = ("trio", "pytest", "hypothesis", "faker")
LIGHT_MODULES = (
    "vm.component",
    "vm.devices",
    "qmp.wire",
    "qmp.schema",
    "qmp.profiles",
    "vm.replies",
    "qmp.protocol",
    "vm.machine",
    "qmp.transcript",
    "testing.conformance",
    "qmp.cassette",
    # `qemu-system-x86_64 -version` and a command line QEMU refuses answer without trio
    "qemu.main",
    "testing.walk",
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
            if target[0] != "qmpsim":
                continue
            # from qmpsim.cli import dropin: a name that is a module counts as that module
            # (from qmpsim import __version__: the package itself, which is no layer)
            for alias in node.names:
                name = [*target[1:], alias.name]
                if PACKAGE.joinpath(*name).with_suffix(".py").exists():
                    found.add(".".join(name))
                elif len(target) > 1:
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
        if p.stem not in ("__init__", "__main__")
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
