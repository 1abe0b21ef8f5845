"""The simulator on real Unix and TCP sockets: permissions, cleanup, refusals, policy."""

from __future__ import annotations

import logging
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

from qmpsim.runtime import listen
from qmpsim.runtime.control import serve_control_unix
from qmpsim.runtime.listen import ListenError
from qmpsim.runtime.server import Simulator

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


def _umask() -> int:
    """The process's umask, read without changing it (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise AssertionError("no Umask line in /proc/self/status")


class _UmaskWatch(trio.abc.Instrument):
    """Records the umask whenever a task yields with it changed: another task, or
    another thread, would see it then."""

    def __init__(self) -> None:
        self.expected = _umask()
        self.seen: set[int] = set()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if (umask := _umask()) != self.expected:
            self.seen.add(umask)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
async def test_listeners_starting_together_never_yield_with_a_changed_umask(
    sock_dir: Path,
) -> None:
    watch = _UmaskWatch()

    async def nobody(stream: trio.SocketStream) -> None:
        await stream.aclose()

    trio.lowlevel.add_instrument(watch)
    try:
        async with Simulator() as one, Simulator() as two, trio.open_nursery() as nursery:
            async with trio.open_nursery() as starting:  # ends when all three listen
                starting.start_soon(one.listen_unix, sock_dir / "one.sock")
                starting.start_soon(two.listen_unix, sock_dir / "two.sock")
                control = str(sock_dir / "control.sock")
                starting.start_soon(nursery.start, serve_control_unix, control, nobody)
            for name in ("one", "two", "control"):
                mode = os.lstat(sock_dir / f"{name}.sock").st_mode
                assert stat.S_IMODE(mode) == 0o600
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(watch)
    assert watch.seen == set()
    assert _umask() == watch.expected


@pytest.mark.parametrize("fchmod", [True, False])
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
async def test_a_socket_file_is_born_private_whatever_the_umask(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, fchmod: bool, umask: int
) -> None:
    # Without fchmod (other systems than Linux) the umask changes around bind alone.
    monkeypatch.setattr(listen, "_FCHMOD_SOCKET", fchmod)
    old = os.umask(umask)
    try:
        bound = listen.bind_unix(str(sock_dir / "q.sock"))
        try:
            assert stat.S_IMODE(os.lstat(bound.path).st_mode) == 0o600
            assert os.umask(umask) == umask  # and it is back as it was
        finally:
            bound.close()
    finally:
        os.umask(old)
    assert not (sock_dir / "q.sock").exists()


async def test_a_socket_file_appears_only_once_it_listens(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that waits for the file, then connects, must never be refused.
    path = sock_dir / "qmp.sock"
    seen_at_listen: list[bool] = []

    class Watched(socket.socket):
        def listen(self, backlog: int = 0, /) -> None:
            seen_at_listen.append(path.exists())
            super().listen(backlog)

    monkeypatch.setattr(listen.stdsocket, "socket", Watched)
    bound = listen.bind_unix(str(path))
    monkeypatch.undo()
    try:
        assert seen_at_listen == [False]
        assert os.listdir(sock_dir) == ["qmp.sock"]  # nothing left of the staging name
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
    finally:
        bound.close()
    assert os.listdir(sock_dir) == []


async def test_a_file_that_appears_while_binding_is_kept(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sock_dir / "qmp.sock"

    def raced(_path: str) -> None:
        path.write_text("another process's")  # after the check, before the socket is named

    monkeypatch.setattr(listen, "clear_stale_socket", raced)
    with pytest.raises(ListenError, match=r"refusing to replace .*it appeared while binding"):
        listen.bind_unix(str(path))
    assert path.read_text() == "another process's"
    assert os.listdir(sock_dir) == ["qmp.sock"]


async def test_a_path_too_long_to_stage_is_bound_in_place(sock_dir: Path) -> None:
    name = "s" * (100 - len(str(sock_dir)))  # fits a socket address; a longer name would not
    path = sock_dir / name
    bound = listen.bind_unix(str(path))
    try:
        assert os.listdir(sock_dir) == [name]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
    finally:
        bound.close()
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


async def test_after_quit_the_socket_goes_away_and_nobody_else_is_greeted(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="qmpsim")
    path = sock_dir / "qmp.sock"
    async with Simulator() as sim:
        await sim.listen_unix(path)
        async with await trio.open_unix_socket(str(path)) as one:
            first = Peer(one)
            await first.negotiate()
            waiting = await trio.open_unix_socket(str(path))  # one client at a time: queued
            assert await first.execute("quit") == {"return": {}}
            assert not path.exists()  # gone as soon as the VM exits, as QEMU's socket
            await first.recv_eof()
        with pytest.raises(FileNotFoundError):
            await trio.open_unix_socket(str(path))
        async with waiting:
            try:
                data = await waiting.receive_some()
            except trio.BrokenResourceError:  # reset by the listener's close
                data = b""
            assert data == b""  # no greeting from a VM that has exited
        await sim.wait_no_clients()
    assert [r.getMessage() for r in caplog.records] == []


async def test_after_quit_the_tcp_listener_refuses_connections() -> None:
    async with Simulator() as sim:
        host, port = await sim.listen_tcp()
        async with await trio.open_tcp_stream(host, port) as stream:
            peer = Peer(stream)
            await peer.negotiate()
            assert await peer.execute("quit") == {"return": {}}
            await peer.recv_eof()
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream(host, port)


async def test_a_reply_echoing_a_1_mib_id_reaches_a_reading_client(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="qmpsim")
    path = str(sock_dir / "qmp.sock")
    ident = "i" * (1 << 20)  # with the default bound of 1 MiB
    async with Simulator() as sim:
        await sim.listen_unix(path)
        async with await trio.open_unix_socket(path) as stream:
            peer = Peer(stream)
            await peer.negotiate()
            reply = await peer.execute("query-status", id=ident)
            assert reply["id"] == ident and reply["return"]["running"] is True
            assert await peer.execute("stop", id=2) == {"return": {}, "id": 2}
    assert [r.getMessage() for r in caplog.records] == []
