"""QAPI types and the one walker that checks values against them.

A profile's commands, replies and events are typed with the classes below,
either written by hand (the seed profile) or built from a recorded
``query-qmp-schema`` (:func:`types_from_introspection`).  One walker,
:func:`problems`, visits a value the way QEMU's QObject input visitor does
(declared members in order, then the unexpected ones; a union's base, then its
variant; an alternate by the JSON type of the value) and reports each departure
as a :class:`Problem`.  Its users only format: the protocol turns the first
problem into QEMU's error text (:func:`qemu_error`), the catalog into readable
lines (:func:`describe`), the scenario loader into a located error.
:func:`compile_schema` is the same acceptance as a fast predicate, for events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from qmpsim.errors import CatalogError
from qmpsim.qmp.wire import qdict_order

__all__ = [
    "ANY",
    "BOOL",
    "INT",
    "NUMBER",
    "STR",
    "Alternate",
    "Array",
    "Builtin",
    "Enum",
    "Field",
    "Object",
    "Problem",
    "Type",
    "check_value",
    "compile_schema",
    "describe",
    "json_kind",
    "member_names",
    "problems",
    "qemu_error",
    "type_at",
    "types_from_introspection",
    "value_at",
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


Type = Builtin | Enum | Array | Object | Alternate

STR: Final = Builtin("str")
INT: Final = Builtin("int")
NUMBER: Final = Builtin("number")
BOOL: Final = Builtin("bool")
ANY: Final = Builtin("any")
NULL: Final = Builtin("null")

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


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


# --- the walker ----------------------------------------------------------------------


class Problem(NamedTuple):
    """One way a value departs from its type.

    ``kind``: ``missing``, ``unexpected``, ``type`` (wrong JSON type; ``expected`` is
    QEMU's word for it), ``value`` (not a value of the enum ``expected``) or
    ``alternate`` (no branch of the alternate ``expected`` takes this JSON type).
    ``path`` is QEMU's full name of the place (``a.b[0].c``, empty at the top);
    ``name`` the bare name QEMU's enum and alternate messages use (``None`` for a
    list element).
    """

    kind: str
    path: str
    name: str | None
    expected: str
    value: Any


_EXPECTED: Final[Mapping[str, str]] = {
    "str": "string",
    "int": "integer",
    "number": "number",
    "bool": "boolean",
    "null": "null",
}


def json_kind(value: Any) -> str:
    """The JSON type of a Python value, as QEMU's visitor tells them apart."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64_MIN <= value <= _INT64_MAX else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _builtin_ok(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX
    if kind == "number":
        return isinstance(value, int | float)
    raise CatalogError(f"unknown builtin type {kind!r}")


def problems(
    typ: Type,
    value: Any,
    path: str = "",
    name: str | None = None,
    *,
    partial: bool = False,
) -> Iterator[Problem]:
    """Every departure of ``value`` from ``typ``, in the order QEMU reports them.

    QEMU stops at the first one; the rest follow as the visit would have gone on.
    ``partial``: missing members are not problems (data still to be filled in).
    """
    if isinstance(typ, Builtin):
        if not _builtin_ok(typ.name, value):
            yield Problem("type", path, name, _EXPECTED.get(typ.name, typ.name), value)
    elif isinstance(typ, Enum):
        if not isinstance(value, str):
            yield Problem("type", path, name, "string", value)
        elif value not in typ.values:
            yield Problem("value", path, name, typ.name, value)
    elif isinstance(typ, Array):
        if not isinstance(value, list):
            yield Problem("type", path, name, "array", value)
            return
        for index, element in enumerate(value):
            # QEMU visits list elements without a name
            yield from problems(typ.of, element, f"{path}[{index}]", None, partial=partial)
    elif isinstance(typ, Alternate):
        branch = _branch(typ, value)
        if branch is None:
            yield Problem("alternate", path, name, typ.name, value)
        else:
            yield from problems(branch, value, path, name, partial=partial)
    elif not isinstance(value, dict):
        yield Problem("type", path, name, "object", value)
    else:
        yield from _object_problems(typ, value, path + "." if path else "", partial)


def _object_problems(
    typ: Object, value: Mapping[str, Any], prefix: str, partial: bool
) -> Iterator[Problem]:
    known: set[str] = set()
    branch = typ.variant(value)
    for members in (typ.fields, branch.fields if branch is not None else ()):
        # a union's variant members are visited after its base's (the tag among them)
        for f in members:
            known.add(f.name)
            if f.name in value:
                yield from problems(f.type, value[f.name], prefix + f.name, f.name, partial=partial)
            elif not f.optional and not partial:
                yield Problem("missing", prefix + f.name, f.name, "", None)
    if typ.open:
        return
    for key in _unvisited_order(list(value), known):
        yield Problem("unexpected", prefix + key, key, "", value[key])


def _branch(typ: Alternate, value: Any) -> Type | None:
    kind = json_kind(value)
    for member in typ.members:
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


# --- which unexpected member QEMU names --------------------------------------------


def _g_str_hash(key: str) -> int:
    value = 5381
    for byte in key.encode("utf-8"):
        signed = byte - 256 if byte >= 128 else byte  # GLib hashes signed chars
        value = (value * 33 + signed) & 0xFFFFFFFF
    return max(value, 2)


_GHASH_MIN_SIZE: Final = 8
_GHASH_MIN_MOD: Final = 7


def _unvisited_order(keys: list[str], visited: set[str]) -> list[str]:
    """The unexpected members, the one QEMU names first.

    QEMU keeps a struct's members in a GLib hash table (inserted in QDict order),
    removes each one it visits and reports the first left in the table's slot
    order.  A table of fewer than eight members is never resized, so its slots
    are computed exactly; larger ones fall back to QDict order.
    """
    ordered = qdict_order(keys)
    left = [key for key in ordered if key not in visited]
    if len(left) < 2 or len(keys) >= _GHASH_MIN_SIZE:
        return left
    slots: list[str | None] = [None] * _GHASH_MIN_SIZE
    for key in ordered:
        index = (_g_str_hash(key) * 11 & 0xFFFFFFFF) % _GHASH_MIN_MOD
        step = 0
        while slots[index] is not None:
            step += 1
            index = (index + step) & (_GHASH_MIN_SIZE - 1)
        slots[index] = key
    return [key for key in slots if key is not None and key not in visited]


# --- formatting ----------------------------------------------------------------------


def qemu_error(problem: Problem) -> str:
    """QEMU's ``GenericError`` text for ``problem`` (qobject-input-visitor.c, qapi-visit)."""
    if problem.kind == "missing":
        return f"Parameter '{problem.path}' is missing"
    if problem.kind == "unexpected":
        return f"Parameter '{problem.path}' is unexpected"
    if problem.kind == "type":
        return f"Invalid parameter type for '{problem.path}', expected: {problem.expected}"
    label = problem.name if problem.name is not None else "null"
    if problem.kind == "value":
        return f"Parameter '{label}' does not accept value '{problem.value}'"
    return f"Invalid parameter type for '{label}', expected: {problem.expected}"


def describe(problem: Problem, typ: Type | None = None) -> str:
    """A readable line for ``problem``, for people rather than for the wire."""
    where = problem.path or "value"
    if problem.kind == "missing":
        parent, _, member = problem.path.rpartition(".")
        return f"{parent or 'value'}: missing member '{member}'"
    if problem.kind == "unexpected":
        parent, _, member = problem.path.rpartition(".")
        return f"{parent or 'value'}: unexpected member '{member}'"
    if problem.kind == "value":
        allowed = ", ".join(typ.values) if isinstance(typ, Enum) else ""
        if problem.expected.isdigit():  # a masked name says nothing to a reader
            return f"{where}: {problem.value!r} is not one of: {allowed}"
        suffix = f" ({allowed})" if allowed else ""
        return f"{where}: {problem.value!r} is not one of {problem.expected}{suffix}"
    if problem.kind == "alternate":
        return f"{where}: {_kind(problem.value)} is not a {problem.expected}"
    if problem.expected == "object":
        label = f" ({typ.name})" if isinstance(typ, Object) else ""
        return f"{where}: expected an object{label}, got {_kind(problem.value)}"
    if problem.expected == "array":
        return f"{where}: expected an array, got {_kind(problem.value)}"
    builtin = {v: k for k, v in _EXPECTED.items()}.get(problem.expected, problem.expected)
    return f"{where}: expected {builtin}, got {_kind(problem.value)}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def type_at(typ: Type, path: str, value: Any) -> Type | None:
    """The type at ``path`` (as :class:`Problem` names places) inside ``value``."""
    current: Type | None = typ
    node = value
    for part in _split_path(path):
        if current is None:
            return None
        if isinstance(current, Alternate):
            current = _branch(current, node)
        if isinstance(part, int):
            current = current.of if isinstance(current, Array) else None
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if not isinstance(current, Object) or not isinstance(node, dict):
            return None
        member = current.member(part)
        if member is None:
            branch = current.variant(node)
            member = branch.member(part) if branch is not None else None
        current = member.type if member is not None else None
        node = node.get(part)
    return current


def value_at(value: Any, path: str) -> Any:
    """The part of ``value`` at ``path`` (as :class:`Problem` names places), or ``None``."""
    node = value
    for part in _split_path(path):
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def member_names(typ: Type | None, value: Any) -> list[str]:
    """The members an object of type ``typ`` may have, given its ``value`` (a union's
    variant is chosen by the value's tag)."""
    if not isinstance(typ, Object):
        return []
    branch = typ.variant(value) if isinstance(value, dict) else None
    return [f.name for f in (*typ.fields, *(branch.fields if branch is not None else ()))]


def _split_path(path: str) -> list[str | int]:
    out: list[str | int] = []
    for dotted in path.split(".") if path else ():
        head, *indexes = dotted.split("[")
        if head:
            out.append(head)
        out += [int(i.rstrip("]")) for i in indexes]
    return out


def check_value(schema: Type, value: Any, path: str = "") -> list[str]:
    """Every way ``value`` departs from ``schema``, as readable lines; ``path`` prefixes them."""
    return [
        describe(p._replace(path=_join(path, p.path)), type_at(schema, p.path, value))
        for p in problems(schema, value)
    ]


def _join(prefix: str, path: str) -> str:
    if not path or not prefix:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


# --- compiled checkers -----------------------------------------------------------------
#
# Every emitted event is validated, so schemas are compiled once into predicates that
# only say whether a value conforms.  They accept exactly what `problems` accepts;
# when one says no, `problems` runs to say why.

Checker = Callable[[Any], bool]

_COMPILED: dict[int, tuple[Type, Checker]] = {}


def compile_schema(schema: Type) -> Checker:
    """A predicate true exactly when :func:`problems` finds nothing."""
    cached = _COMPILED.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    checker = _compile(schema, {})
    _COMPILED[id(schema)] = (schema, checker)  # the schema is kept, so its id stays unique
    return checker


def _compile(schema: Type, seen: dict[int, Checker]) -> Checker:
    done = seen.get(id(schema))
    if done is not None:
        return done
    if isinstance(schema, Builtin):
        return _BUILTIN_CHECKERS[schema.name]
    if isinstance(schema, Enum):
        values = frozenset(schema.values)
        return lambda value: isinstance(value, str) and value in values
    if isinstance(schema, Array | Alternate):
        # Recursion goes through arrays and alternates too: late-bound, like objects.
        slot: list[Checker] = []
        seen[id(schema)] = lambda value: slot[0](value)
        if isinstance(schema, Array):
            of = _compile(schema.of, seen)
            slot.append(lambda value: isinstance(value, list) and all(of(item) for item in value))
        else:
            slot.append(lambda value: not any(_alternate_problems(schema, value)))
        return slot[0]
    if schema.tag is not None or schema.open:
        seen[id(schema)] = lambda value: not any(problems(schema, value))
        return seen[id(schema)]
    members: dict[str, Checker] = {}
    required = frozenset(f.name for f in schema.fields if not f.optional)
    items: list[tuple[str, Checker]] = []

    def check_object(value: Any) -> bool:
        if not isinstance(value, dict) or not required.issubset(value):
            return False
        if len(value) == len(members):
            # Every member is present and none is unexpected iff the key sets are equal.
            # A loop rather than all() over a generator: it runs for every emitted event.
            for name, check in items:  # noqa: SIM110
                if name not in value or not check(value[name]):
                    return False
            return True
        for key, item in value.items():
            member = members.get(key)
            if member is None or not member(item):
                return False
        return True

    seen[id(schema)] = check_object
    for f in schema.fields:
        members[f.name] = _compile(f.type, seen)
    items.extend(members.items())
    return check_object


def _alternate_problems(schema: Alternate, value: Any) -> Iterator[Problem]:
    return problems(schema, value)


_BUILTIN_CHECKERS: dict[str, Checker] = {
    "str": lambda value: isinstance(value, str),
    "int": lambda value: (
        isinstance(value, int) and not isinstance(value, bool) and _INT64_MIN <= value <= _INT64_MAX
    ),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "bool": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "any": lambda value: True,
}
