"""The framing every control socket shares: ``answer()`` and ``serve_control_stream()``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from qmpsim.errors import QmpSimError
from qmpsim.qmp.wire import JsonStreamer
from qmpsim.runtime.control import ControlError, answer, serve_control_stream

VERSION = {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}


async def execute(command: str, arguments: dict[str, Any]) -> Any:
    if command == "echo":
        return arguments
    if command == "refuse":
        raise ControlError("not now", "DeviceNotFound")
    if command == "fail":
        raise QmpSimError("it went wrong")
    if command == "crash":
        raise ZeroDivisionError("division by zero")
    raise ControlError(f"The command {command} has not been found", "CommandNotFound")


def error(error_class: str, desc: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"class": error_class, "desc": desc}, **extra}


@pytest.mark.trio
async def test_negotiation_comes_first_and_only_once() -> None:
    caps = {"execute": "qmp_capabilities", "id": 1}
    reply, negotiated = await answer({"execute": "echo"}, False, execute)
    assert reply == error(
        "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"
    )
    assert not negotiated
    assert await answer(caps, False, execute) == ({"return": {}, "id": 1}, True)
    reply, negotiated = await answer(caps, True, execute)
    desc = "Capabilities negotiation is already complete, command ignored"
    assert reply == error("CommandNotFound", desc, id=1)
    assert negotiated


@pytest.mark.trio
@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        ({"execute": "echo", "arguments": {"a": 1}, "id": "x"}, {"return": {"a": 1}, "id": "x"}),
        ({"execute": "echo"}, {"return": {}}),
        ({"execute": "refuse", "id": 2}, error("DeviceNotFound", "not now", id=2)),
        ({"execute": "fail"}, error("GenericError", "it went wrong")),
        ({"execute": "nope"}, error("CommandNotFound", "The command nope has not been found")),
        ({"arguments": {}}, error("GenericError", "QMP input lacks member 'execute'")),
        ({"execute": 3, "id": 4}, error("GenericError", "QMP input lacks member 'execute'", id=4)),
        (
            {"execute": "echo", "arguments": [1]},
            error("GenericError", "QMP input member 'arguments' must be an object"),
        ),
        ([1], error("GenericError", "QMP input must be a JSON object")),
    ],
)
async def test_requests_get_qmp_replies(request_: Any, reply: dict[str, Any]) -> None:
    assert await answer(request_, True, execute) == (reply, True)


@pytest.mark.trio
async def test_a_bug_in_a_command_is_answered_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="qmpsim.control"):
        reply, _ = await answer({"execute": "crash", "id": 5}, True, execute)
    assert reply == error("GenericError", "internal error: division by zero", id=5)
    assert "control command crash failed" in caplog.text


async def converse(data: bytes) -> list[Any]:
    """Send ``data`` then end the stream; everything the control side wrote, parsed."""
    client, server = trio.testing.memory_stream_pair()
    received = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_control_stream, server, VERSION, execute)
        await client.send_all(data)
        await client.send_eof()
        while chunk := await client.receive_some():
            received += chunk
    await client.aclose()
    return JsonStreamer().feed(received)


@pytest.mark.trio
async def test_a_stream_is_greeted_and_answered_in_order() -> None:
    messages = await converse(
        b'{"execute": "qmp_capabilities"}{"execute": "echo", "arguments": {"n": 1}, "id": 1}'
        b'}{"execute": "echo", "id": 2}'
    )
    assert messages[0] == {"QMP": {"version": VERSION, "capabilities": []}}
    assert messages[1:3] == [{"return": {}}, {"return": {"n": 1}, "id": 1}]
    assert messages[3]["error"]["class"] == "GenericError"  # the stray '}'
    assert messages[4:] == [{"return": {}, "id": 2}]


@pytest.mark.trio
async def test_a_request_cut_short_by_the_end_of_the_stream_gets_an_error() -> None:
    messages = await converse(b'{"execute": "qmp_capabilities"}{"execute": "ec')
    assert messages[1] == {"return": {}}
    assert messages[2]["error"]["class"] == "GenericError"
    assert len(messages) == 3


@pytest.mark.trio
async def test_a_peer_gone_before_the_greeting_ends_the_connection_quietly() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.aclose()
    await serve_control_stream(server, VERSION, execute)  # returns; nothing raised
