"""An ``emit`` step: the event the profile must know, and its data checked against the
event's schema by the profile's one walker (:func:`qmpsim.qmp.schema.problems`), its
first problem reported where it is in the YAML."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from qmpsim.errors import suggest
from qmpsim.qmp.profiles import Enum, Object, ProfileSpec, Type
from qmpsim.qmp.schema import member_names, problems, type_at, value_at
from qmpsim.scenario.nodes import NodeReader, Raw, describe
from qmpsim.scenario.steps import EmitStep, Where

if TYPE_CHECKING:
    import yaml

__all__ = ["check_data", "emit_step"]

# schema.Problem's `expected` word -> how the scenario language says it
_WANT = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing (null)",
    "object": "a mapping",
    "array": "a list",
}


def emit_step(
    reader: NodeReader,
    profile: ProfileSpec,
    event: str,
    raw: Raw,
    event_node: yaml.Node,
    path: str,
    where: Where,
) -> EmitStep:
    spec = profile.events.get(event) if profile.events else None
    if profile.events and spec is None:
        names = sorted(profile.events)
        raise reader.error(
            event_node,
            f"{path}.emit",
            f"unknown event {event!r}{suggest(event, names)} in profile {profile.name}",
        )
    fake = bool(raw.get("fake", (False,))[0])
    data_node = raw["data"][1] if "data" in raw else None
    if spec is not None:
        if spec.data is None and (data_node is not None or fake):
            node = data_node if data_node is not None else raw["fake"][1]
            raise reader.error(node, f"{path}.data", f"{event} carries no data")
        if spec.data is not None and data_node is not None:
            check_data(reader, data_node, f"{path}.data", spec.data, partial=fake)
        elif spec.data is not None and not fake and any(not f.optional for f in spec.data.fields):
            raise reader.error(
                event_node, path, f"{event} needs `data` (or `fake: true` to fill it)"
            )
    data = raw["data"][0] if data_node is not None else None
    return EmitStep(event, data, fake, where)


def check_data(reader: NodeReader, node: yaml.Node, path: str, type_: Type, partial: bool) -> None:
    """Check event data against its schema with the profile's one walker
    (:func:`qmpsim.qmp.schema.problems`), reporting its first problem where it is."""
    import yaml

    value = reader.constructor.construct_object(node, deep=True)
    found = list(itertools.islice(problems(type_, value, partial=partial), 64))
    if not found:
        return
    first = found[0]
    nodes = {p.lstrip("."): n for n, p in reader.walk(node, "")}
    parent = first.path.rpartition(".")[0] if first.kind in ("missing", "unexpected") else ""
    at = nodes.get(first.path if first.kind != "missing" else parent, node)
    where = path + ("." if first.path and not first.path.startswith("[") else "") + first.path
    owner = type_at(type_, parent, value)
    label = f"`{path}.{parent}`" if parent else f"`{path}`"
    if isinstance(owner, Object) and not owner.name.isdigit():
        label = owner.name
    if first.kind == "missing":
        same = [
            p.name for p in found if p.kind == "missing" and p.path.rpartition(".")[0] == parent
        ]
        where = path + (f".{parent}" if parent else "")
        raise reader.error(at, where, f"{label} is missing {', '.join(str(n) for n in same)}")
    if first.kind == "unexpected":
        names = member_names(owner, value_at(value, parent))
        key = first.name or ""
        mapping = nodes.get(parent)
        if isinstance(mapping, yaml.MappingNode):  # point at the key, not its value
            at = next((k for k, _ in mapping.value if k.value == key), at)
        raise reader.error(
            at,
            where,
            f"{label} has no member {key!r}{suggest(key, names)}; expected: {', '.join(names)}",
        )
    if first.kind == "value":
        enum = type_at(type_, first.path, value)
        values = enum.values if isinstance(enum, Enum) else ()
        raise reader.error(
            at,
            where,
            f"unknown value {first.value!r}{suggest(str(first.value), values)};"
            f" expected one of: {', '.join(values)}",
        )
    want = _WANT.get(first.expected, first.expected)
    raise reader.error(at, where, f"expected {want}, found {describe(at)}")
