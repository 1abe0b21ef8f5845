"""Unit tests of the QMP connection state machine (no QEMU needed)."""

from __future__ import annotations

import json
import pickle
from dataclasses import FrozenInstanceError, replace
from typing import Any

import pytest

from qmpsim.qmp.profiles import QEMU_7_2, CommandSpec, Object
from qmpsim.qmp.protocol import (
    NEED_DATA,
    NO_ID,
    TRANSITIONS,
    ConnectionState,
    Negotiated,
    ProtocolError,
    Reply,
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


# --- events, h11-style -----------------------------------------------------------------

STOP = {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}


def test_next_event_gives_typed_events() -> None:
    conn = _connect()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b'{"execute": "query-status", "id": 1}{"execute": "qmp_capabilities"')
    refused = conn.next_event()
    assert isinstance(refused, Reply)
    assert json.loads(refused.data)["error"]["class"] == "CommandNotFound"
    assert conn.next_event() is NEED_DATA  # half a request is buffered
    conn.receive_data(b', "arguments": {"enable": ["oob"]}, "id": "n"}')
    assert conn.next_event() == Negotiated("n", oob=True)
    assert conn.next_event() is NEED_DATA


def test_events_wait_for_the_negotiations_reply_not_its_request() -> None:
    # Requests are read ahead of the replies: one read past qmp_capabilities is a command
    # already, but events reach the peer only once the negotiation's reply is sent.
    conn = _connect()
    conn.receive_data(b'{"execute": "qmp_capabilities"}{"execute": "stop", "id": 2}')
    negotiated = conn.next_event()
    assert negotiated == Negotiated(NO_ID, oob=False)
    assert conn.next_event() == Request("stop", {}, 2, False)
    assert (conn.state, conn.negotiated, conn.events_allowed) == (
        ConnectionState.NEGOTIATION,
        False,
        False,
    )
    assert conn.send_event(STOP) == b""
    assert isinstance(negotiated, Negotiated)
    assert conn.send_negotiated(negotiated) == b'{"return": {}}\r\n'
    assert (conn.state, conn.negotiated, conn.events_allowed) == (
        ConnectionState.COMMAND,
        True,
        True,
    )
    assert b'"STOP"' in conn.send_event(STOP)


def test_a_second_negotiation_read_before_the_first_reply_is_refused() -> None:
    conn = _connect()
    conn.receive_data(b'{"execute": "qmp_capabilities"}{"execute": "qmp_capabilities"}')
    assert isinstance(conn.next_event(), Negotiated)
    second = conn.next_event()
    assert isinstance(second, Reply)
    assert json.loads(second.data)["error"]["desc"] == (
        "Capabilities negotiation is already complete, command ignored"
    )


def test_a_close_stops_events_but_the_negotiation_stays_done() -> None:
    conn = _connect(negotiate=True)
    conn.receive_data(b"")
    assert conn.negotiated
    assert not conn.events_allowed
    assert conn.send_event(STOP) == b""


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


def test_every_pair_outside_the_table_is_refused() -> None:
    for state in ConnectionState:
        for trigger in Trigger:
            if (state, trigger) in TRANSITIONS:
                continue
            conn = ServerConnection(QEMU_7_2)
            conn._state = state  # drive the table directly
            with pytest.raises(ProtocolError):
                conn._fire(trigger)


def test_next_request_before_greeting_is_a_local_error() -> None:
    conn = ServerConnection(QEMU_7_2)
    conn.receive_data(b'{"execute": "qmp_capabilities"}')
    with pytest.raises(ProtocolError):
        conn.next_request()
    conn.greeting()
    assert conn.next_request() == b'{"return": {}}\r\n'


def test_custom_greeting_without_oob_refuses_it() -> None:
    greeting = {"QMP": {"version": QEMU_7_2.greeting()["QMP"]["version"], "capabilities": []}}
    conn = ServerConnection(QEMU_7_2, greeting=greeting)
    assert json.loads(conn.greeting()) == greeting
    reply = _reply(conn, b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    assert reply == {"error": {"class": "GenericError", "desc": "Capability oob not available"}}
    reply = _reply(
        conn, b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "oob"]}}'
    )
    assert reply["error"]["desc"] == "Capability oob, oob not available"
    assert conn.state is ConnectionState.NEGOTIATION
    assert _reply(conn, b'{"execute": "qmp_capabilities"}') == {"return": {}}
    assert not conn.oob_enabled


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (
            b'{"execute": "query-status", "id": 1}',
            {
                "error": {
                    "class": "CommandNotFound",
                    "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
                },
                "id": 1,
            },
        ),
        (
            b'{"execute": "no-such", "arguments": {"x": 1}}',
            {
                "error": {
                    "class": "CommandNotFound",
                    "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
                }
            },
        ),
        (b"[]", {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}),
        (
            b'{"exec-oob": "qmp_capabilities"}',
            {
                "error": {
                    "class": "GenericError",
                    "desc": "QMP input member 'exec-oob' is unexpected",
                }
            },
        ),
        (
            b'{"execute": "qmp_capabilities", "arguments": null, "id": null}',
            {
                "error": {
                    "class": "GenericError",
                    "desc": "QMP input member 'arguments' must be an object",
                },
                "id": None,
            },
        ),
    ],
)
def test_refusals_before_negotiation(data: bytes, reply: Any) -> None:
    conn = _connect()
    assert _reply(conn, data) == reply
    assert conn.state is ConnectionState.NEGOTIATION


def test_second_negotiation_is_ignored() -> None:
    conn = _connect(negotiate=True)
    reply = _reply(conn, b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    assert reply["error"] == {
        "class": "CommandNotFound",
        "desc": "Capabilities negotiation is already complete, command ignored",
    }
    assert not conn.oob_enabled


def test_unknown_command_after_negotiation() -> None:
    conn = _connect(negotiate=True)
    reply = _reply(conn, b'{"execute": "frobnicate", "id": "f"}')
    assert reply == {
        "error": {"class": "CommandNotFound", "desc": "The command frobnicate has not been found"},
        "id": "f",
    }


@pytest.mark.parametrize(
    ("data", "desc"),
    [
        (b'{"exec-oob": "stop", "id": 1}', "The command stop does not support OOB"),
        (b'{"exec-oob": 1, "id": 1}', "QMP input member 'exec-oob' must be a string"),
        (
            b'{"execute": "stop", "exec-oob": "stop", "id": 1}',
            "QMP input member 'execute' clashes with 'exec-oob'",
        ),
    ],
)
def test_exec_oob_refusals(data: bytes, desc: str) -> None:
    conn = _connect(negotiate=True, oob=True)
    assert _reply(conn, data) == {"error": {"class": "GenericError", "desc": desc}, "id": 1}


def test_exec_oob_reaches_a_command_that_allows_it() -> None:
    ping = CommandSpec("x-ping", Object("q_obj_x-ping-arg", ()), allow_oob=True)
    profile = replace(QEMU_7_2, commands={**QEMU_7_2.commands, "x-ping": ping})
    conn = ServerConnection(profile)
    conn.greeting()
    conn.receive_data(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    conn.next_request()
    conn.receive_data(b'{"exec-oob": "x-ping", "id": "p"}{"execute": "x-ping"}')
    assert conn.next_request() == Request("x-ping", {}, "p", True)
    assert conn.next_request() == Request("x-ping", {}, NO_ID, False)


def test_parse_error_reply_has_no_id() -> None:
    conn = _connect(negotiate=True)
    reply = _reply(conn, b'{"execute": "stop", "id": 1]')
    assert set(reply) == {"error"}
    assert reply["error"]["class"] == "GenericError"
    assert reply["error"]["desc"].startswith("JSON parse error")


@pytest.mark.parametrize(
    "req_id", ["s", "", 0, -1, 2**62, 1.5, True, False, None, [], [1, "a"], {}, {"k": [None]}]
)
def test_ids_of_every_json_type_are_echoed(req_id: Any) -> None:
    conn = _connect(negotiate=True)
    conn.receive_data(json.dumps({"execute": "query-status", "id": req_id}).encode())
    request = conn.next_request()
    assert isinstance(request, Request)
    assert request.id == req_id
    assert json.loads(conn.send_return(request, {}))["id"] == req_id
    invalid = _reply(conn, json.dumps({"execute": 5, "id": req_id}).encode())
    assert invalid["id"] == req_id


def test_reply_member_order_is_qemus() -> None:
    conn = _connect(negotiate=True)
    conn.receive_data(b'{"execute": "stop", "id": 7}{"execute": "nope", "id": 8}')
    request = conn.next_request()
    assert isinstance(request, Request)
    assert conn.send_return(request, {}) == b'{"return": {}, "id": 7}\r\n'
    assert conn.send_error(request, "GenericError", "x") == (
        b'{"id": 7, "error": {"class": "GenericError", "desc": "x"}}\r\n'
    )
    assert conn.next_request() == (
        b'{"id": 8, "error": {"class": "CommandNotFound",'
        b' "desc": "The command nope has not been found"}}\r\n'
    )


def test_pipelined_and_split_input() -> None:
    conn = _connect()
    for piece in (b'{"execute": "qmp_capa', b'bilities"}\n\n{"execute": "stop"}', b" \r\n"):
        conn.receive_data(piece)
    assert conn.next_request() == b'{"return": {}}\r\n'
    assert conn.next_request() == Request("stop", {}, NO_ID, False)
    assert conn.next_request() is None


def test_peer_close_still_answers_what_arrived() -> None:
    conn = _connect()
    conn.receive_data(b'{"execute": "qmp_capabilities"}{"execute": "cont"}')
    conn.receive_data(b"")
    assert conn.state is ConnectionState.CLOSED
    assert conn.next_request() == b'{"return": {}}\r\n'
    assert conn.next_request() == Request("cont", {}, NO_ID, False)
    assert conn.next_request() is None
    assert conn.state is ConnectionState.CLOSED
    assert conn.send_event({"event": "RESUME"}) == b""
    conn.receive_data(b"")
    conn.receive_data(b'{"execute": "stop"}')
    assert conn.next_request() is None


def test_server_close_stops_events() -> None:
    conn = _connect(negotiate=True)
    conn.close()
    assert conn.state is ConnectionState.CLOSED
    assert conn.send_event({"event": "SHUTDOWN"}) == b""


def test_no_id_is_a_singleton() -> None:
    assert repr(NO_ID) == "NO_ID"
    assert type(NO_ID)() is NO_ID
    assert pickle.loads(pickle.dumps(NO_ID)) is NO_ID


def test_request_is_frozen() -> None:
    request = Request("stop", {}, 1, False)
    with pytest.raises(FrozenInstanceError):
        request.command = "cont"  # type: ignore[misc]


def test_greeting_bytes_in_qemus_member_order() -> None:
    # Debian's QEMU 7.2.22 sends exactly these bytes (measured); the profile must insert
    # the version members as QEMU does (major, minor, micro) for wire.encode to match.
    greeting = ServerConnection(QEMU_7_2).greeting()
    assert greeting == (
        b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7},'
        b' "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n'
    )
