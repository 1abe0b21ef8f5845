"""qmpsim: a QEMU event simulator and QMP test double.

Importing the package is cheap: names are resolved lazily from their modules so
that ``import qmpsim.wire`` never pulls in trio, Faker or Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CatalogError, QmpSimError, ScenarioError

if TYPE_CHECKING:
    # What type checkers see: the names below, as their modules define them.  At
    # run time each is imported on first use by __getattr__, from the module that
    # _LAZY names; tests/test_package.py checks that the two lists agree.
    from .catalog import DEFAULT_PROFILE, PROFILES, get_profile
    from .conformance import Violation, check
    from .fakedata import FakeData
    from .machine import (
        CommandError,
        DeviceEjected,
        DiskConfig,
        DiskError,
        DiskRepaired,
        Event,
        GuestConfig,
        GuestPanic,
        GuestPowerdown,
        GuestReset,
        GuestShutdown,
        HostSignal,
        Machine,
        MachineError,
        ManualClock,
        Outcome,
        RtcChange,
        SpiceConfig,
        SpiceConnect,
        SpiceDisconnect,
        SpiceInitialize,
        UnplugRefused,
        VmConfig,
        VncConfig,
        VncConnect,
        VncDisconnect,
        VncInitialize,
        WatchdogExpired,
    )
    from .protocol import Request, ServerConnection
    from .scenario import Scenario, load_scenario, loads_scenario
    from .server import BackgroundSimulator, Simulator
    from .transcript import Transcript

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # the VM model and its causes
    "Machine": "qmpsim.machine",
    "MachineError": "qmpsim.machine",
    "ManualClock": "qmpsim.machine",
    "VmConfig": "qmpsim.machine",
    "DiskConfig": "qmpsim.machine",
    "VncConfig": "qmpsim.machine",
    "SpiceConfig": "qmpsim.machine",
    "Event": "qmpsim.machine",
    "Outcome": "qmpsim.machine",
    "CommandError": "qmpsim.machine",
    "DiskError": "qmpsim.machine",
    "DiskRepaired": "qmpsim.machine",
    "WatchdogExpired": "qmpsim.machine",
    "RtcChange": "qmpsim.machine",
    "GuestShutdown": "qmpsim.machine",
    "GuestConfig": "qmpsim.machine",
    "DeviceEjected": "qmpsim.machine",
    "UnplugRefused": "qmpsim.machine",
    "GuestPowerdown": "qmpsim.machine",
    "HostSignal": "qmpsim.machine",
    "GuestReset": "qmpsim.machine",
    "GuestPanic": "qmpsim.machine",
    "VncConnect": "qmpsim.machine",
    "VncInitialize": "qmpsim.machine",
    "VncDisconnect": "qmpsim.machine",
    "SpiceConnect": "qmpsim.machine",
    "SpiceInitialize": "qmpsim.machine",
    "SpiceDisconnect": "qmpsim.machine",
    "FakeData": "qmpsim.fakedata",
    # profiles
    "get_profile": "qmpsim.catalog",
    "PROFILES": "qmpsim.catalog",
    "DEFAULT_PROFILE": "qmpsim.catalog",
    # the wire and one connection
    "ServerConnection": "qmpsim.protocol",
    "Request": "qmpsim.protocol",
    # serving
    "Simulator": "qmpsim.server",
    "BackgroundSimulator": "qmpsim.server",
    "Transcript": "qmpsim.transcript",
    # scenarios
    "Scenario": "qmpsim.scenario",
    "load_scenario": "qmpsim.scenario",
    "loads_scenario": "qmpsim.scenario",
    # conformance
    "check": "qmpsim.conformance",
    "Violation": "qmpsim.conformance",
}

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "BackgroundSimulator",
    "CatalogError",
    "CommandError",
    "DeviceEjected",
    "DiskConfig",
    "DiskError",
    "DiskRepaired",
    "Event",
    "FakeData",
    "GuestConfig",
    "GuestPanic",
    "GuestPowerdown",
    "GuestReset",
    "GuestShutdown",
    "HostSignal",
    "Machine",
    "MachineError",
    "ManualClock",
    "Outcome",
    "QmpSimError",
    "Request",
    "RtcChange",
    "Scenario",
    "ScenarioError",
    "ServerConnection",
    "Simulator",
    "SpiceConfig",
    "SpiceConnect",
    "SpiceDisconnect",
    "SpiceInitialize",
    "Transcript",
    "UnplugRefused",
    "Violation",
    "VmConfig",
    "VncConfig",
    "VncConnect",
    "VncDisconnect",
    "VncInitialize",
    "WatchdogExpired",
    "__version__",
    "check",
    "get_profile",
    "load_scenario",
    "loads_scenario",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (``import qmpsim`` stays cheap)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qmpsim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
