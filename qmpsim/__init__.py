"""qmpsim: a QEMU event simulator and QMP test double.

Importing the package is cheap: names are resolved lazily from their modules so
that ``import qmpsim.wire`` never pulls in trio, Faker or Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CatalogError, QmpSimError, ScenarioError

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Machine": "qmpsim.machine",
    "VmConfig": "qmpsim.machine",
    "get_profile": "qmpsim.catalog",
    "PROFILES": "qmpsim.catalog",
    "ServerConnection": "qmpsim.protocol",
    "Simulator": "qmpsim.server",
    "Transcript": "qmpsim.transcript",
    "load_scenario": "qmpsim.scenario",
}

__all__ = [
    "PROFILES",
    "CatalogError",
    "Machine",
    "QmpSimError",
    "ScenarioError",
    "ServerConnection",
    "Simulator",
    "Transcript",
    "VmConfig",
    "__version__",
    "get_profile",
    "load_scenario",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qmpsim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
