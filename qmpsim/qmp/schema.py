"""The one walker that checks values against QAPI types.

:func:`problems` visits a value the way QEMU's QObject input visitor does
(declared members in order, then the unexpected ones; a union's base, then its
variant; an alternate by the JSON type of the value) and reports each departure
as a :class:`~qmpsim.qmp.problem.Problem`.  Its users only format: the protocol
turns the first problem into QEMU's error text (:func:`qemu_error`), the catalog
into readable lines (:func:`check_value`), the scenario loader into a located
error.  :func:`compile_schema` is the same acceptance as a fast predicate, for
events.  The types themselves are :mod:`qmpsim.qmp.qapi`'s, the wording
:mod:`qmpsim.qmp.problem`'s; both are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from qmpsim.errors import CatalogError
from qmpsim.qmp.problem import TYPE_WORDS, Problem, describe, qemu_error, type_at, value_at
from qmpsim.qmp.qapi import (
    ANY,
    BOOL,
    INT,
    INT64_MAX,
    INT64_MIN,
    NUMBER,
    STR,
    Alternate,
    Array,
    Builtin,
    Enum,
    Field,
    Object,
    Type,
    json_kind,
    member_names,
    types_from_introspection,
)
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


# --- the walker ----------------------------------------------------------------------


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
        return isinstance(value, int) and INT64_MIN <= value <= INT64_MAX
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
            yield Problem("type", path, name, TYPE_WORDS.get(typ.name, typ.name), value)
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
        branch = typ.branch(value)
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


# --- readable lines --------------------------------------------------------------------


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
        isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    ),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "bool": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "any": lambda value: True,
}
