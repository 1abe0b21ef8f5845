"""Unit tests of the QMP connection state machine (no QEMU needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpsim.catalog import QEMU_7_2
from qmpsim.protocol import (
    NO_ID,
    TRANSITIONS,
    ConnectionState,
    ProtocolError,
    Request,
    ServerConnection,
    Trigger,
)


def _connect(*, negotiate: bool = False, oob: bool = False) -> ServerConnection:
    conn = ServerConnection(QEMU_7_2)
    conn.greeting()
    if negotiate:
        args = '{"enable": ["oob"]}' if oob else "{}"
        conn.receive_data(b'{"execute": "qmp_capabilities", "arguments": %s}' % args.encode())
        assert conn.next_request() == b'{"return": {}}\r\n'
    return conn


def _reply(conn: ServerConnection, data: bytes) -> Any:
    conn.receive_data(data)
    out = conn.next_request()
    assert isinstance(out, bytes), out
    return json.loads(out)


def test_greeting_moves_to_negotiation() -> None:
    conn = ServerConnection(QEMU_7_2)
    assert conn.state is ConnectionState.GREETING
    greeting = json.loads(conn.greeting())
    assert greeting["QMP"]["capabilities"] == ["oob"]
    assert conn.state is ConnectionState.NEGOTIATION


def test_happy_path_negotiate_then_command() -> None:
    conn = _connect(negotiate=True)
    assert conn.state is ConnectionState.COMMAND
    assert not conn.oob_enabled
    conn.receive_data(b'{"execute": "query-status", "id": "a"}')
    request = conn.next_request()
    assert request == Request("query-status", {}, "a", False)
    assert isinstance(request, Request)
    assert conn.send_return(request, {"running": True}) == (
        b'{"return": {"running": true}, "id": "a"}\r\n'
    )
    assert conn.next_request() is None


def test_oob_negotiated() -> None:
    assert _connect(negotiate=True, oob=True).oob_enabled


def test_events_held_back_until_negotiated() -> None:
    conn = _connect()
    event = {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}
    assert conn.send_event(event) == b""
    conn.receive_data(b'{"execute": "qmp_capabilities"}')
    assert conn.next_request() == b'{"return": {}}\r\n'
    assert b'"STOP"' in conn.send_event(event)


def test_request_without_id_gets_no_id() -> None:
    conn = _connect(negotiate=True)
    conn.receive_data(b'{"execute": "stop"}')
    request = conn.next_request()
    assert isinstance(request, Request)
    assert request.id is NO_ID
    assert conn.send_error(request, "GenericError", "boom") == (
        b'{"error": {"class": "GenericError", "desc": "boom"}}\r\n'
    )


def test_greeting_twice_is_a_local_error() -> None:
    conn = _connect()
    with pytest.raises(ProtocolError):
        conn.greeting()


def test_transition_table_has_no_way_back_from_closed() -> None:
    reachable = {dst for (src, _), dst in TRANSITIONS.items() if src is ConnectionState.CLOSED}
    assert reachable == {ConnectionState.CLOSED}
    assert TRANSITIONS[ConnectionState.NEGOTIATION, Trigger.NEGOTIATED] is ConnectionState.COMMAND
