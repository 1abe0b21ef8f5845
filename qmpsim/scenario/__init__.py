"""The scenario language: YAML files that script what a simulated VM does.

The model (:mod:`~qmpsim.scenario.model`: :class:`Scenario` on the one VM description,
:class:`~qmpsim.vm.description.VmConfig`, and its steps), the grammar
(:mod:`~qmpsim.scenario.grammar`) that the strict loader (:mod:`~qmpsim.scenario.loader`)
and the JSON Schema (:mod:`~qmpsim.scenario.json_schema`) are built from, the dry run
on the real machine (:mod:`~qmpsim.scenario.dryrun`: ``build_machine``, ``show``), the
shipped library (:mod:`~qmpsim.scenario.library`), the writer
(:mod:`~qmpsim.scenario.text`) and scenarios from recordings
(:mod:`~qmpsim.scenario.from_recording`).  The names below are their public ones, so
``qmpsim.scenario.Scenario`` and the like keep working.
"""

from __future__ import annotations

from qmpsim.scenario.dryrun import build_machine, show_timeline
from qmpsim.scenario.json_schema import scenario_schema
from qmpsim.scenario.library import (
    SHIPPED_DIR,
    list_shipped,
    load_named,
    resolve,
    shipped_scenarios,
    unknown_scenario,
    validate_files,
)
from qmpsim.scenario.loader import load_scenario, load_steps, loads_scenario
from qmpsim.scenario.model import (
    CauseStep,
    ClockMode,
    EmitStep,
    FaultStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Scenario,
    Step,
    UntilStep,
    WaitStep,
    Where,
)

__all__ = [
    "SHIPPED_DIR",
    "CauseStep",
    "ClockMode",
    "EmitStep",
    "FaultStep",
    "IncludeStep",
    "OnStep",
    "RepeatStep",
    "ReplyStep",
    "Scenario",
    "Step",
    "UntilStep",
    "WaitStep",
    "Where",
    "build_machine",
    "list_shipped",
    "load_named",
    "load_scenario",
    "load_steps",
    "loads_scenario",
    "resolve",
    "scenario_schema",
    "shipped_scenarios",
    "show_timeline",
    "unknown_scenario",
    "validate_files",
]
