"""Two simulators migrate over a real socket: the source's events and run states, the
destination waiting in inmigrate and resuming (RESUME) when the source completes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from test_server_peer import EPOCH, Peer, connect

from qmpsim.runtime.server import Simulator
from qmpsim.vm.machine import GuestConfig, VmConfig

pytestmark = pytest.mark.trio

EVENTS_ON = {"capabilities": [{"capability": "events", "state": True}]}
POSTCOPY_ON = {
    "capabilities": [
        {"capability": "events", "state": True},
        {"capability": "postcopy-ram", "state": True},
    ]
}
PC = {"machine": "pc", "cpus": 1, "guest": GuestConfig()}


async def until(peer: Peer, done: Callable[[dict[str, Any]], bool]) -> list[str]:
    """The events ``peer`` receives up to the one ``done`` accepts: name (status)."""
    seen = []
    while True:
        event = await peer.recv()
        status = (event.get("data") or {}).get("status")
        seen.append(event["event"] + (f" {status}" if status else ""))
        if done(event):
            return seen


def migration(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "MIGRATION" and e["data"]["status"] == status


async def status(peer: Peer) -> str:
    return str((await peer.execute("query-status"))["return"]["status"])


async def test_a_vm_migrates_to_a_second_one_over_a_unix_socket(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    uri = f"unix:{tmp_path / 'migrate.sock'}"
    destination = Simulator(vm=VmConfig(**PC, incoming="defer"), epoch=EPOCH)
    source = Simulator(vm=VmConfig(**PC), epoch=EPOCH)
    async with destination as dst, source as src, trio.open_nursery() as nursery:
        d, _ = connect(dst, nursery)
        s, _ = connect(src, nursery)
        for peer in (d, s):
            await peer.negotiate()
            await peer.execute("migrate-set-capabilities", EVENTS_ON)
        assert await status(d) == "inmigrate"
        assert (await d.execute("migrate-incoming", {"uri": uri})) == {"return": {}}
        assert [e["data"]["status"] for e in d.events] == ["setup"]
        assert await s.execute("migrate", {"uri": uri}) == {"return": {}}
        # a booted guest's 32 MiB of data take over QEMU's first 100 ms: one more sync
        assert await until(s, migration("completed")) == [
            "MIGRATION_PASS",
            "MIGRATION active",
            "MIGRATION_PASS",
            "STOP",
            "MIGRATION_PASS",
            "MIGRATION completed",
        ]
        assert await until(d, migration("completed")) == [
            "MIGRATION active",
            "RESUME",
            "MIGRATION completed",
        ]
        assert await status(s) == "postmigrate"
        assert await status(d) == "running"
        assert (await d.execute("query-migrate"))["return"] == {"status": "completed"}
        nursery.cancel_scope.cancel()


async def test_a_destination_started_paused_waits_for_cont(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    path = tmp_path / "in.sock"
    paused = VmConfig(**PC, incoming=f"unix:{path}", initial_state="prelaunch")
    async with (
        Simulator(vm=paused, epoch=EPOCH) as dst,
        Simulator(vm=VmConfig(**PC), epoch=EPOCH) as src,
        trio.open_nursery() as nursery,
    ):
        d, _ = connect(dst, nursery)
        s, _ = connect(src, nursery)
        await d.negotiate()
        await s.negotiate()
        listening = (await d.execute("query-migrate"))["return"]
        assert listening == {"socket-address": [{"path": str(path), "type": "unix"}]}
        await d.execute("migrate-set-capabilities", EVENTS_ON)
        await s.execute("migrate", {"uri": f"unix:{path}"})
        assert await until(d, migration("completed")) == ["MIGRATION active", "MIGRATION completed"]
        assert await status(d) == "paused"
        await d.execute("cont")
        assert [e["event"] for e in d.events] == ["RESUME"]
        nursery.cancel_scope.cancel()


async def test_cont_while_waiting_lets_the_vm_run_once_its_state_came(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    uri = "tcp:127.0.0.1:0"
    async with (
        Simulator(
            vm=VmConfig(**PC, incoming="defer", initial_state="prelaunch"), epoch=EPOCH
        ) as dst,
        Simulator(vm=VmConfig(**PC), epoch=EPOCH) as src,
        trio.open_nursery() as nursery,
    ):
        d, _ = connect(dst, nursery)
        s, _ = connect(src, nursery)
        await d.negotiate()
        await s.negotiate()
        await d.execute("migrate-incoming", {"uri": uri})
        (where,) = (await d.execute("query-migrate"))["return"]["socket-address"]
        assert where["host"] == "127.0.0.1" and where["type"] == "inet" and where["ipv4"]
        assert await d.execute("cont") == {"return": {}}
        assert d.events == []
        await s.execute("migrate", {"uri": f"tcp:127.0.0.1:{where['port']}"})
        assert await until(d, lambda e: e["event"] == "RESUME") == ["RESUME"]
        assert await status(d) == "running"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("postcopy", [False, True], ids=["precopy", "postcopy"])
async def test_the_destination_going_away_fails_the_source(
    autojump_clock: trio.abc.Clock, tmp_path: Path, postcopy: bool
) -> None:
    """Precopy fails (the source runs on); postcopy pauses (the guest ran on the
    destination: the source stays stopped, waiting for a recovery)."""
    uri = f"unix:{tmp_path / 'migrate.sock'}"
    caps = POSTCOPY_ON if postcopy else EVENTS_ON
    async with Simulator(vm=VmConfig(**PC), epoch=EPOCH) as src, trio.open_nursery() as nursery:
        s, _ = connect(src, nursery)
        await s.negotiate()
        await s.execute("migrate-set-capabilities", caps)
        await s.execute("migrate-set-parameters", {"max-bandwidth": 100_000})
        async with Simulator(vm=VmConfig(**PC, incoming=uri), epoch=EPOCH) as dst:
            d, _ = connect(dst, nursery)
            await d.negotiate()
            await d.execute("migrate-set-capabilities", caps)
            await s.execute("migrate", {"uri": uri})
            await until(s, migration("active"))
            if postcopy:
                await s.execute("migrate-start-postcopy")
                await until(d, lambda e: e["event"] == "RESUME")
        # the destination is gone: its end of the connection closed
        if postcopy:
            assert (await until(s, migration("postcopy-paused")))[-1] == "MIGRATION postcopy-paused"
            assert (await s.execute("query-migrate"))["return"]["status"] == "postcopy-paused"
            assert await status(s) == "finish-migrate"
        else:
            assert await until(s, migration("failed")) == ["MIGRATION failed"]
            info = (await s.execute("query-migrate"))["return"]
            error = "Unable to write to socket: Broken pipe"
            assert info == {"status": "failed", "error-desc": error}
            assert await status(s) == "running"
        nursery.cancel_scope.cancel()


async def test_cancel_fails_the_destination_which_exits(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    uri = f"unix:{tmp_path / 'migrate.sock'}"
    async with (
        Simulator(vm=VmConfig(**PC, incoming=uri), epoch=EPOCH) as dst,
        Simulator(vm=VmConfig(**PC), epoch=EPOCH) as src,
        trio.open_nursery() as nursery,
    ):
        d, _ = connect(dst, nursery)
        s, _ = connect(src, nursery)
        for peer in (d, s):
            await peer.negotiate()
            await peer.execute("migrate-set-capabilities", EVENTS_ON)
        await s.execute("migrate-set-parameters", {"max-bandwidth": 100_000})
        await s.execute("migrate", {"uri": uri})
        await until(d, migration("active"))
        await s.execute("migrate_cancel")
        assert await until(d, migration("failed")) == ["MIGRATION failed"]
        await d.recv_eof()  # QEMU exits: a half-loaded VM cannot run
        assert dst.exited
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "uri, error",
    [
        ("unix:/nonexistent/qmpsim.sock", "No such file or directory"),
        ("tcp:127.0.0.1:1", "Connection refused"),
    ],
)
async def test_no_one_listening_fails_after_the_reply(
    autojump_clock: trio.abc.Clock, uri: str, error: str
) -> None:
    async with Simulator(vm=VmConfig(**PC), epoch=EPOCH) as src, trio.open_nursery() as nursery:
        s, _ = connect(src, nursery)
        await s.negotiate()
        await s.execute("migrate-set-capabilities", EVENTS_ON)
        assert await s.execute("migrate", {"uri": uri}) == {"return": {}}
        assert [e["data"]["status"] for e in s.events] == ["setup"]
        assert await until(s, migration("failed")) == ["MIGRATION failed"]
        info = (await s.execute("query-migrate"))["return"]
        assert info["error-desc"] == f"Failed to connect to '{uri.partition(':')[2]}': {error}"
        nursery.cancel_scope.cancel()


async def test_postcopy_pauses_recovers_and_completes_between_two_simulators(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    uri, again = (f"unix:{tmp_path / name}" for name in ("migrate.sock", "recover.sock"))
    destination = Simulator(vm=VmConfig(**PC, incoming=uri), epoch=EPOCH)
    source = Simulator(vm=VmConfig(**PC), epoch=EPOCH)
    async with destination as dst, source as src, trio.open_nursery() as nursery:
        d, _ = connect(dst, nursery)
        s, _ = connect(src, nursery)
        for peer in (d, s):
            await peer.negotiate()
            await peer.execute("migrate-set-capabilities", POSTCOPY_ON)
        slow = {"max-bandwidth": 20_000, "max-postcopy-bandwidth": 20_000}
        await s.execute("migrate-set-parameters", slow)
        await s.execute("migrate", {"uri": uri})
        assert await until(s, migration("active")) == ["MIGRATION_PASS", "MIGRATION active"]
        assert await until(d, migration("active")) == ["MIGRATION active"]
        await s.execute("migrate-start-postcopy")
        assert await until(s, lambda e: e["event"] == "MIGRATION_PASS") == [
            "MIGRATION postcopy-active",
            "STOP",
            "MIGRATION_PASS",
        ]
        # the destination runs as soon as the source handed the VM over
        assert await until(d, lambda e: e["event"] == "RESUME") == [
            "MIGRATION postcopy-active",
            "RESUME",
        ]
        assert await status(d) == "running"
        await s.execute("migrate-pause")  # the source shuts the connection: both pause
        assert (await until(s, migration("postcopy-paused")))[-1] == "MIGRATION postcopy-paused"
        assert await until(d, migration("postcopy-paused")) == ["MIGRATION postcopy-paused"]
        assert not dst.machine.exited and await status(d) == "running"
        assert await d.execute("migrate-recover", {"uri": again}) == {"return": {}}
        assert await s.execute("migrate", {"uri": again, "resume": True}) == {"return": {}}
        for peer in (s, d):
            assert (await until(peer, migration("postcopy-active")))[-2:] == [
                "MIGRATION postcopy-recover",
                "MIGRATION postcopy-active",
            ]
        await s.execute("migrate-set-parameters", {"max-postcopy-bandwidth": 0})
        assert await until(s, migration("completed")) == ["MIGRATION completed"]
        assert await until(d, migration("completed")) == ["MIGRATION completed"]
        assert await status(s) == "postmigrate"
        assert await status(d) == "running"
        nursery.cancel_scope.cancel()
