"""A fleet's idle connections: no task waits on each; the acceptor watches their sockets.

A connection whose client sent nothing new, with nothing to write or run, parks:
its task ends and the fleet's one acceptor task wakes it when the client sends,
closes or an event is queued for it.  Everything a client sees stays the same.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from test_server_peer import Peer

from qmpsim.runtime.fleet import Fleet, fewer_collections
from qmpsim.runtime.server import DEFAULT_MAX_OUTPUT_BUFFER


async def negotiated(path: str) -> Peer:
    client = Peer(await trio.open_unix_socket(path))
    await client.negotiate()
    return client


def tasks() -> int:
    return trio.lowlevel.current_statistics().tasks_living


@pytest.mark.trio
async def test_idle_connections_cost_no_task(tmp_path: Path) -> None:
    fleet = Fleet(12, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        await trio.testing.wait_all_tasks_blocked()
        before = tasks()
        clients = [await negotiated(vm.path) for vm in fleet.vms]
        await trio.testing.wait_all_tasks_blocked()
        assert tasks() == before  # an idle VM runs no task of its own either
        assert sum(len(vm.sim.clients) for vm in fleet.vms) == 12
        # Parked, each is still served: pipelined commands in one write, in order.
        for i, client in enumerate(clients):
            ids = [{"execute": "query-status", "id": n} for n in range(3)]
            await client.send(b"".join(json.dumps(m).encode() for m in ids))
            assert [(await client.recv())["id"] for _ in ids] == [0, 1, 2]
            assert (await client.execute("query-name"))["return"]["name"] == fleet.vms[i].name
        await trio.testing.wait_all_tasks_blocked()
        assert tasks() == before
        for client in clients:
            await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_events_reach_a_parked_connection(tmp_path: Path) -> None:
    fleet = Fleet(2, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        client = await negotiated(fleet.vms[1].path)
        await trio.testing.wait_all_tasks_blocked()
        fleet.vms[1].sim.emit("STOP")
        fleet.vms[1].sim.emit("RESUME")
        assert [(await client.recv())["event"] for _ in range(2)] == ["STOP", "RESUME"]
        await trio.testing.wait_all_tasks_blocked()
        assert (await client.execute("query-status"))["return"]["status"] == "running"
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_parked_connection_that_closes_frees_the_vm(tmp_path: Path) -> None:
    fleet = Fleet(1, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        first = await negotiated(fleet.vms[0].path)
        await trio.testing.wait_all_tasks_blocked()
        await first.stream.aclose()  # the acceptor sees it hang up
        await fleet.vms[0].sim.wait_no_clients()
        second = await negotiated(fleet.vms[0].path)  # accepted again: the slot was freed
        assert fleet.vms[0].sim.clients == [2]
        await second.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_parked_connection_is_dropped_at_once(tmp_path: Path) -> None:
    fleet = Fleet(1, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        client = await negotiated(fleet.vms[0].path)
        await trio.testing.wait_all_tasks_blocked()
        fleet.vms[0].sim.disconnect()
        await client.recv_eof()
        await fleet.vms[0].sim.wait_no_clients()
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_parked_client_that_does_not_read_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet(1, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        client = await negotiated(fleet.vms[0].path)
        await trio.testing.wait_all_tasks_blocked()
        sim = fleet.vms[0].sim
        # Queued while no task serves it: the bound holds before anything is written.
        with caplog.at_level(logging.WARNING, "qmpsim.server"):
            for _ in range(2 * DEFAULT_MAX_OUTPUT_BUFFER // 64):  # an event is > 64 bytes
                sim.emit("STOP")
            await sim.wait_no_clients()
        assert "not reading" in caplog.text
        with pytest.raises(EOFError):
            while True:
                await client.recv()
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_stopping_the_fleet_closes_parked_connections(tmp_path: Path) -> None:
    fleet = Fleet(3, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        clients = [await negotiated(vm.path) for vm in fleet.vms]
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    for client in clients:
        await client.recv_eof()
        await client.stream.aclose()
    assert all(not vm.sim.clients for vm in fleet.vms)


def test_a_fleet_process_collects_garbage_less_often() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] >= 10_000
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before
