"""The grammar's building blocks: the kinds of value a scenario key takes (scalars,
durations, sizes, JSON, counts, mappings, lists, steps), and the scalars every part
of the grammar shares.  The loader (:mod:`qmpsim.scenario.nodes`) reads each kind;
the JSON Schema (:mod:`qmpsim.scenario.json_schema`) spells each one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias


@dataclass(frozen=True)
class _Scalar:
    type: Literal["str", "int", "number", "bool"]
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class _Duration:
    """Seconds as a number, or a string such as ``500ms``, ``2s``, ``1.5m``, ``1h``."""


@dataclass(frozen=True)
class _Size:
    """Bytes as an integer, or a string such as ``512K``, ``64M``, ``16G`` (powers of 1024)."""


@dataclass(frozen=True)
class _Json:
    """Any JSON value (command results, arguments)."""

    object_only: bool = False


@dataclass(frozen=True)
class _Count:
    """A positive integer, or the word ``forever`` (or ``always``)."""

    word: str


@dataclass(frozen=True)
class _Key:
    name: str
    kind: _Kind
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class _Obj:
    name: str
    keys: tuple[_Key, ...]
    doc: str = ""

    def key(self, name: str) -> _Key | None:
        return next((k for k in self.keys if k.name == name), None)


@dataclass(frozen=True)
class _List:
    item: _Kind


@dataclass(frozen=True)
class _Steps:
    """A list of steps."""


@dataclass(frozen=True)
class _StepsMap:
    """Named lists of steps."""


_Kind: TypeAlias = _Scalar | _Duration | _Size | _Json | _Count | _Obj | _List | _Steps | _StepsMap

_STR = _Scalar("str")
_BOOL = _Scalar("bool")
_PORT = _Scalar("int", minimum=0)
_NAME = _Scalar("str", pattern=r"^[A-Za-z0-9_.:-]+$")
_COMMAND = _Scalar("str", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
_FAMILY = _Scalar("str", enum=("ipv4", "ipv6", "unix"))
_TIMES = _Count("always")
