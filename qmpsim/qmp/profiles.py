"""The protocol profiles: every command and event one QEMU version has, as data.

A profile (:class:`~qmpsim.qmp.profile_spec.ProfileSpec`) is what one QEMU
version says on the wire: its greeting, its commands with their argument and
return types, and its events with their data types.  ``qemu-2.5`` …
``qemu-11.1`` are compiled from recorded conversations with real QEMU builds
(``tools/compile_profiles.py``; the data ships in ``qmpsim/profiles/``, read by
:mod:`qmpsim.qmp.profile_data`) and load lazily: only the profile in use, and
only its greeting until a command or an event needs the rest.  ``qemu-0.14`` is
written by hand (:mod:`qmpsim.qmp.profile_0_14`).  Everything qmpsim emits is
validated against the active profile before it leaves
(:mod:`qmpsim.qmp.profile_events`; the walker lives in :mod:`qmpsim.qmp.schema`).
This module is the registry, and the one import point for all of it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final

from qmpsim.errors import CatalogError
from qmpsim.qmp.profile_0_14 import QEMU_0_14
from qmpsim.qmp.profile_data import DATA_DIR, Body, read_body
from qmpsim.qmp.profile_events import fit_event_data, validate_event
from qmpsim.qmp.profile_spec import CommandSpec, EventSpec, ProfileSpec
from qmpsim.qmp.qapi import (
    ANY,
    BOOL,
    INT,
    NUMBER,
    STR,
    Alternate,
    Array,
    Builtin,
    Enum,
    Field,
    Object,
    Type,
)
from qmpsim.qmp.schema import check_value, compile_schema

__all__ = [
    "ANY",
    "BOOL",
    "DATA_DIR",
    "DEFAULT_PROFILE",
    "INT",
    "NUMBER",
    "PROFILES",
    "QEMU_0_14",
    "STR",
    "Alternate",
    "Array",
    "Builtin",
    "CommandSpec",
    "Enum",
    "EventSpec",
    "Field",
    "Object",
    "ProfileSpec",
    "Type",
    "check_value",
    "compile_schema",
    "fit_event_data",
    "get_profile",
    "validate_event",
]

# QEMU's monitor_qapi_event_conf: the rates qmpsim's model applies (per event name).
_THROTTLED: Final = ("RTC_CHANGE", "WATCHDOG", "BALLOON_CHANGE")


class _Lazy(Mapping[str, Any]):
    """A mapping built on first use (the profile's body is read then)."""

    __slots__ = ("_build", "_table")

    def __init__(self, build: Any) -> None:
        self._build = build
        self._table: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        table = self._table
        if table is None:
            table = self._table = self._build()
        return table

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._get().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return "<not loaded yet>" if self._table is None else repr(self._table)


_BODIES: dict[str, Body] = {}
_LOCK = threading.Lock()  # a background simulator may load while the test's thread does


def _body(name: str) -> Body:
    body = _BODIES.get(name)
    if body is None:
        with _LOCK:
            body = _BODIES.get(name)
            if body is None:
                body = _BODIES[name] = read_body(name)
    return body


def _compiled(name: str, head: Mapping[str, Any]) -> ProfileSpec:
    major, minor, micro = head["version"]
    return ProfileSpec(
        name=name,
        version=(major, minor, micro),
        package=head["package"],
        capabilities=tuple(head["capabilities"]),
        commands=_Lazy(lambda: _body(name).commands),
        events=_Lazy(lambda: _body(name).events),
        throttle=_Lazy(lambda: {e: 1.0 for e in _THROTTLED if e in _body(name).events}),
        recorded=_Lazy(lambda: _body(name).recorded),
    )


class _Profiles(Mapping[str, ProfileSpec]):
    """Every profile by name, oldest first; compiled ones are read when first asked for."""

    def __init__(self) -> None:
        self._index: dict[str, Mapping[str, Any]] | None = None
        self._made: dict[str, ProfileSpec] = {QEMU_0_14.name: QEMU_0_14}

    def _heads(self) -> dict[str, Mapping[str, Any]]:
        if self._index is None:
            try:
                text = (DATA_DIR / "index.json").read_text(encoding="utf-8")
            except OSError as exc:
                raise CatalogError(f"the profile index cannot be read: {exc}") from None
            self._index = {QEMU_0_14.name: {}, **json.loads(text)["profiles"]}
        return self._index

    def __getitem__(self, name: str) -> ProfileSpec:
        made = self._made.get(name)
        if made is None:
            head = self._heads()[name]  # KeyError for an unknown name, as a mapping should
            with _LOCK:
                made = self._made.setdefault(name, _compiled(name, head))
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads())

    def __len__(self) -> int:
        return len(self._heads())

    def __contains__(self, name: object) -> bool:
        return name in self._heads()


PROFILES: Mapping[str, ProfileSpec] = _Profiles()
DEFAULT_PROFILE = "qemu-7.2"


def get_profile(name: str) -> ProfileSpec:
    """The profile called ``name``; a clear error naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise CatalogError(f"unknown profile {name!r} (known profiles: {known})") from None


def __getattr__(name: str) -> Any:
    # QEMU_7_2 was a hand-written table; it is the compiled profile now, read on use.
    if name == "QEMU_7_2":
        return get_profile("qemu-7.2")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
