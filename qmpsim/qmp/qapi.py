"""QAPI types: the type model qmpsim's profiles are written in.

A profile's commands, replies and events are typed with the classes below,
either written by hand (the seed profile) or built from a recorded
``query-qmp-schema`` (:func:`types_from_introspection`).  What a value is to
QEMU's visitor (:func:`json_kind`), which variant a union's tag selects
(:meth:`Object.variant`) and which branch of an alternate takes a value
(:meth:`Alternate.branch`) live here, for the walker (:mod:`qmpsim.qmp.schema`)
and everyone who navigates a value by its type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from qmpsim.errors import CatalogError

__all__ = [
    "ANY",
    "BOOL",
    "INT",
    "INT64_MAX",
    "INT64_MIN",
    "NULL",
    "NUMBER",
    "STR",
    "Alternate",
    "Array",
    "Builtin",
    "Enum",
    "Field",
    "Object",
    "Type",
    "json_kind",
    "member_names",
    "types_from_introspection",
]


# --- the types -------------------------------------------------------------------


@dataclass(frozen=True)
class Builtin:
    """A QAPI builtin: ``str``, ``int``, ``number``, ``bool``, ``null`` or ``any``."""

    name: str


@dataclass(frozen=True)
class Enum:
    """A QAPI enum: a closed set of strings."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Array:
    """A JSON array whose every element has type ``of``."""

    of: Type


@dataclass(frozen=True)
class Field:
    """One member of an object; ``optional`` members may be absent."""

    name: str
    type: Type
    optional: bool = False


@dataclass(frozen=True, eq=False)
class Object:
    """A QAPI struct (named members, no others allowed) or a flat union.

    A union's ``tag`` is one of its ``fields`` (an enum); ``variants`` maps a tag
    value to the object whose members come on top of the base's.  ``open``: members
    beyond the declared ones are accepted (commands QEMU marshals by hand, such as
    ``device_add``).  Objects compare by identity: QAPI types may refer to themselves.
    """

    name: str
    fields: tuple[Field, ...]
    tag: str | None = None
    variants: Mapping[str, Object] = field(default_factory=dict)
    open: bool = False

    def member(self, name: str) -> Field | None:
        """The member called ``name`` (base members only, not a variant's)."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def variant(self, value: Mapping[str, Any]) -> Object | None:
        """The variant a union value selects with its tag (``None``: none or no union)."""
        if self.tag is None:
            return None
        tag = value.get(self.tag)
        return self.variants.get(tag) if isinstance(tag, str) else None


@dataclass(frozen=True, eq=False)
class Alternate:
    """A QAPI alternate: one of ``members``, chosen by the JSON type of the value."""

    name: str
    members: tuple[Type, ...]

    def branch(self, value: Any) -> Type | None:
        """The member that takes ``value``, chosen by its JSON type as QEMU's visitor
        chooses (``None``: no member takes it)."""
        kind = json_kind(value)
        for member in self.members:
            if isinstance(member, Object):
                if kind == "object":
                    return member
            elif isinstance(member, Enum):
                if kind == "string":
                    return member
            elif isinstance(member, Array):
                if kind == "array":
                    return member
            elif isinstance(member, Builtin):
                if member.name == "str" and kind == "string":
                    return member
                if member.name in ("int", "number") and kind in ("int", "number"):
                    return member
                if member.name in (kind, "any"):
                    return member
        return None


Type = Builtin | Enum | Array | Object | Alternate

STR: Final = Builtin("str")
INT: Final = Builtin("int")
NUMBER: Final = Builtin("number")
BOOL: Final = Builtin("bool")
ANY: Final = Builtin("any")
NULL: Final = Builtin("null")

# QEMU's integers are int64: beyond, a JSON number is a double (json_kind's "number")
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1


# --- values as QEMU's visitor sees them -------------------------------------------


def json_kind(value: Any) -> str:
    """The JSON type of a Python value, as QEMU's visitor tells them apart."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if INT64_MIN <= value <= INT64_MAX else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def member_names(typ: Type | None, value: Any) -> list[str]:
    """The members an object of type ``typ`` may have, given its ``value`` (a union's
    variant is chosen by the value's tag)."""
    if not isinstance(typ, Object):
        return []
    branch = typ.variant(value) if isinstance(value, dict) else None
    return [f.name for f in (*typ.fields, *(branch.fields if branch is not None else ()))]


# --- building types from QAPI introspection ----------------------------------------

# query-qmp-schema masks the names of all but builtin types, yet QEMU's error for a
# value an alternate cannot take names the alternate.  The alternates are few; each
# is known by the JSON types of its branches (an object branch by its first member).
ALTERNATE_NAMES: Final[Mapping[tuple[str, ...], str]] = {
    ("object:driver", "string"): "BlockdevRef",
    ("object:driver", "string", "null"): "BlockdevRefOrNull",
    ("string", "null"): "StrOrNull",
    ("string", "object:node"): "BlockDirtyBitmapOrStr",
    ("object:template", "enum"): "Qcow2OverlapChecks",
    ("int", "bool", "array"): "StatsValue",
    ("string", "array"): "StrOrList",
}


def types_from_introspection(entries: Sequence[Mapping[str, Any]]) -> Callable[[str], Type]:
    """A resolver from the (masked) type names of a ``query-qmp-schema`` value to types.

    Types are built on first use and shared, so recursive types (a block node whose
    ``file`` is again a block node) become cyclic object graphs.
    """
    table = {entry["name"]: entry for entry in entries}
    built: dict[str, Type] = {}

    def resolve(name: str) -> Type:
        done = built.get(name)
        if done is not None:
            return done
        entry = table.get(name)
        if entry is None:
            raise CatalogError(f"the schema has no type {name!r}")
        meta = entry["meta-type"]
        if meta == "builtin":
            result: Type = Builtin(name)
        elif meta == "enum":
            result = Enum(name, tuple(entry["values"]))
        elif meta == "array":
            result = Array(resolve(entry["element-type"]))
        elif meta == "alternate":
            alt = Alternate(name, ())
            built[name] = alt
            branches = tuple(resolve(m["type"]) for m in entry["members"])
            object.__setattr__(alt, "members", branches)
            object.__setattr__(alt, "name", ALTERNATE_NAMES.get(_signature(branches), name))
            return alt
        elif meta == "object":
            obj = Object(name, ())
            built[name] = obj  # before the members: they may lead back here
            fields = tuple(
                Field(m["name"], resolve(m["type"]), "default" in m) for m in entry["members"]
            )
            object.__setattr__(obj, "fields", fields)
            if "tag" in entry:
                variants: dict[str, Object] = {}
                for v in entry.get("variants", ()):
                    branch = resolve(v["type"])
                    assert isinstance(branch, Object)
                    variants[v["case"]] = branch
                object.__setattr__(obj, "tag", entry["tag"])
                object.__setattr__(obj, "variants", variants)
            return obj
        else:
            raise CatalogError(f"type {name!r} has meta-type {meta!r}, which is not a type")
        built[name] = result
        return result

    return resolve


def _signature(branches: tuple[Type, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for branch in branches:
        if isinstance(branch, Object):
            out.append("object:" + (branch.fields[0].name if branch.fields else ""))
        elif isinstance(branch, Enum):
            out.append("enum")
        elif isinstance(branch, Array):
            out.append("array")
        elif isinstance(branch, Builtin):
            out.append("string" if branch.name == "str" else branch.name)
        else:
            out.append("alternate")
    return tuple(out)
