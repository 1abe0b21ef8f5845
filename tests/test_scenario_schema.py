"""The published JSON Schema accepts what the loader accepts, and rejects typical mistakes.

No JSON Schema library is a dependency, so a small validator for the keywords the
schema uses (type, enum, const, pattern, minimum, properties, required,
additionalProperties, items, oneOf, anyOf, $ref) is enough here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from qmpsim.scenario.loader import scenario_schema, shipped_scenarios

SCHEMA = scenario_schema()
DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
}


def valid(value: Any, schema: dict[str, Any]) -> bool:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return valid(value, SCHEMA["$defs"][name])
    if "type" in schema:
        if not isinstance(value, TYPES[schema["type"]]):
            return False
        if isinstance(value, bool) and schema["type"] in ("integer", "number"):
            return False
    checks = [
        "enum" not in schema or value in schema["enum"],
        "const" not in schema or value == schema["const"],
        "pattern" not in schema or re.search(schema["pattern"], value) is not None,
        "minimum" not in schema or value >= schema["minimum"],
        "oneOf" not in schema or sum(valid(value, s) for s in schema["oneOf"]) == 1,
        "anyOf" not in schema or any(valid(value, s) for s in schema["anyOf"]),
        "items" not in schema or all(valid(v, schema["items"]) for v in value),
    ]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        checks += [
            all(k in value for k in schema.get("required", [])),
            all(valid(v, props[k]) for k, v in value.items() if k in props),
            extra is not False or all(k in props for k in value),
            not isinstance(extra, dict)
            or all(valid(v, extra) for k, v in value.items() if k not in props),
        ]
    return all(checks)


class _Yaml12Loader(yaml.SafeLoader):
    """Like an editor's YAML 1.2: only true/false are booleans (`on:` stays a key)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf")
)


def data(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass: no objects


DOC_BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
GOOD = [p.read_text() for p in shipped_scenarios()] + DOC_BLOCKS


@pytest.mark.parametrize("text", GOOD, ids=[f"good{i}" for i in range(len(GOOD))])
def test_what_the_loader_accepts_the_schema_accepts(text: str) -> None:
    assert valid(data(text), SCHEMA)


BAD = [
    "stepz: []",
    "steps: [{wiat: 1s}]",
    "steps: [{wait: soon}]",
    "steps: [{wait: 1, emit: STOP}]",
    "steps: [{cause: disk-error}]",
    "steps: [{cause: disk-error, device: vda, devcie: vda}]",
    "steps: [{cause: guest-rest}]",
    "steps: [{repeat: 0, steps: []}]",
    "steps: [{on: cont}]",
    "steps: [{fault: delayed-reply, command: cont}]",
    "vm: {watchdog: explode}",
    "vm: {no_shutdown: maybe}",
    "vm: {disks: [{on_read_error: stop}]}",
    "clock: later",
]


@pytest.mark.parametrize("text", BAD)
def test_the_schema_rejects_typical_mistakes(text: str) -> None:
    assert not valid(data(text), SCHEMA)
