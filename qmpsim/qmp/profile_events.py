"""An event message against a profile: whether it conforms, and data cut to fit it.

Everything qmpsim emits is checked here before it leaves (:func:`validate_event`,
fast when the event conforms); the VM model builds event data for recent QEMU
and :func:`fit_event_data` cuts it to what an older profile's event carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmpsim.qmp.profile_spec import ProfileSpec
from qmpsim.qmp.qapi import INT, Field, Object, member_names
from qmpsim.qmp.schema import check_value, compile_schema

__all__ = ["fit_event_data", "validate_event"]


_EVENT_KEYS = frozenset(("event", "data", "timestamp"))


def _conforms(profile: ProfileSpec, message: Mapping[str, Any]) -> bool:
    if not _EVENT_KEYS.issuperset(message):
        return False
    ts = message.get("timestamp")
    if type(ts) is not dict or len(ts) != 2:
        return False
    seconds = ts.get("seconds")
    micro = ts.get("microseconds")
    if type(seconds) is not int or type(micro) is not int or not 0 <= micro < 1_000_000:
        return False
    name = message.get("event")
    spec = profile.events.get(name) if isinstance(name, str) else None
    if spec is None:
        return False
    if spec.data is None:
        return "data" not in message
    return "data" in message and compile_schema(spec.data)(message["data"])


def validate_event(profile: ProfileSpec, message: Mapping[str, Any]) -> list[str]:
    """Every way the event message ``message`` departs from ``profile`` (empty: conformant)."""
    if _conforms(profile, message):
        return []
    problems: list[str] = []
    for key in message:
        if key not in ("event", "data", "timestamp"):
            problems.append(f"unexpected member '{key}' in an event message")
    name = message.get("event")
    ts = message.get("timestamp")
    problems += check_value(_TIMESTAMP, ts, "timestamp")
    micro = ts.get("microseconds") if isinstance(ts, dict) else None
    if isinstance(micro, int) and not 0 <= micro < 1_000_000:
        problems.append("timestamp.microseconds: must be in 0..999999")
    if not isinstance(name, str):
        return [*problems, "event: expected the event name as a string"]
    spec = profile.events.get(name)
    if spec is None:
        return [*problems, f"event {name!r} does not exist in profile {profile.name}"]
    if spec.data is None:
        if "data" in message:
            problems.append(f"{name}: has no data in profile {profile.name}")
        return problems
    if "data" not in message:
        return [*problems, f"{name}: missing member 'data'"]
    return problems + [f"{name}: {p}" for p in check_value(spec.data, message["data"], "data")]


def fit_event_data(
    profile: ProfileSpec, name: str, data: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``data`` as the VM model builds it (for recent QEMU), cut to what ``profile``'s
    event carries: members the event did not have yet are dropped (SHUTDOWN's
    ``reason`` before QEMU 4.0, RTC_CHANGE's ``qom-path`` before 7.0…)."""
    spec = profile.events.get(name)
    if spec is None or data is None:
        return data
    if spec.data is None:
        return None
    return _fit(spec.data, data)


def _fit(typ: Object, data: Mapping[str, Any]) -> dict[str, Any]:
    names = member_names(typ, data)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            continue
        member = typ.member(key)
        if member is not None and isinstance(member.type, Object) and isinstance(value, Mapping):
            value = _fit(member.type, value)
        out[key] = value
    return out


_TIMESTAMP = Object("timestamp", (Field("seconds", INT), Field("microseconds", INT)))
