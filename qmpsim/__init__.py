"""qmpsim: a QEMU event simulator and QMP test double.

Importing the package is cheap: names are resolved lazily from their modules so
that ``import qmpsim.qmp.wire`` never pulls in trio, Faker or Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CatalogError, QmpSimError, ScenarioError

if TYPE_CHECKING:
    # What type checkers see: the names below, as their modules define them.  At
    # run time each is imported on first use by __getattr__, from the module that
    # _LAZY names; tests/test_package.py checks that the two lists agree.
    from .fakedata import FakeData
    from .qmp.profiles import DEFAULT_PROFILE, PROFILES, get_profile
    from .qmp.protocol import Request, ServerConnection
    from .qmp.transcript import Transcript
    from .runtime.background import BackgroundSimulator
    from .runtime.server import Simulator
    from .scenario.loader import load_scenario, loads_scenario
    from .scenario.model import Scenario
    from .testing.conformance import Violation, check
    from .vm.description import VmConfig
    from .vm.machine import (
        CommandError,
        DeviceEjected,
        DiskConfig,
        DiskError,
        DiskRepaired,
        Event,
        GuestConfig,
        GuestCrashLoaded,
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
        VncConfig,
        VncConnect,
        VncDisconnect,
        VncInitialize,
        WatchdogExpired,
    )

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # the VM model and its causes
    "Machine": "qmpsim.vm.machine",
    "MachineError": "qmpsim.vm.machine",
    "ManualClock": "qmpsim.vm.machine",
    "VmConfig": "qmpsim.vm.description",
    "DiskConfig": "qmpsim.vm.machine",
    "VncConfig": "qmpsim.vm.machine",
    "SpiceConfig": "qmpsim.vm.machine",
    "Event": "qmpsim.vm.machine",
    "Outcome": "qmpsim.vm.machine",
    "CommandError": "qmpsim.vm.machine",
    "DiskError": "qmpsim.vm.machine",
    "DiskRepaired": "qmpsim.vm.machine",
    "WatchdogExpired": "qmpsim.vm.machine",
    "RtcChange": "qmpsim.vm.machine",
    "GuestShutdown": "qmpsim.vm.machine",
    "GuestConfig": "qmpsim.vm.machine",
    "DeviceEjected": "qmpsim.vm.machine",
    "UnplugRefused": "qmpsim.vm.machine",
    "GuestPowerdown": "qmpsim.vm.machine",
    "HostSignal": "qmpsim.vm.machine",
    "GuestReset": "qmpsim.vm.machine",
    "GuestCrashLoaded": "qmpsim.vm.machine",
    "GuestPanic": "qmpsim.vm.machine",
    "VncConnect": "qmpsim.vm.machine",
    "VncInitialize": "qmpsim.vm.machine",
    "VncDisconnect": "qmpsim.vm.machine",
    "SpiceConnect": "qmpsim.vm.machine",
    "SpiceInitialize": "qmpsim.vm.machine",
    "SpiceDisconnect": "qmpsim.vm.machine",
    "FakeData": "qmpsim.fakedata",
    # profiles
    "get_profile": "qmpsim.qmp.profiles",
    "PROFILES": "qmpsim.qmp.profiles",
    "DEFAULT_PROFILE": "qmpsim.qmp.profiles",
    # the wire and one connection
    "ServerConnection": "qmpsim.qmp.protocol",
    "Request": "qmpsim.qmp.protocol",
    # serving
    "Simulator": "qmpsim.runtime.server",
    "BackgroundSimulator": "qmpsim.runtime.background",
    "Transcript": "qmpsim.qmp.transcript",
    # scenarios
    "Scenario": "qmpsim.scenario.model",
    "load_scenario": "qmpsim.scenario.loader",
    "loads_scenario": "qmpsim.scenario.loader",
    # conformance
    "check": "qmpsim.testing.conformance",
    "Violation": "qmpsim.testing.conformance",
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
    "GuestCrashLoaded",
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
