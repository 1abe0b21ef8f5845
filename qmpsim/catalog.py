"""The event and command catalog of each protocol profile: data, not logic.

A profile is what one QEMU era says on the wire: its greeting, its commands with
their argument schemas, and its events with their data schemas.  Everything
qmpsim emits is validated against the active profile before it leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CatalogError

# --- the schema mini-language -------------------------------------------------


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


@dataclass(frozen=True)
class Object:
    """A QAPI struct: named members, no others allowed."""

    name: str
    fields: tuple[Field, ...]

    def member(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


Type = Builtin | Enum | Array | Object

STR = Builtin("str")
INT = Builtin("int")
NUMBER = Builtin("number")
BOOL = Builtin("bool")
ANY = Builtin("any")


@dataclass(frozen=True)
class CommandSpec:
    """A command's name, its arguments (as an object type) and whether it may run out-of-band."""

    name: str
    arguments: Object
    allow_oob: bool = False
    allow_preconfig: bool = False


@dataclass(frozen=True)
class EventSpec:
    """An event's name and the schema of its ``data`` member (``None``: the event has no data)."""

    name: str
    data: Object | None


@dataclass(frozen=True)
class ProfileSpec:
    """Everything one protocol profile says about the wire."""

    name: str
    version: tuple[int, int, int]
    package: str
    capabilities: tuple[str, ...]
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)
    events: Mapping[str, EventSpec] = field(default_factory=dict)

    def greeting(self) -> dict[str, Any]:
        """The greeting object, in the member order QEMU builds it."""
        major, minor, micro = self.version
        return {
            "QMP": {
                "version": {
                    "qemu": {"micro": micro, "minor": minor, "major": major},
                    "package": self.package,
                },
                "capabilities": list(self.capabilities),
            }
        }


# --- commands -------------------------------------------------------------------

QMP_CAPABILITY = Enum("QMPCapability", ("oob",))


def _cmd(name: str, *fields: Field, oob: bool = False, preconfig: bool = False) -> CommandSpec:
    return CommandSpec(name, Object(f"q_obj_{name}-arg", fields), oob, preconfig)


_COMMON_COMMANDS: tuple[CommandSpec, ...] = (
    _cmd(
        "qmp_capabilities",
        Field("enable", Array(QMP_CAPABILITY), optional=True),
        preconfig=True,
    ),
    _cmd("query-version", preconfig=True),
    _cmd("query-commands", preconfig=True),
    _cmd("query-status", preconfig=True),
    _cmd("stop"),
    _cmd("cont"),
    _cmd("system_reset"),
    _cmd("quit", preconfig=True),
)


def _by_name(specs: tuple[CommandSpec, ...]) -> dict[str, CommandSpec]:
    return {spec.name: spec for spec in specs}


# --- profiles -------------------------------------------------------------------

QEMU_7_2 = ProfileSpec(
    name="qemu-7.2",
    version=(7, 2, 0),
    package="",
    capabilities=("oob",),
    commands=_by_name(_COMMON_COMMANDS),
)

PROFILES: Mapping[str, ProfileSpec] = {QEMU_7_2.name: QEMU_7_2}
DEFAULT_PROFILE = QEMU_7_2.name


def get_profile(name: str) -> ProfileSpec:
    """The profile called ``name``; a clear error naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise CatalogError(f"unknown profile {name!r} (known profiles: {known})") from None
