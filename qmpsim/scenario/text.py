"""Scenarios back to YAML: a loaded (or drawn) :class:`~qmpsim.scenario.Scenario` as a file.

:func:`scenario_document` gives the document a scenario loads from (defaults left
out, included files inlined); :func:`dump_yaml` writes such a document in the
style of the shipped files.  Loading the text again gives the same scenario.
A Hypothesis counterexample thus becomes a regression scenario file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

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
)
from qmpsim.scenario.vm_section import vm_document
from qmpsim.vm.description import VmConfig


class ScenarioFields(Protocol):
    """What the writer reads of a :class:`~qmpsim.scenario.model.Scenario` (which calls
    it from ``Scenario.to_yaml``, so the writer names the fields, not the class)."""

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def vm(self) -> VmConfig: ...
    @property
    def seed(self) -> int: ...
    @property
    def clock(self) -> str: ...
    @property
    def steps(self) -> tuple[Step, ...]: ...
    @property
    def actions(self) -> Mapping[str, tuple[Step, ...]]: ...


__all__ = [
    "ScenarioFields",
    "dump_yaml",
    "scenario_document",
    "step_document",
    "to_yaml",
    "vm_document",
]


def to_yaml(scenario: ScenarioFields, *, header: Iterable[str] = ()) -> str:
    """The scenario as YAML text that loads back to the same scenario."""
    return dump_yaml(scenario_document(scenario), header=header)


def scenario_document(scenario: ScenarioFields) -> dict[str, Any]:
    """The YAML document (as plain data) that loads to ``scenario``."""
    doc: dict[str, Any] = {"name": scenario.name}
    if scenario.description:
        doc["description"] = scenario.description
    doc["profile"] = scenario.profile
    if scenario.clock != "first-client":
        doc["clock"] = scenario.clock
    vm = vm_document(scenario.vm, scenario.seed)
    if vm:
        doc["vm"] = vm
    doc["steps"] = steps_document(scenario.steps)
    if scenario.actions:
        doc["actions"] = {name: steps_document(block) for name, block in scenario.actions.items()}
    return doc


def steps_document(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """Steps as YAML data; included files are inlined (they run in place anyway)."""
    out: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, IncludeStep):
            out += steps_document(step.steps)
        else:
            out.append(step_document(step))
    return out


def step_document(step: Step) -> dict[str, Any]:
    """One step as YAML data, its head key first."""
    if isinstance(step, CauseStep):
        return {"cause": step.kind, **_changed(step.cause)}
    if isinstance(step, EmitStep):
        out: dict[str, Any] = {"emit": step.event}
        if step.data is not None:
            out["data"] = _plain(step.data)
        if step.fake:
            out["fake"] = True
        return out
    if isinstance(step, WaitStep):
        return {"wait": _seconds(step.seconds)}
    if isinstance(step, UntilStep):
        out = {"until": step.command}
        if step.arguments is not None:
            out["arguments"] = _plain(step.arguments)
        if step.timeout is not None:
            out["timeout"] = _seconds(step.timeout)
        return out
    if isinstance(step, ReplyStep):
        out = {"reply": step.command}
        if step.error_class is not None:
            out["error"] = {"class": step.error_class, "desc": step.error_desc or ""}
        else:
            out["return"] = _plain(step.result)
        if step.times is not None:
            out["times"] = _times(step.times)
        return out
    if isinstance(step, OnStep):
        out = {"on": step.command}
        if step.arguments is not None:
            out["arguments"] = _plain(step.arguments)
        if step.times is not None:
            out["times"] = _times(step.times)
        out["steps"] = steps_document(step.steps)
        return out
    if isinstance(step, RepeatStep):
        count: Any = "forever" if step.count is None else step.count
        return {"repeat": count, "steps": steps_document(step.steps)}
    if isinstance(step, IncludeStep):
        raise ValueError("step_document: an include step is inlined by steps_document")
    return _fault(step)


def _fault(step: FaultStep) -> dict[str, Any]:
    out: dict[str, Any] = {"fault": step.kind}
    if step.kind == "garbage" and step.text is not None:
        out["text"] = step.text
    elif step.kind == "event-before-greeting" and step.text is not None:
        out["event"] = step.text
    elif step.kind == "split" and step.chunk != 1:
        out["chunk"] = step.chunk
    elif step.kind == "delayed-reply":
        out["command"] = step.command
        out["delay"] = _seconds(step.delay)
    return out


def _changed(value: Any, *, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of a dataclass that differ from their defaults, in field order."""
    out: dict[str, Any] = {}
    for spec in dataclasses.fields(value):
        if spec.name in skip or spec.name == "where":
            continue
        current = getattr(value, spec.name)
        if spec.default is not dataclasses.MISSING and current == spec.default:
            continue
        out[spec.name] = _plain(current)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _seconds(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else round(seconds, 6)


def _times(times: int) -> int | str:
    return "once" if times == 1 else times


def dump_yaml(document: Mapping[str, Any], *, header: Iterable[str] = ()) -> str:
    """``document`` as block-style YAML (leaf collections inline), after ``# header`` lines."""
    import yaml

    text = yaml.safe_dump(
        dict(document),
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return comments + text
