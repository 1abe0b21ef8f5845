"""The simulator's hooks for drivers: waits, overrides, callbacks and faults."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_server_peer import EPOCH, connect, connect_recorded

from qmpsim.qmp.protocol import Request
from qmpsim.runtime.server import Simulator
from qmpsim.vm.machine import CommandError, DiskConfig, DiskError, Outcome, VmConfig

pytestmark = pytest.mark.trio


async def test_wait_for_command_matches_argument_subsets_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        await peer.execute("human-monitor-command", {"command-line": "info status"}, id=1)
        await peer.execute("human-monitor-command", {"command-line": "info version"}, id=2)
        request = await sim.wait_for_command(
            "human-monitor-command", {"command-line": "info version"}
        )
        assert request.id == 2
        first = await sim.wait_for_command("human-monitor-command")
        assert first.id == 1  # the other one was claimed already

        async def later() -> None:
            await trio.sleep(3)
            await peer.execute("stop", id="late")

        nursery.start_soon(later)
        assert (await sim.wait_for_command("stop")).id == "late"
        assert trio.current_time() == pytest.approx(3)
        nursery.cancel_scope.cancel()


async def test_wait_negotiated_returns_the_client(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        got: list[int] = []

        async def waiter() -> None:
            got.append(await sim.wait_negotiated())

        nursery.start_soon(waiter)
        peer, _ = connect(sim, nursery)
        await peer.recv()
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        assert await peer.execute("qmp_capabilities") == {"return": {}}
        await trio.testing.wait_all_tasks_blocked()
        assert got == sim.clients
        nursery.cancel_scope.cancel()


async def test_override_reply_once_and_for_good(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        sim.override_reply("stop", CommandError("GenericError", "nope"))
        sim.override_reply("query-name", {"name": "forever"}, once=False)
        assert await peer.execute("stop", id=1) == {
            "error": {"class": "GenericError", "desc": "nope"},
            "id": 1,
        }
        assert sim.machine.status == "running"  # overridden: the machine never saw it
        assert await peer.execute("stop") == {"return": {}}
        assert [e["event"] for e in peer.events] == ["STOP"]
        for _ in range(2):
            assert await peer.execute("query-name") == {"return": {"name": "forever"}}
        event = sim.machine.emit("POWERDOWN")
        sim.override_reply("cont", Outcome({"odd": True}, (event,)))
        assert await peer.execute("cont") == {"return": {"odd": True}}
        assert [e["event"] for e in peer.events] == ["POWERDOWN"]
        sim.reset()
        assert (await peer.execute("query-name"))["return"] == {}
        nursery.cancel_scope.cancel()


async def test_on_command_runs_after_the_reply(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        seen: list[Request] = []

        async def powerdown_after(request: Request) -> None:
            seen.append(request)
            await trio.sleep(0.5)
            sim.emit("POWERDOWN")

        remove = sim.on_command("query-status", powerdown_after)
        assert (await peer.execute("query-status", id=9))["id"] == 9
        assert peer.events == []
        assert (await peer.recv())["event"] == "POWERDOWN"
        assert [r.id for r in seen] == [9]
        remove()
        await peer.execute("query-status")
        assert len(seen) == 1
        nursery.cancel_scope.cancel()


async def test_callback_errors_are_kept_not_fatal(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()

        def broken(request: Request) -> None:
            raise ValueError("callback bug")

        sim.on_command("stop", broken)
        assert await peer.execute("stop") == {"return": {}}
        assert await peer.execute("cont") == {"return": {}}
        assert [str(e) for e in sim.errors] == ["callback bug"]
        nursery.cancel_scope.cancel()


async def test_cause_delivers_the_machine_events(autojump_clock: trio.abc.Clock) -> None:
    vm = VmConfig(disks=(DiskConfig("disk0", on_read_error="stop"),))
    async with Simulator(vm=vm, epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        events = sim.cause(DiskError("disk0"))
        assert [e.name for e in events] == ["BLOCK_IO_ERROR", "STOP"]
        for event in events:
            assert (await peer.recv()) == event.to_json()
        assert (await peer.execute("query-status"))["return"]["status"] == "io-error"
        nursery.cancel_scope.cancel()


async def test_split_next_writes_the_next_message_in_small_pieces(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, stream = connect_recorded(sim, nursery)
        await peer.negotiate()
        sim.split_next(3)
        assert await peer.execute("query-status") == {
            "return": {"status": "running", "singlestep": False, "running": True}
        }
        pieces = stream.writes[2:]
        assert all(len(p) <= 3 for p in pieces) and len(pieces) > 10
        assert await peer.execute("cont") == {"return": {}}
        assert stream.writes[-1] == b'{"return": {}}\r\n'
        with pytest.raises(ValueError):
            sim.split_next(0)
        nursery.cancel_scope.cancel()


async def test_coalesce_next_joins_two_messages_in_one_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, stream = connect_recorded(sim, nursery)
        await peer.negotiate()
        sim.coalesce_next()
        assert await peer.execute("stop") == {"return": {}}
        assert stream.writes[-1].count(b"\r\n") == 2
        assert stream.writes[-1].endswith(b'"event": "STOP"}\r\n{"return": {}}\r\n')
        nursery.cancel_scope.cancel()


async def test_delay_reply_keeps_in_band_order(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        sim.delay_reply("stop", 4.0)
        start = trio.current_time()
        await peer.send(b'{"execute": "stop", "id": 1}{"execute": "query-status", "id": 2}')
        assert (await peer.reply())["id"] == 1
        assert trio.current_time() == pytest.approx(start + 4.0)
        assert (await peer.reply())["return"]["status"] == "paused"
        assert (await peer.execute("cont", id=3))["id"] == 3  # once: no delay now
        assert trio.current_time() == pytest.approx(start + 4.0)
        with pytest.raises(ValueError):
            sim.delay_reply("stop", -1)
        nursery.cancel_scope.cancel()


async def test_raw_messages_and_disconnect(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.recv()
        sim.emit_raw({"event": "NOT_NEGOTIATED_YET"})  # dropped: not negotiated
        sim.send_raw(b'{"raw": 1}\r\n')
        assert await peer.recv() == {"raw": 1}
        assert await peer.execute("qmp_capabilities") == {"return": {}}
        sim.emit_raw({"event": "BOGUS", "data": {"x": 1}})
        sim.emit_raw(b'{"event": "ALSO_BOGUS"}\r\n')
        assert await peer.recv() == {"event": "BOGUS", "data": {"x": 1}}
        assert await peer.recv() == {"event": "ALSO_BOGUS"}
        sim.disconnect()
        await peer.recv_eof()
        nursery.cancel_scope.cancel()


async def test_before_greeting_goes_to_the_next_client_only(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH, multi_client=True) as sim, trio.open_nursery() as nursery:
        sim.before_greeting(b'{"event": "RESUME"}\r\n')
        first, _ = connect(sim, nursery)
        assert await first.recv() == {"event": "RESUME"}
        assert "QMP" in await first.recv()
        second, _ = connect(sim, nursery)
        assert "QMP" in await second.recv()  # the early bytes were written once
        nursery.cancel_scope.cancel()


async def test_an_unfinished_request_over_the_input_bound_drops_that_client_only(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        Simulator(epoch=EPOCH, multi_client=True, max_input_buffer=1000) as sim,
        trio.open_nursery() as nursery,
    ):
        hog, _ = connect(sim, nursery)
        other, _ = connect(sim, nursery)
        await hog.negotiate()
        await other.negotiate()
        # a complete request larger than the bound is fine: nothing is left waiting
        big = "x" * 5000
        assert await hog.execute("query-status", id=big) == {
            "return": {"status": "running", "singlestep": False, "running": True},
            "id": big,
        }
        await hog.stream.send_all(b'{"execute": "query-status", "id": "' + b"y" * 1500)
        await hog.recv_eof()
        assert "more than 1000 bytes of one unfinished request" in caplog.text
        assert (await other.execute("query-status"))["return"]["status"] == "running"
        nursery.cancel_scope.cancel()
