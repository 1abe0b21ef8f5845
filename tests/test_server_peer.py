"""A tiny QMP peer over any trio stream, for driving the simulator in tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from qmpsim.runtime.server import Simulator

EPOCH = 1_700_000_000.0


class Peer:
    """The client end of a connection: reads CRLF-terminated messages, writes bytes."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    async def recv(self) -> Any:
        """The next message, parsed."""
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
                raise EOFError(f"connection closed; unparsed: {self.buffer!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return json.loads(line)

    async def recv_eof(self) -> None:
        """Read to the end of the stream; fail if any message arrives first."""
        data = await self.stream.receive_some(65536)
        assert data == b"" and self.buffer == b"", f"expected EOF, got {self.buffer + data!r}"
        self.eof = True

    async def send(self, message: Any) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        await self.stream.send_all(data)

    async def execute(self, command: str, arguments: Any = None, **extra: Any) -> Any:
        """Send a command; its reply (events before it are kept in ``self.events``)."""
        msg: dict[str, Any] = {"execute": command, **extra}
        if arguments is not None:
            msg["arguments"] = arguments
        await self.send(msg)
        return await self.reply()

    async def reply(self) -> Any:
        self.events: list[Any] = []
        while True:
            msg = await self.recv()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    async def negotiate(self, *caps: str) -> Any:
        greeting = await self.recv()
        args = {"enable": list(caps)} if caps else None
        assert await self.execute("qmp_capabilities", args) == {"return": {}}
        return greeting


def connect(
    sim: Simulator, nursery: trio.Nursery, *, lockstep: bool = False
) -> tuple[Peer, trio.abc.Stream]:
    """A new in-memory connection to ``sim``; the peer and the server-side stream."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client, server = pair()
    nursery.start_soon(sim.handle_stream, server)
    return Peer(client), server


class RecordingStream(trio.abc.Stream):
    """Wraps the server side of a stream and remembers the size of every write."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def connect_recorded(sim: Simulator, nursery: trio.Nursery) -> tuple[Peer, RecordingStream]:
    """Like :func:`connect`, recording the server's writes."""
    client, server = trio.testing.memory_stream_pair()
    recorded = RecordingStream(server)
    nursery.start_soon(sim.handle_stream, recorded)
    return Peer(client), recorded


@pytest.mark.trio
async def test_peer_reads_messages_split_across_reads(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    peer = Peer(client)
    await server.send_all(b'{"a": 1}\r\n{"b"')
    assert await peer.recv() == {"a": 1}
    await server.send_all(b": 2}\r\n")
    assert await peer.recv() == {"b": 2}
    await server.aclose()
    await peer.recv_eof()
    assert peer.eof
