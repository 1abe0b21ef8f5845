"""Broken arguments of every kind, for every command, on each real QEMU and on qmpsim.

The cases are generated from the introspected schema (``query-qmp-schema``,
which tests/test_diff_queries.py checks byte for byte against each real QEMU):
for each command, a required member left out, an unexpected member, a member of
the wrong JSON type, an enum value the enum lacks, a broken member inside a nested
object, a broken list element, a value no branch of an alternate takes, and two
faults at once (QEMU names the first in schema order, not in input order).

Every case is built to fail QEMU's argument checks, so nothing is executed: the
members a case does not break are left out or given valid values only when they
come before the broken one.  The requests go one by one to one QEMU (``-M none``)
and to qmpsim's drop-in with the same command line; each reply must be the same
bytes, and QEMU's must be an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from qemu_harness import (
    REFEREES,
    Referee,
    ask_each,
    assert_same_bytes,
    dropin_process,
    profile_schema,
    qemu_process,
    require_qemu,
)

pytestmark = pytest.mark.qemu

UNEXPECTED = "qmpsim-unexpected"
NO_SUCH_VALUE = "qmpsim-no-such-value"

# A value of each JSON kind, to give a member a kind its type does not take.
_OF_KIND: dict[str, Any] = {
    "string": "qmpsim",
    "int": 7,
    "number": 0.5,
    "boolean": True,
    "null": None,
    "object": {},
    "array": [],
}


@dataclass(frozen=True)
class Case:
    """One request with broken arguments."""

    id: str
    command: str
    arguments: dict[str, Any]

    def request(self) -> bytes:
        message = {"execute": self.command, "arguments": self.arguments, "id": self.id}
        return json.dumps(message).encode()


class Schema:
    """Just enough of an introspected schema to build valid and broken values."""

    def __init__(self, entities: list[dict[str, Any]]) -> None:
        self.entities = {entity["name"]: entity for entity in entities}
        self.commands = [entity for entity in entities if entity["meta-type"] == "command"]

    def kinds(self, type_name: str) -> set[str]:
        """The JSON kinds a value of this type may have."""
        entity = self.entities[type_name]
        meta = entity["meta-type"]
        if meta == "builtin":
            json_type = entity["json-type"]
            if json_type == "value":
                return set(_OF_KIND)
            return {"int", "number"} if json_type == "number" else {json_type}
        if meta == "enum":
            return {"string"}
        if meta == "alternate":
            return set().union(*(self.kinds(m["type"]) for m in entity["members"]))
        return {meta}  # object, array

    def wrong_kind(self, type_name: str) -> Any:
        """A value of a JSON kind the type does not take (``None`` if it takes all)."""
        for kind in ("boolean", "string", "array", "int", "object", "null"):
            if kind not in self.kinds(type_name):
                return _OF_KIND[kind]
        return None

    def valid(self, type_name: str, depth: int = 0) -> Any:
        """A small value the type takes, with required members only."""
        entity = self.entities[type_name]
        meta = entity["meta-type"]
        if meta == "builtin":
            json_type = entity["json-type"]
            return {"value": 0, "boolean": False}.get(json_type, _OF_KIND.get(json_type))
        if meta == "enum":
            return entity["values"][0]
        if meta == "array":
            return []
        if meta == "alternate":
            simple = [
                m for m in entity["members"] if self.entities[m["type"]]["meta-type"] != "object"
            ]
            return self.valid((simple or entity["members"])[0]["type"], depth + 1)
        if depth > 8:
            raise ValueError(f"type {type_name} nests too deep for a small valid value")
        value = {}
        for member in self.required(entity):
            value[member["name"]] = self.valid(member["type"], depth + 1)
        if "tag" in entity:
            tag = value[entity["tag"]]
            for variant in entity["variants"]:
                if variant["case"] == tag:
                    for member in self.required(self.entities[variant["type"]]):
                        value[member["name"]] = self.valid(member["type"], depth + 1)
        return value

    @staticmethod
    def required(entity: dict[str, Any]) -> list[dict[str, Any]]:
        return [m for m in entity.get("members", []) if "default" not in m]

    def members(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.entities[command["arg-type"]].get("members", []))

    def meta(self, member: dict[str, Any]) -> str:
        return str(self.entities[member["type"]]["meta-type"])


def _before(
    schema: Schema, members: list[dict[str, Any]], target: dict[str, Any]
) -> dict[str, Any]:
    """Valid values for the required members QEMU checks before ``target``."""
    value = {}
    for member in members:
        if member is target:
            break
        if "default" not in member:
            value[member["name"]] = schema.valid(member["type"])
    return value


def _broken(
    schema: Schema, members: list[dict[str, Any]], target: dict[str, Any], bad: Any
) -> dict[str, Any]:
    # the broken member first in the input: QEMU goes by the schema's order anyway
    return {target["name"]: bad, **_before(schema, members, target)}


def cases_for(schema: Schema, command: dict[str, Any]) -> Iterator[Case]:
    name = command["name"]
    members = schema.members(command)
    required = [m for m in members if "default" not in m]

    def case(kind: str, arguments: dict[str, Any]) -> Case:
        return Case(f"{name}-{kind}", name, arguments)

    if required:
        yield case("missing", {})
        yield case("missing-and-unexpected", {UNEXPECTED: 1})
        last = required[-1]
        if len(required) > 1:
            # every required member but the last: QEMU names the one left out
            yield case("missing-last", _before(schema, members, last))
    else:
        yield case("unexpected", {UNEXPECTED: 1})
    typed = [m for m in members if schema.wrong_kind(m["type"]) is not None]
    for label, targets in {"first": typed[:1], "last": typed[1:][-1:]}.items():
        for target in targets:
            bad = schema.wrong_kind(target["type"])
            yield case(
                f"wrong-type-{label}-{target['name']}", _broken(schema, members, target, bad)
            )
    if len(typed) > 1:
        first, second = typed[0], typed[1]
        arguments = {
            second["name"]: schema.wrong_kind(second["type"]),
            **_before(schema, members, first),
            first["name"]: schema.wrong_kind(first["type"]),
        }
        yield case(f"two-faults-{first['name']}", arguments)
    by_meta: dict[str, dict[str, Any]] = {}
    for member in members:
        by_meta.setdefault(schema.meta(member), member)
    if (enum := by_meta.get("enum")) is not None:
        yield case(f"enum-{enum['name']}", _broken(schema, members, enum, NO_SUCH_VALUE))
    if (nested := by_meta.get("object")) is not None:
        inner = schema.entities[nested["type"]]
        bad = {} if schema.required(inner) else {UNEXPECTED: 1}
        yield case(f"nested-{nested['name']}", _broken(schema, members, nested, bad))
    if (array := by_meta.get("array")) is not None:
        element = schema.entities[array["type"]]["element-type"]
        if schema.entities[element]["meta-type"] == "object" and schema.required(
            schema.entities[element]
        ):
            bad_element: Any = {}
        else:
            bad_element = schema.wrong_kind(element)
        if bad_element is not None:
            yield case(f"list-{array['name']}", _broken(schema, members, array, [bad_element]))
        yield case(f"not-a-list-{array['name']}", _broken(schema, members, array, "qmpsim"))
    if (alternate := by_meta.get("alternate")) is not None:
        bad = schema.wrong_kind(alternate["type"])
        if bad is not None:
            yield case(f"alternate-{alternate['name']}", _broken(schema, members, alternate, bad))


def all_cases(profile: str) -> list[Case]:
    schema = Schema(profile_schema(profile))
    return [case for command in schema.commands for case in cases_for(schema, command)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    params = []
    for referee in REFEREES:
        cases = all_cases(referee.profile)
        params += [pytest.param(referee, case, id=f"{referee}-{case.id}") for case in cases]
    metafunc.parametrize(("target", "case"), params)


@dataclass
class Replies:
    real: dict[str, bytes]
    simulated: dict[str, bytes]


@cache
def _replies(referee: Referee) -> Replies:
    """Asked once per session, whatever order the tests run in."""
    cases = all_cases(referee.profile)
    found = []
    for process in (qemu_process, dropin_process):
        with process(referee=referee) as path:
            _, answers = ask_each(path, [case.request() for case in cases])
        found.append({case.id: answer for case, answer in zip(cases, answers, strict=True)})
    return Replies(*found)


@pytest.fixture
def replies(target: Referee) -> Replies:
    require_qemu(target)
    return _replies(target)


@pytest.mark.parametrize("referee", REFEREES, ids=str)
def test_case_counts(referee: Referee) -> None:
    cases = all_cases(referee.profile)
    assert len({case.command for case in cases}) >= 60
    assert len({case.id for case in cases}) == len(cases)


# Where qmpsim is known to answer otherwise, and why; the test still compares
# exactly, and reports such a case as an expected failure only while it differs.
KNOWN_GAPS: tuple[tuple[Callable[[Case, bytes], bool], str], ...] = (
    (
        lambda case, real: b"expects uint64" in real,
        "QEMU checks a uint64 member with its own text (Parameter 'x' expects uint64); "
        "introspection calls every integer type int, so the profile cannot tell them apart",
    ),
    (
        lambda case, real: case.command == "device_add",
        "device_add takes any property (gen: false): QEMU turns its arguments into "
        "options before it checks them, with texts of its own",
    ),
)


def test_broken_arguments_answer_as_qemu(replies: Replies, case: Case) -> None:
    real = replies.real[case.id]
    assert real.startswith(b'{"id": ') and b'"error": ' in real, f"QEMU ran {case.request()!r}"
    simulated = replies.simulated[case.id]
    if simulated != real:
        for applies, why in KNOWN_GAPS:
            if applies(case, real):
                pytest.xfail(why)
    assert_same_bytes(simulated, real)
