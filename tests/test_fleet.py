"""Fleet mode: many independent VMs in one process, each on its own monitor socket."""

from __future__ import annotations

import json
import os
import resource
import stat
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from test_server_peer import Peer

from qmpsim.errors import QmpSimError
from qmpsim.runtime.fleet import (
    Fleet,
    fleet_identities,
    raise_fd_limit,
    serve_fleet,
)
from qmpsim.runtime.listen import ListenError
from qmpsim.scenario.loader import loads_scenario

FAKE_VNC = """
name: greet
steps:
  - emit: VNC_CONNECTED
    fake: true
"""


async def connect(path: str) -> Peer:
    client = Peer(await trio.open_unix_socket(path))
    assert "QMP" in await client.recv()
    return client


def test_identities_are_distinct_and_reproducible() -> None:
    first = fleet_identities(1000, seed=7)
    assert first == fleet_identities(1000, seed=7)
    assert len({i.name for i in first}) == len({i.uuid for i in first}) == 1000
    assert len({i.seed for i in first}) == 1000
    assert first[0].name == "vm000" and first[-1].name == "vm999"
    other = fleet_identities(1000, seed=8)
    assert not {i.uuid for i in first} & {i.uuid for i in other}
    with pytest.raises(ValueError, match="at least one VM"):
        fleet_identities(0)


@pytest.mark.trio
async def test_each_vm_has_its_own_socket_name_and_uuid(tmp_path: Path) -> None:
    fleet = Fleet(12, tmp_path, prefix="web")
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        for vm in fleet.vms:
            mode = os.stat(vm.path).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        for vm in fleet.vms[::5]:
            client = await connect(vm.path)
            async with client.stream:
                assert (await client.execute("qmp_capabilities")) == {"return": {}}
                assert (await client.execute("query-name")) == {"return": {"name": vm.name}}
                uuid = await client.execute("query-uuid")
                assert uuid == {"return": {"UUID": vm.identity.uuid}}
        nursery.cancel_scope.cancel()
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.trio
async def test_every_vm_plays_the_scenario_with_its_own_data(tmp_path: Path) -> None:
    fleet = Fleet(6, tmp_path, loads_scenario(FAKE_VNC), seed=3)
    seen = []
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        for vm in fleet.vms:
            client = await connect(vm.path)
            async with client.stream:
                await client.stream.send_all(b'{"execute": "qmp_capabilities"}')
                assert await client.recv() == {"return": {}}
                event = await client.recv()
                assert event["event"] == "VNC_CONNECTED"
                seen.append(json.dumps(event["data"], sort_keys=True))
        nursery.cancel_scope.cancel()
    assert len(set(seen)) == len(seen)


@pytest.mark.trio
async def test_one_vm_quitting_leaves_the_others_serving(tmp_path: Path) -> None:
    fleet = Fleet(3, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        quitter = await connect(fleet.vms[1].path)
        async with quitter.stream:
            await quitter.execute("qmp_capabilities")
            assert (await quitter.execute("quit")) == {"return": {}}
            assert await quitter.stream.receive_some() == b""  # closed, like QEMU exiting
        await fleet.vms[1].sim.wait_no_clients()
        await fleet.vms[1].closed.wait()
        assert not os.path.exists(fleet.vms[1].path)
        assert fleet.vms[1].summary()["status"] == "exited"
        other = await connect(fleet.vms[2].path)
        async with other.stream:
            await other.execute("qmp_capabilities")
            assert (await other.execute("query-status"))["return"]["status"] == "running"
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_socket_in_the_way_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    (tmp_path / "vm2.sock").write_text("not a socket")
    fleet = Fleet(4, tmp_path)
    with pytest.raises(ListenError, match=r"vm2\.sock: it exists and is not a socket"):
        await fleet.run()
    assert sorted(os.listdir(tmp_path)) == ["vm2.sock"]


def test_a_path_too_long_for_a_unix_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ListenError, match="longer than the 107 bytes"):
        Fleet(1, tmp_path / ("d" * 120))


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        Fleet(1, tmp_path, speed=0)
    with pytest.raises(ValueError, match="prefix"):
        Fleet(1, tmp_path, prefix="a/b")


def test_fd_limit_is_raised_or_the_fleet_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on file descriptors here")
    assert raise_fd_limit(min(hard, soft + 1)) >= min(hard, soft + 1)
    with pytest.raises(QmpSimError, match=rf"needs {hard + 1} file descriptors .* is {hard}"):
        raise_fd_limit(hard + 1)


@pytest.mark.trio
async def test_control_channel_lists_and_drives_every_vm(tmp_path: Path) -> None:
    (tmp_path / "vms").mkdir()
    fleet = Fleet(3, tmp_path / "vms")
    control = str(tmp_path / "control.sock")
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_fleet, fleet, control=control, announce=lines.append))
        assert lines[1] == f"control channel on unix:{control}"
        ctl = await connect(control)
        watcher = await connect(fleet.vms[1].path)
        await watcher.execute("qmp_capabilities")
        async with ctl.stream, watcher.stream:
            refused = await ctl.execute("qmpsim-fleet")
            assert refused["error"]["class"] == "CommandNotFound"
            assert (await ctl.execute("qmp_capabilities")) == {"return": {}}
            listing = (await ctl.execute("qmpsim-fleet"))["return"]
            assert [vm["name"] for vm in listing] == ["vm0", "vm1", "vm2"]
            assert {vm["status"] for vm in listing} == {"running"}
            emitted = await ctl.execute("qmpsim-emit", {"vm": "vm1", "event": "RESUME"})
            assert emitted == {"return": {}}
            assert (await watcher.recv())["event"] == "RESUME"
            status = await ctl.execute("qmpsim-status", {"vm": "vm1"})
            assert status["return"]["status"] == "running"
            missing = await ctl.execute("qmpsim-status")
            assert missing["error"]["desc"] == "Parameter 'vm' is missing"
            unknown = await ctl.execute("qmpsim-status", {"vm": "vm9"})
            assert unknown["error"]["desc"] == "no VM named 'vm9' in the fleet (vm0..vm2)"
            wrong = await ctl.execute("qmpsim-status", {"vm": 1})
            assert wrong["error"]["desc"] == "Parameter 'vm' expects string"
            nope = await ctl.execute("qmpsim-nope", {"vm": "vm0"})
            assert nope["error"]["class"] == "CommandNotFound"
            await ctl.stream.send_all(b'{"execute": "qmpsim-fleet", "id": 7} [1]')
            assert (await ctl.recv())["id"] == 7
            assert "error" in await ctl.recv()
        nursery.cancel_scope.cancel()
    assert not os.path.exists(control)


@pytest.mark.trio
async def test_a_scenario_that_ends_the_vm_removes_its_socket(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    ending = loads_scenario("clock: startup\nsteps:\n  - wait: 2s\n  - cause: guest-shutdown\n")
    fleet = Fleet(2, tmp_path, ending)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        for vm in fleet.vms:
            await vm.closed.wait()  # nobody connected: the VM still goes away
            assert not os.path.exists(vm.path)
            assert vm.summary()["status"] == "exited"
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_second_client_waits_in_the_backlog_like_qemus(tmp_path: Path) -> None:
    fleet = Fleet(2, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        vm = fleet.vms[0]
        first = await connect(vm.path)
        second = await trio.open_unix_socket(vm.path)  # connected: the kernel's backlog
        await first.execute("qmp_capabilities")
        await trio.testing.wait_all_tasks_blocked()
        assert vm.sim.clients == [1]  # not accepted, so no greeting either
        await first.stream.aclose()
        waiting = Peer(second)
        assert "QMP" in await waiting.recv()  # accepted once the first one left
        async with second:
            assert (await waiting.execute("qmp_capabilities")) == {"return": {}}
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_multi_client_vms_greet_every_client(tmp_path: Path) -> None:
    fleet = Fleet(2, tmp_path, multi_client=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        clients = [await connect(fleet.vms[1].path) for _ in range(3)]
        for client in clients:
            assert (await client.execute("qmp_capabilities")) == {"return": {}}
        assert fleet.vms[1].sim.clients == [1, 2, 3]
        for client in clients:
            await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_part_of_a_fleet_serves_its_own_vms_only(tmp_path: Path) -> None:
    fleet = Fleet(12, tmp_path, part=range(8, 12))
    assert [vm.name for vm in fleet.vms] == ["vm08", "vm09", "vm10", "vm11"]
    assert [vm.identity for vm in fleet.vms] == fleet_identities(12)[8:]
    assert fleet.vm("vm10").name == "vm10"
    assert fleet.index_of("vm03") == 3 and fleet.index_of("vm3") is None
    with pytest.raises(KeyError, match=r"no VM named 'vm03' in the fleet \(vm08..vm11\)"):
        fleet.vm("vm03")
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        assert sorted(os.listdir(tmp_path)) == [f"vm{i:02d}.sock" for i in range(8, 12)]
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="not a range of VMs"):
        Fleet(4, tmp_path, part=range(3, 5))


@pytest.mark.trio
async def test_transcripts_are_kept_only_when_asked_for(tmp_path: Path) -> None:
    for keep in (0, 4):
        where = tmp_path / str(keep)
        where.mkdir()
        fleet = Fleet(2, where, transcript=keep)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_fleet, fleet, control=str(where / "c")))
            client = await connect(fleet.vms[0].path)
            async with client.stream:
                await client.execute("qmp_capabilities")
                for _ in range(5):
                    await client.execute("query-status")
            ctl = await connect(str(where / "c"))
            async with ctl.stream:
                await ctl.execute("qmp_capabilities")
                reply = await ctl.execute("qmpsim-transcript", {"vm": "vm0"})
            nursery.cancel_scope.cancel()
        if keep:
            assert len(reply["return"]) == keep  # the newest ones: the last replies
            assert reply["return"][-1]["json"][0]["return"]["status"] == "running"
        else:
            assert reply["error"]["desc"] == (
                "this fleet keeps no transcripts: start it with --transcript N to keep "
                "each VM's newest N entries"
            )
            assert list(fleet.vms[0].sim.transcript) == []
