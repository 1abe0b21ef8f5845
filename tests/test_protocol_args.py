"""Argument checking against a command's schema, with QEMU 7.2's texts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpsim.qmp.profiles import (
    ANY,
    BOOL,
    INT,
    NUMBER,
    QEMU_7_2,
    STR,
    Array,
    Builtin,
    CommandSpec,
    Enum,
    Field,
    Object,
    ProfileSpec,
)
from qmpsim.qmp.protocol import Request, ServerConnection

COLOUR = Enum("Colour", ("red", "green"))
INNER = Object("Inner", (Field("depth", INT), Field("tint", COLOUR, optional=True)))
PROBE = CommandSpec(
    "probe",
    Object(
        "q_obj_probe-arg",
        (
            Field("name", STR),
            Field("count", INT, optional=True),
            Field("ratio", NUMBER, optional=True),
            Field("flag", BOOL, optional=True),
            Field("colour", COLOUR, optional=True),
            Field("colours", Array(COLOUR), optional=True),
            Field("inner", INNER, optional=True),
            Field("blob", ANY, optional=True),
            Field("nothing", Builtin("null"), optional=True),
        ),
    ),
)
PROFILE = ProfileSpec(
    name="test",
    version=(7, 2, 0),
    package="",
    capabilities=("oob",),
    commands={**QEMU_7_2.commands, "probe": PROBE},
)


def _run(arguments: dict[str, Any]) -> Request | str:
    """The Request, or the error text QEMU would answer with."""
    conn = ServerConnection(PROFILE)
    conn.greeting()
    conn.receive_data(b'{"execute": "qmp_capabilities"}')
    assert conn.next_request() == b'{"return": {}}\r\n'
    conn.receive_data(json.dumps({"execute": "probe", "arguments": arguments}).encode())
    out = conn.next_request()
    assert out is not None
    if isinstance(out, Request):
        return out
    error = json.loads(out)["error"]
    assert error["class"] == "GenericError"
    desc: str = error["desc"]
    return desc


@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "x"},
        {"name": "x", "count": -(2**63), "ratio": 3, "flag": False},
        {"name": "x", "count": 2**63 - 1, "ratio": 0.5},
        {"name": "x", "colour": "red", "colours": ["green", "red"]},
        {"name": "x", "inner": {"depth": 0, "tint": "green"}},
        {"name": "x", "blob": [None, {"a": 1}], "nothing": None},
    ],
)
def test_valid_arguments_pass_through(arguments: dict[str, Any]) -> None:
    request = _run(arguments)
    assert isinstance(request, Request)
    assert request.arguments == arguments


@pytest.mark.parametrize(
    ("arguments", "desc"),
    [
        ({}, "Parameter 'name' is missing"),
        ({"count": 1}, "Parameter 'name' is missing"),
        ({"name": 1}, "Invalid parameter type for 'name', expected: string"),
        ({"name": None}, "Invalid parameter type for 'name', expected: string"),
        ({"name": "x", "count": "1"}, "Invalid parameter type for 'count', expected: integer"),
        ({"name": "x", "count": 1.0}, "Invalid parameter type for 'count', expected: integer"),
        ({"name": "x", "count": True}, "Invalid parameter type for 'count', expected: integer"),
        ({"name": "x", "count": 2**63}, "Invalid parameter type for 'count', expected: integer"),
        ({"name": "x", "ratio": "1"}, "Invalid parameter type for 'ratio', expected: number"),
        ({"name": "x", "ratio": False}, "Invalid parameter type for 'ratio', expected: number"),
        ({"name": "x", "flag": 1}, "Invalid parameter type for 'flag', expected: boolean"),
        ({"name": "x", "nothing": 0}, "Invalid parameter type for 'nothing', expected: null"),
        ({"name": "x", "colour": 1}, "Invalid parameter type for 'colour', expected: string"),
        ({"name": "x", "colour": "blue"}, "Parameter 'colour' does not accept value 'blue'"),
        ({"name": "x", "colours": "red"}, "Invalid parameter type for 'colours', expected: array"),
        (
            {"name": "x", "colours": ["red", 2]},
            "Invalid parameter type for 'colours[1]', expected: string",
        ),
        (
            {"name": "x", "colours": ["red", "blue"]},
            "Parameter 'null' does not accept value 'blue'",
        ),
        ({"name": "x", "inner": []}, "Invalid parameter type for 'inner', expected: object"),
        ({"name": "x", "inner": {}}, "Parameter 'inner.depth' is missing"),
        (
            {"name": "x", "inner": {"depth": "0"}},
            "Invalid parameter type for 'inner.depth', expected: integer",
        ),
        (
            {"name": "x", "inner": {"depth": 0, "tint": "blue"}},
            "Parameter 'tint' does not accept value 'blue'",
        ),
        ({"name": "x", "inner": {"depth": 0, "x": 1}}, "Parameter 'inner.x' is unexpected"),
        ({"name": "x", "extra": 1}, "Parameter 'extra' is unexpected"),
        # Declared members are checked before unexpected ones, in declaration order.
        ({"extra": 1, "name": 2}, "Invalid parameter type for 'name', expected: string"),
        ({"count": "x", "extra": 1}, "Parameter 'name' is missing"),
    ],
)
def test_argument_errors_have_qemu_texts(arguments: dict[str, Any], desc: str) -> None:
    assert _run(arguments) == desc


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        # Measured on QEMU 7.2 with qmp_capabilities: GLib's hash table order decides.
        ({"b": 1, "a": 2}, "b"),
        ({"a": 2, "b": 1}, "b"),
        ({"zeta": 1, "enable": ["oob"], "alpha": 2, "mid": 3}, "alpha"),
    ],
)
def test_several_unexpected_members_report_qemus_choice(
    arguments: dict[str, Any], name: str
) -> None:
    conn = ServerConnection(QEMU_7_2)
    conn.greeting()
    conn.receive_data(json.dumps({"execute": "qmp_capabilities", "arguments": arguments}).encode())
    out = conn.next_request()
    assert isinstance(out, bytes)
    assert json.loads(out)["error"]["desc"] == f"Parameter '{name}' is unexpected"
