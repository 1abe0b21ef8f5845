"""A value's departure from its type (:class:`Problem`), worded and located.

The walker (:func:`qmpsim.qmp.schema.problems`) finds problems; its users only
word them: :func:`qemu_error` is QEMU's error text (the protocol answers with
it), :func:`describe` a readable line (the catalog, the scenario loader).
:func:`type_at` and :func:`value_at` follow a problem's ``path`` back into
the type and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from qmpsim.qmp.qapi import Alternate, Array, Enum, Object, Type

__all__ = ["TYPE_WORDS", "Problem", "describe", "qemu_error", "type_at", "value_at"]


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


# QEMU's word for a builtin type in its errors (``expected: integer``)
TYPE_WORDS: Final[Mapping[str, str]] = {
    "str": "string",
    "int": "integer",
    "number": "number",
    "bool": "boolean",
    "null": "null",
}


# --- wording -------------------------------------------------------------------------


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
    builtin = {v: k for k, v in TYPE_WORDS.items()}.get(problem.expected, problem.expected)
    return f"{where}: expected {builtin}, got {_kind(problem.value)}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# --- locating ------------------------------------------------------------------------


def type_at(typ: Type, path: str, value: Any) -> Type | None:
    """The type at ``path`` (as :class:`Problem` names places) inside ``value``."""
    current: Type | None = typ
    node = value
    for part in _split_path(path):
        if current is None:
            return None
        if isinstance(current, Alternate):
            current = current.branch(node)
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


def _split_path(path: str) -> list[str | int]:
    out: list[str | int] = []
    for dotted in path.split(".") if path else ():
        head, *indexes = dotted.split("[")
        if head:
            out.append(head)
        out += [int(i.rstrip("]")) for i in indexes]
    return out
