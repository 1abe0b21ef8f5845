"""The scenario model: what a loaded scenario is: the VM it runs on (the one VM
description, :class:`~qmpsim.vm.description.VmConfig`), its timeline's steps
(:mod:`qmpsim.scenario.steps`) and :class:`Scenario`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from qmpsim.scenario.steps import (
    CauseStep,
    EmitStep,
    FaultStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Step,
    UntilStep,
    WaitStep,
    Where,
)
from qmpsim.scenario.text import to_yaml
from qmpsim.vm.description import VmConfig

__all__ = [
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
    "VmConfig",
    "WaitStep",
    "Where",
]

ClockMode = Literal["first-client", "startup"]


@dataclass(frozen=True)
class Scenario:
    """A loaded, validated scenario.

    ``vm`` is the VM it runs on; ``seed`` (the file's ``vm.seed``) seeds every random
    or fake value of a run.
    """

    name: str
    description: str
    profile: str
    vm: VmConfig
    clock: ClockMode
    steps: tuple[Step, ...]
    actions: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
    source: str | None = None
    seed: int = 0

    def to_yaml(self) -> str:
        """The scenario as a YAML file that loads back to it (see :mod:`qmpsim.scenario.text`)."""
        return to_yaml(self)
