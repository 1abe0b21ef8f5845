"""The published JSON Schema accepts what the loader accepts, and rejects typical mistakes.

The schema is checked by a real JSON Schema implementation (``jsonschema``, a test
dependency), which also checks that the schema itself is valid for its dialect.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from qmpsim.scenario.json_schema import scenario_schema
from qmpsim.scenario.library import shipped_scenarios
from qmpsim.vm import guest
from qmpsim.vm.block_errors import DISK_POLICIES, READ_POLICIES
from qmpsim.vm.watchdog import WATCHDOG_ACTIONS

SCHEMA = scenario_schema()
DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)


def valid(value: Any) -> bool:
    return bool(VALIDATOR.is_valid(value))


def test_the_schema_is_valid_for_its_dialect() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.validators.validator_for(SCHEMA).check_schema(SCHEMA)


def test_the_closed_sets_are_the_vm_models() -> None:
    vm = SCHEMA["properties"]["vm"]["properties"]
    disk = vm["disks"]["items"]["properties"]
    assert disk["on_read_error"]["enum"] == list(READ_POLICIES)
    assert sorted(disk["on_write_error"]["enum"]) == sorted(DISK_POLICIES)
    assert vm["watchdog"]["enum"] == list(WATCHDOG_ACTIONS)
    watchdog = next(
        s
        for s in SCHEMA["$defs"]["step"]["oneOf"]
        if s["properties"].get("cause", {}).get("const") == "watchdog"
    )
    assert watchdog["properties"]["action"]["enum"] == list(WATCHDOG_ACTIONS)
    policies = vm["guest"]["properties"]
    assert policies["powerdown"]["enum"] == list(guest.POWERDOWN_POLICIES)
    assert policies["unplug"]["enum"] == list(guest.UNPLUG_POLICIES)
    assert policies["tray"]["enum"] == list(guest.TRAY_POLICIES)
    assert policies["balloon"]["enum"] == list(guest.BALLOON_POLICIES)


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
    assert valid(data(text))


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
    assert not valid(data(text))
