"""The import layering of docs/design.md, enforced.

Three checks: every import between qmpsim's layers (at any depth in a module)
points down the package map, no module imports itself through others, and
importing a core module in a fresh interpreter does not pull in the heavy
optional dependencies it has no business with.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qmpsim"

# The package map of the design (imports point downward only): each layer, and the
# layers it may import.  A top-level module (errors, logs, fakedata) is a layer of its
# own; errors is everyone's leaf.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "qmp": {"errors"},
    "fakedata": {"errors"},
    "vm": {"qmp", "fakedata", "errors"},
    "logs": {"qmp"},
    "scenario": {"vm", "qmp", "fakedata", "errors"},
    "runtime": {"scenario", "vm", "qmp", "fakedata", "logs", "errors"},
    "testing": {"runtime", "scenario", "vm", "qmp", "fakedata", "logs", "errors"},
    "qemu": {"runtime", "scenario", "vm", "qmp", "fakedata", "logs", "errors"},
    "cli": {
        "testing",
        "qemu",
        "runtime",
        "scenario",
        "vm",
        "qmp",
        "fakedata",
        "logs",
        "errors",
    },
    # the flat layout's documented import paths: each is the module it moved to
    "machine": {"vm"},
    "strategies": {"testing"},
    "conformance": {"testing"},
    "walk": {"testing"},
    "transcript": {"qmp"},
}

# Import cycles between modules that are still to be cut, each with its reason.
KNOWN_CYCLES: dict[frozenset[str], str] = {}

# Third-party modules a core module must not load when imported.
HEAVY = ("trio", "pytest", "hypothesis", "faker")
LIGHT_MODULES = (
    "vm.component",
    "vm.devices",
    "vm.job_states",
    "qmp.wire",
    "qmp.json_lexer",
    "qmp.json_parser",
    "qmp.json_utf8",
    "qmp.json_writer",
    "qmp.qdict",
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
    # a package: importing it imports every module of it
    "testing.walk",
)


def _path(module: str) -> Path:
    """The file of a dotted module name (a package's is its ``__init__.py``)."""
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _qmpsim_imports(module: str) -> set[str]:
    """The qmpsim modules (dotted: ``qmp.wire``, ``vm.values``) that ``module`` imports,
    at any depth in it (a lazy import inside a function counts too)."""
    path = _path(module)
    package = ["qmpsim", *module.split(".")]
    if path.name != "__init__.py":
        package.pop()
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
                if _path(".".join(name)).exists():
                    found.add(".".join(name))
                elif len(target) > 1:
                    found.add(".".join(target[1:]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qmpsim."):
                    found.add(alias.name.removeprefix("qmpsim."))
    return found


def _modules() -> set[str]:
    """Every module of the package, dotted (``vm.machine``, ``qemu.main``), packages'
    ``__init__`` by the package's name (``scenario``)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__main__" or parts == ("__init__",):
            continue
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _layer(module: str) -> str:
    return module.split(".", 1)[0]


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {n for n in _qmpsim_imports(m) if n in modules and n != m} for m in modules}


def test_every_module_is_in_a_layer() -> None:
    missing = sorted(m for m in _modules() if _layer(m) not in LAYERS)
    assert not missing, f"not on the layering map: {missing}"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_imports_point_down_the_map(layer: str) -> None:
    graph = _graph()
    wrong = sorted(
        f"{m} -> {n}"
        for m, imported in graph.items()
        if _layer(m) == layer
        for n in imported
        if _layer(n) != layer and _layer(n) not in LAYERS[layer]
    )
    assert not wrong, f"qmpsim.{layer} imports against the layering: {wrong}"


def test_the_layers_form_a_dag() -> None:
    # The map itself: no layer may reach itself again through the layers it imports.
    def reach(layer: str, seen: frozenset[str]) -> None:
        for lower in LAYERS[layer]:
            assert lower not in seen, f"the layers cycle: {' -> '.join([*seen, lower])}"
            reach(lower, seen | {lower})

    for layer in LAYERS:
        reach(layer, frozenset({layer}))


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    cycles = [sorted(c) for c in _cycles(_graph()) if c not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_core_modules_stay_light(module: str) -> None:
    if not _path(module).exists():
        pytest.skip(f"{_path(module)} does not exist")
    code = f"import sys, qmpsim.{module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing qmpsim.{module} loaded {out}"
