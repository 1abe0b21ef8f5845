"""The simulator on real Unix and TCP sockets: permissions, cleanup, refusals, policy."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from test_server_peer import Peer

from qmpsim.server import ListenError, Simulator

pytestmark = pytest.mark.trio


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~108 bytes: keep the directory short.
    with tempfile.TemporaryDirectory(prefix="qs-") as tmp:
        yield Path(tmp)


async def test_unix_socket_is_private_serves_and_is_removed(sock_dir: Path) -> None:
    path = sock_dir / "qmp.sock"
    async with Simulator() as sim:
        bound = await sim.listen_unix(path)
        assert bound == str(path)
        mode = os.lstat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        async with await trio.open_unix_socket(bound) as stream:
            peer = Peer(stream)
            await peer.negotiate()
            assert (await peer.execute("query-status"))["return"]["running"] is True
    assert not path.exists()


async def test_unix_refuses_to_replace_a_file(sock_dir: Path) -> None:
    path = sock_dir / "precious.txt"
    path.write_text("keep me")
    async with Simulator() as sim:
        with pytest.raises(ListenError, match="exists and is not a socket"):
            await sim.listen_unix(path)
    assert path.read_text() == "keep me"


async def test_unix_refuses_a_live_socket_and_replaces_a_stale_one(sock_dir: Path) -> None:
    path = sock_dir / "qmp.sock"
    async with Simulator() as first, Simulator() as second:
        await first.listen_unix(path)
        with pytest.raises(ListenError, match="a server is listening on it"):
            await second.listen_unix(path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    async with Simulator() as sim:
        await sim.listen_unix(path)
        async with await trio.open_unix_socket(str(path)) as stream:
            assert "QMP" in await Peer(stream).recv()


async def test_unix_unusable_path_is_a_clear_error(sock_dir: Path) -> None:
    async with Simulator() as sim:
        with pytest.raises(ListenError, match=r"cannot listen on .*No such file or directory"):
            await sim.listen_unix(sock_dir / "missing" / "qmp.sock")


async def test_tcp_on_loopback_with_port_zero() -> None:
    async with Simulator() as sim:
        host, port = await sim.listen_tcp("localhost", 0)
        assert host == "127.0.0.1" and port > 0
        async with await trio.open_tcp_stream(host, port) as stream:
            peer = Peer(stream)
            await peer.negotiate()
            assert await peer.execute("stop") == {"return": {}}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
async def test_tcp_refuses_non_loopback_hosts(host: str) -> None:
    async with Simulator() as sim:
        with pytest.raises(ListenError, match=r"not a loopback address.*--allow-remote"):
            await sim.listen_tcp(host, 0)


async def test_second_socket_client_stays_in_the_backlog(sock_dir: Path) -> None:
    path = str(sock_dir / "qmp.sock")
    async with Simulator() as sim:
        await sim.listen_unix(path)
        async with await trio.open_unix_socket(path) as one:
            first = Peer(one)
            await first.negotiate()
            two = await trio.open_unix_socket(path)  # the kernel queues it
            second = Peer(two)
            await second.send({"execute": "qmp_capabilities", "id": 2})
            assert await first.execute("query-status", id=1) == {
                "return": {"status": "running", "singlestep": False, "running": True},
                "id": 1,
            }
            assert len(sim.clients) == 1
        async with two:
            assert "QMP" in await second.recv()
            assert await second.recv() == {"return": {}, "id": 2}


async def test_multi_client_serves_both_at_once(sock_dir: Path) -> None:
    path = str(sock_dir / "qmp.sock")
    async with Simulator(multi_client=True) as sim:
        await sim.listen_unix(path)
        async with (
            await trio.open_unix_socket(path) as one,
            await trio.open_unix_socket(path) as two,
        ):
            a, b = Peer(one), Peer(two)
            await a.negotiate()
            await b.negotiate()
            assert await a.execute("stop") == {"return": {}}
            assert (await b.recv())["event"] == "STOP"
