"""The control channel's socket: the server's own bind rules and accept loop."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from test_server_peer import Peer

from qmpsim.runtime.control import ControlChannel, answer, serve_control_unix
from qmpsim.runtime.listen import ListenError
from qmpsim.runtime.server import Simulator
from qmpsim.runtime.session import IDLE, Session

pytestmark = pytest.mark.trio


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qs-") as tmp:
        yield Path(tmp)


async def _channel(sim: Simulator, nursery: trio.Nursery) -> ControlChannel:
    session = Session(sim, IDLE)
    await nursery.start(session.run)
    return ControlChannel(sim, IDLE, lambda: session.runner, session.reset)


async def test_the_control_socket_is_private_serves_and_is_removed(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    async with Simulator() as sim, trio.open_nursery() as nursery:
        channel = await _channel(sim, nursery)
        assert await nursery.start(channel.serve_unix, str(path)) == str(path)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        for _ in range(2):  # one connection after the other, on the same accept loop
            async with await trio.open_unix_socket(str(path)) as stream:
                peer = Peer(stream)
                assert (await peer.recv())["QMP"]["capabilities"] == []
                assert await peer.execute("qmp_capabilities") == {"return": {}}
                reply = await peer.execute("qmpsim-status")
                assert reply["return"]["status"] == "running"
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_the_control_socket_replaces_a_stale_socket_and_refuses_the_rest(
    sock_dir: Path,
) -> None:
    path = sock_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()

    async def hello(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"hello")

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control_unix, str(path), hello)
        async with await trio.open_unix_socket(str(path)) as stream:
            assert await stream.receive_some() == b"hello"
        with pytest.raises(ListenError, match="a server is listening on it"):
            await nursery.start(serve_control_unix, str(path), hello)
        nursery.cancel_scope.cancel()
    precious = sock_dir / "precious.txt"
    precious.write_text("keep me")
    with pytest.raises(ListenError, match=r"refusing to replace .*: it exists and is not a socket"):
        await serve_control_unix(str(precious), hello)
    assert precious.read_text() == "keep me"
    with pytest.raises(ListenError, match=r"cannot listen on .*No such file or directory"):
        await serve_control_unix(str(sock_dir / "missing" / "control.sock"), hello)


async def test_the_control_socket_leaves_a_file_that_replaced_it(sock_dir: Path) -> None:
    path = sock_dir / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control_unix, str(path), trio.SocketStream.aclose))
        path.unlink()
        path.write_text("someone else's")
        nursery.cancel_scope.cancel()
    assert path.read_text() == "someone else's"


@pytest.mark.parametrize(
    "steps",
    [
        [{"include": "secret.yaml"}],
        [{"emit": "STOP"}, {"repeat": 2, "steps": [{"include": "secret.yaml"}]}],
    ],
)
async def test_run_refuses_include_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: list[dict[str, Any]]
) -> None:
    monkeypatch.chdir(tmp_path)  # where an include would be looked up
    (tmp_path / "secret.yaml").write_text("steps:\n  - emit: POWERDOWN\n")
    async with Simulator() as sim, trio.open_nursery() as nursery:
        channel = await _channel(sim, nursery)
        request = {"execute": "qmpsim-run", "arguments": {"steps": steps}, "id": 1}
        reply, _ = await answer(request, True, channel.execute)
        assert reply["error"]["class"] == "GenericError"
        desc = reply["error"]["desc"]
        assert "include is refused here: it would read a file on the server's side" in desc
        nursery.cancel_scope.cancel()
