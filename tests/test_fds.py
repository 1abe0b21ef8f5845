"""Descriptors passed to the monitor (SCM_RIGHTS), without a real QEMU: every descriptor
received is closed once nothing keeps it, a fleet's parked connections take them too,
and the version boundaries that only QEMU's source shows (tests/test_diff_fds.py
compares 7.2 and 10.0 with the real ones)."""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_server_peer import Peer

from qmpsim.machine import Machine, ManualClock, VmConfig
from qmpsim.qmp.profiles import get_profile
from qmpsim.runtime.fleet import Fleet
from qmpsim.runtime.server import Simulator
from qmpsim.vm.fds import Descriptors, receiving


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def send_with_fds(
    client: Peer, message: dict[str, Any], count: int, fds: list[int] | None = None
) -> Any:
    """Send ``message`` with ``fds``, or ``count`` fresh descriptors (ours are closed at
    once), and read its reply."""
    if fds is None:
        fds = []
        for _ in range(count):
            read, write = os.pipe()
            os.close(read)
            fds.append(write)
    assert isinstance(client.stream, trio.SocketStream)
    data = json.dumps(message).encode()
    try:
        await client.stream.socket.sendmsg(
            [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        )
    finally:
        for fd in fds:
            os.close(fd)
    return await client.reply()


@pytest.mark.trio
async def test_no_received_descriptor_is_left_open(tmp_path: Path) -> None:
    before = open_fds()
    sim = Simulator(vm=VmConfig(machine="pc", cpus=1))
    async with sim:
        path = await sim.listen_unix(tmp_path / "qmp.sock")
        listening = open_fds()
        client = Peer(await trio.open_unix_socket(path))
        await client.negotiate()
        getfd = {"execute": "getfd", "arguments": {"fdname": "kept"}}
        assert await send_with_fds(client, getfd, 1) == {"return": {}}
        assert await send_with_fds(client, getfd, 2) == {"return": {}}  # one kept, one closed
        bad = {"execute": "getfd", "arguments": {"fdname": "1st"}}
        assert "error" in await send_with_fds(client, bad, 3)
        add = {"execute": "add-fd", "arguments": {"opaque": "disk"}}
        assert (await send_with_fds(client, add, 1))["return"]["fdset-id"] == 0
        kept = open_fds() - listening
        assert kept == 1 + 1 + 2  # named, the fd set's, the connection's two ends
        stream = os.open(tmp_path / "state", os.O_WRONLY | os.O_CREAT)
        migrate = {"execute": "getfd", "arguments": {"fdname": "migrate"}}
        assert await send_with_fds(client, migrate, 0, [stream]) == {"return": {}}
        events = {"capabilities": [{"capability": "events", "state": True}]}
        await client.execute("migrate-set-capabilities", events)
        await client.execute("migrate", {"uri": "fd:migrate"})
        while (await client.recv()).get("data") != {"status": "completed"}:
            pass
        assert open_fds() - listening == kept  # the migration closed its descriptor
        assert (tmp_path / "state").read_bytes() == b"QEVM\x00\x00\x00\x03\x00"
        # sent with a command that takes none: they wait, and newer ones replace them
        assert await send_with_fds(client, {"execute": "query-name"}, 4) == {"return": {}}
        assert await send_with_fds(client, {"execute": "query-name"}, 2) == {"return": {}}
        assert open_fds() - listening == kept + 2
        await client.stream.aclose()
        await sim.wait_no_clients()
        # gone with the connection: its two waiting; the fd set's stays (QEMU 7.2 closes
        # it only while the VM runs, and it is in postmigrate)
        assert open_fds() - listening == 2
    assert open_fds() == before  # the simulator's end closed the named one


@pytest.mark.trio
async def test_a_parked_fleet_connection_receives_descriptors(tmp_path: Path) -> None:
    fleet = Fleet(2, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        client = Peer(await trio.open_unix_socket(fleet.vms[1].path))
        await client.negotiate()
        await trio.testing.wait_all_tasks_blocked()  # the connection is parked now
        getfd = {"execute": "getfd", "arguments": {"fdname": "f"}}
        assert await send_with_fds(client, getfd, 1) == {"return": {}}
        await trio.testing.wait_all_tasks_blocked()
        assert await client.execute("closefd", {"fdname": "f"}) == {"return": {}}
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


@contextmanager
def fed(machine: Machine) -> Iterator[list[int]]:
    """Commands on ``machine`` take a fresh pipe end each; yields the ends given."""
    given: list[int] = []

    def take() -> int:
        read, write = os.pipe()
        os.close(read)
        given.append(write)
        return write

    with receiving(machine.part(Descriptors), take):
        yield given


@pytest.mark.parametrize(("profile", "listed"), [("qemu-9.0", 1), ("qemu-9.1", 0)])
def test_remove_fd_closes_at_once_from_9_1(profile: str, listed: int) -> None:
    vm = Machine(
        VmConfig(initial_state="prelaunch"), profile=get_profile(profile), clock=ManualClock()
    )
    with fed(vm) as given:
        assert vm.execute("add-fd", {}).reply == {"fdset-id": 0, "fd": given[0]}
    assert vm.execute("remove-fd", {"fdset-id": 0}).reply == {}
    # QEMU up to 9.0 closes only while the VM runs: the descriptor is still listed
    assert len(vm.execute("query-fdsets", {}).reply) == listed
    vm.part(Descriptors).close_all()


def test_a_command_without_a_connection_gets_no_descriptor() -> None:
    vm = Machine(VmConfig(), clock=ManualClock())
    reply = vm.execute("add-fd", {}).reply
    assert getattr(reply, "desc", None) == "No file descriptor supplied via SCM_RIGHTS"


@pytest.mark.trio
async def test_incoming_from_a_descriptor_number_the_process_holds(tmp_path: Path) -> None:
    """``-incoming fd:N`` as libvirt's restore uses it: the stream comes from a descriptor
    the launcher left open, which the VM closes once it has read it."""
    read, write = os.pipe()
    pipe = os.fstat(read).st_ino
    sim = Simulator(vm=VmConfig(machine="pc", cpus=1, incoming=f"fd:{read}"))
    async with sim:
        path = await sim.listen_unix(tmp_path / "qmp.sock")
        client = Peer(await trio.open_unix_socket(path))
        await client.negotiate()
        assert (await client.execute("query-status"))["return"]["status"] == "inmigrate"
        os.write(write, b"QEVM\x00\x00\x00\x03\x00")  # a simulator's stream, complete
        os.close(write)
        while (await client.recv())["event"] != "RESUME":
            pass
        assert (await client.execute("query-status"))["return"]["status"] == "running"
        # closed by the VM (the number may have been given to a new file since)
        with contextlib.suppress(OSError):
            assert os.fstat(read).st_ino != pipe
        await client.stream.aclose()
