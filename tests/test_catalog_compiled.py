"""The compiled checkers accept exactly what check_value accepts."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.qmp import profile_events
from qmpsim.qmp.profiles import PROFILES, QEMU_7_2, check_value, compile_schema, validate_event
from qmpsim.testing.strategies import events

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.sampled_from(["", "virtio0", "write", "report", "ignore", "running"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["device", "action", "seconds", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def _slow(profile: Any, message: Any) -> list[str]:
    # validate_event with its compiled fast path switched off.
    original = profile_events._conforms
    profile_events._conforms = lambda profile, message: False
    try:
        return validate_event(profile, message)
    finally:
        profile_events._conforms = original


@settings(max_examples=300, derandomize=True)
@given(st.data())
def test_drawn_events_and_their_mutations_agree(data: st.DataObject) -> None:
    profile = data.draw(st.sampled_from(sorted(PROFILES.values(), key=lambda p: p.name)))
    message = data.draw(events(profile=profile))
    assert validate_event(profile, message) == []
    mutated = dict(message)
    where = data.draw(st.sampled_from(["event", "data", "timestamp", "extra", "drop-data"]))
    if where == "drop-data":
        mutated.pop("data", None)
    elif where == "data" and isinstance(mutated.get("data"), dict) and mutated["data"]:
        inner = dict(mutated["data"])
        key = data.draw(st.sampled_from([*sorted(inner), "unexpected"]))
        if data.draw(st.booleans()):
            inner.pop(key, None)
        else:
            inner[key] = data.draw(_VALUES)
        mutated["data"] = inner
    else:
        mutated[where] = data.draw(_VALUES)
    assert validate_event(profile, mutated) == _slow(profile, mutated)


@settings(max_examples=300, derandomize=True)
@given(st.sampled_from(sorted(QEMU_7_2.events)), _VALUES)
def test_any_data_value_agrees(name: str, value: Any) -> None:
    schema = QEMU_7_2.events[name].data
    if schema is not None:
        assert compile_schema(schema)(value) == (check_value(schema, value) == [])


def test_an_invalid_event_keeps_its_messages() -> None:
    message = {
        "timestamp": {"seconds": 1, "microseconds": 2},
        "event": "BLOCK_IO_ERROR",
        "data": {"device": "virtio0", "operation": "fly", "action": "report", "x": True},
    }
    assert validate_event(QEMU_7_2, message) == _slow(QEMU_7_2, message)
    problems = validate_event(QEMU_7_2, message)
    assert "BLOCK_IO_ERROR: data: unexpected member 'x'" in problems
    assert "BLOCK_IO_ERROR: data.operation: 'fly' is not one of: read, write" in problems


def test_a_schema_is_compiled_once() -> None:
    schema = QEMU_7_2.events["BLOCK_IO_ERROR"].data
    assert schema is not None
    assert compile_schema(schema) is compile_schema(schema)
