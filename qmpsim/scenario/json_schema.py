"""The JSON Schema of scenario files, generated from the grammar's table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qmpsim.scenario.grammar import (
    _FAULTS,
    _HEADS,
    _STEP_KEYS,
    _TOP,
)
from qmpsim.scenario.grammar_causes import _CAUSES
from qmpsim.scenario.grammar_kinds import (
    _Count,
    _Duration,
    _Json,
    _Key,
    _Kind,
    _List,
    _Obj,
    _Scalar,
    _Size,
    _Steps,
)
from qmpsim.scenario.nodes import DURATION, SIZE

if TYPE_CHECKING:
    pass


# --- JSON Schema ----------------------------------------------------------------------


def _schema(kind: _Kind, doc: str = "") -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(kind, _Scalar):
        json_type = {"str": "string", "int": "integer", "number": "number", "bool": "boolean"}
        out = {"type": json_type[kind.type]}
        if kind.enum:
            out["enum"] = list(kind.enum)
        if kind.minimum is not None:
            out["minimum"] = kind.minimum
        if kind.pattern is not None:
            out["pattern"] = kind.pattern
    elif isinstance(kind, _Duration):
        out = {"$ref": "#/$defs/duration"}
    elif isinstance(kind, _Size):
        out = {"$ref": "#/$defs/size"}
    elif isinstance(kind, _Json):
        out = {"type": "object"} if kind.object_only else {}
    elif isinstance(kind, _Count):
        out = {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"enum": ["once", kind.word]},
            ]
        }
    elif isinstance(kind, _Obj):
        out = _object_schema(kind.keys)
    elif isinstance(kind, _List):
        out = {"type": "array", "items": _schema(kind.item)}
    elif isinstance(kind, _Steps):
        out = {"$ref": "#/$defs/steps"}
    else:
        out = {"type": "object", "additionalProperties": {"$ref": "#/$defs/steps"}}
    if doc:
        out["description"] = doc
    return out


def _object_schema(keys: Sequence[_Key], head: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {k.name: _schema(k.kind, k.doc) for k in keys}
    if head:
        props.update(head)
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    required = [*(head or {}), *(k.name for k in keys if k.required)]
    if required:
        out["required"] = required
    return out


def scenario_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the scenario format, from the loader's own grammar."""
    variants: list[dict[str, Any]] = []
    for kind, (keys, _, doc) in _CAUSES.items():
        variants.append(_object_schema(keys, {"cause": {"const": kind, "description": doc}}))
    for kind, (fkeys, doc) in _FAULTS.items():
        variants.append(_object_schema(fkeys, {"fault": {"const": kind, "description": doc}}))
    for head, keys in _STEP_KEYS.items():
        head_kind, doc = _HEADS[head]
        variants.append(_object_schema(keys, {head: _schema(head_kind, doc)}))
    top = _schema(_TOP)
    top.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://qmpsim.invalid/scenario.schema.json",
            "title": "qmpsim scenario",
            "$defs": {
                "duration": {
                    "description": "Seconds, or a string such as 500ms, 2s, 1.5m, 1h.",
                    "anyOf": [
                        {"type": "number", "minimum": 0},
                        {"type": "string", "pattern": DURATION.pattern},
                    ],
                },
                "size": {
                    "description": "Bytes, or a string such as 512K, 64M, 16G (powers of 1024).",
                    "anyOf": [
                        {"type": "integer", "minimum": 0},
                        {"type": "string", "pattern": SIZE.pattern},
                    ],
                },
                "step": {"oneOf": variants},
                "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
            },
        }
    )
    return top
