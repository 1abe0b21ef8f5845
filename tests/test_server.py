"""The simulator over in-memory streams: protocol flow, policy, fan-out, time."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from test_server_peer import EPOCH, Peer, connect

from qmpsim.qmp.profiles import get_profile
from qmpsim.runtime.server import Simulator
from qmpsim.vm.machine import GuestShutdown, RtcChange

pytestmark = pytest.mark.trio


async def test_greeting_negotiation_and_commands(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        greeting = await peer.negotiate("oob")
        assert greeting == get_profile("qemu-7.2").greeting()
        reply = await peer.execute("query-status", id="a")
        assert reply == {
            "return": {"status": "running", "singlestep": False, "running": True},
            "id": "a",
        }
        assert await sim.wait_negotiated() == sim.clients[0]
        nursery.cancel_scope.cancel()


async def test_negotiation_is_required_first(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.recv()
        reply = await peer.execute("query-status")
        assert reply["error"]["class"] == "CommandNotFound"
        sim.emit("POWERDOWN")  # not negotiated yet: QEMU drops it for this client
        assert await peer.execute("qmp_capabilities") == {"return": {}}
        assert await peer.execute("query-status", id=1) == {
            "return": {"status": "running", "singlestep": False, "running": True},
            "id": 1,
        }
        assert peer.events == []
        nursery.cancel_scope.cancel()


async def test_events_come_before_the_reply_with_simulated_timestamps(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        await trio.sleep(2.5)
        assert await peer.execute("stop", id=7) == {"return": {}, "id": 7}
        (stop,) = peer.events
        assert stop["event"] == "STOP"
        stamp = stop["timestamp"]["seconds"] + stop["timestamp"]["microseconds"] / 1e6
        assert stamp == pytest.approx(EPOCH + 2.5, abs=1e-6)
        assert await peer.execute("cont") == {"return": {}}
        assert [e["event"] for e in peer.events] == ["RESUME"]
        nursery.cancel_scope.cancel()


async def test_events_fan_out_to_every_negotiated_client(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH, multi_client=True) as sim, trio.open_nursery() as nursery:
        a, _ = connect(sim, nursery)
        b, _ = connect(sim, nursery)
        c, _ = connect(sim, nursery)
        await a.negotiate()
        await b.negotiate()
        await c.recv()  # greeted, never negotiates
        assert await a.execute("stop") == {"return": {}}
        assert [e["event"] for e in a.events] == ["STOP"]
        assert (await b.recv())["event"] == "STOP"
        sim.emit("POWERDOWN")
        assert (await a.recv())["event"] == "POWERDOWN"
        assert (await b.recv())["event"] == "POWERDOWN"
        assert await c.execute("qmp_capabilities") == {"return": {}}
        assert c.events == []
        assert len(sim.transcript.events_sent("POWERDOWN")) == 2
        nursery.cancel_scope.cancel()


async def test_second_client_waits_silently_until_the_first_leaves(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        first, _ = connect(sim, nursery)
        await first.negotiate()
        second, _ = connect(sim, nursery)
        await second.send({"execute": "qmp_capabilities"})
        with trio.move_on_after(5) as waited:
            await second.recv()
        assert waited.cancelled_caught, "the second client was served while the first was on"
        assert len(sim.clients) == 1
        await first.stream.aclose()
        # Like QEMU: the greeting, then the answer to what it sent while waiting.
        assert "QMP" in await second.recv()
        assert await second.recv() == {"return": {}}
        nursery.cancel_scope.cancel()


async def test_disconnect_mid_command_then_reconnect_gets_a_fresh_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        first, _ = connect(sim, nursery)
        await first.negotiate()
        await first.send(b'{"execute": "st')
        await first.stream.aclose()
        second, _ = connect(sim, nursery)
        assert "QMP" in await second.recv()
        assert (await second.execute("stop"))["error"]["class"] == "CommandNotFound"
        assert await second.execute("qmp_capabilities") == {"return": {}}
        status = await second.execute("query-status")
        assert status["return"]["status"] == "running"  # the half-sent stop never ran
        nursery.cancel_scope.cancel()


async def test_throttled_events_are_flushed_when_due(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        start = trio.current_time()
        sim.cause(RtcChange(10))
        sim.cause(RtcChange(20))
        sim.cause(RtcChange(30))  # replaces the pending one, as QEMU's throttle does
        first = await peer.recv()
        assert first["data"]["offset"] == 10
        assert trio.current_time() == start
        second = await peer.recv()
        assert second["data"]["offset"] == 30
        assert trio.current_time() == pytest.approx(start + 1.0)
        nursery.cancel_scope.cancel()


async def test_bad_input_gets_qemu_errors_and_the_session_goes_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        await peer.send(b"[1, 2]")
        assert (await peer.recv())["error"]["desc"] == "QMP input must be a JSON object"
        await peer.send(b'{"execute": 3}')
        assert (await peer.recv())["error"]["class"] == "GenericError"
        assert (await peer.execute("no-such"))["error"]["class"] == "CommandNotFound"
        assert (await peer.execute("query-status"))["return"]["running"] is True
        nursery.cancel_scope.cancel()


async def test_a_machine_failure_answers_an_error_and_spares_the_server(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()

        def broken(command: str, arguments: object) -> object:
            raise RuntimeError("boom")

        with monkeypatch.context() as patch:
            patch.setattr(sim.machine, "execute", broken)
            reply = await peer.execute("query-status", id=1)
        assert reply == {
            "error": {"class": "GenericError", "desc": "qmpsim internal error: boom"},
            "id": 1,
        }
        assert (await peer.execute("query-status"))["return"]["running"] is True
        nursery.cancel_scope.cancel()


async def test_quit_sends_shutdown_then_reply_then_closes(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH, multi_client=True) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        other, _ = connect(sim, nursery)
        await peer.negotiate()
        await other.negotiate()
        assert await peer.execute("quit", id="q") == {"return": {}, "id": "q"}
        assert [e["event"] for e in peer.events] == ["SHUTDOWN"]
        await peer.recv_eof()
        assert (await other.recv())["event"] == "SHUTDOWN"
        await other.recv_eof()
        await sim.wait_exited()
        assert sim.exited
        sim.reset()
        assert not sim.exited and sim.machine.status == "running"


async def test_a_stream_served_after_the_vm_exited_gets_no_greeting(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="qmpsim")
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        assert await peer.execute("quit") == {"return": {}}
        await peer.recv_eof()
        late, _ = connect(sim, nursery)
        await late.recv_eof()
        await sim.wait_no_clients()
    assert [r.getMessage() for r in caplog.records] == []


async def test_a_guest_shutdown_exits_the_vm_and_ends_connections(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        events = sim.cause(GuestShutdown())
        assert [e.name for e in events] == ["SHUTDOWN"]
        assert (await peer.recv())["data"]["guest"] is True
        await peer.recv_eof()
        await sim.wait_exited()
        await sim.wait_no_clients()
        assert sim.clients == []


async def test_a_client_that_stops_reading_is_dropped_alone(autojump_clock: trio.abc.Clock) -> None:
    sim = Simulator(epoch=EPOCH, multi_client=True, max_output_buffer=2000)
    async with sim, trio.open_nursery() as nursery:
        lazy, _ = connect(sim, nursery, lockstep=True)
        busy, _ = connect(sim, nursery)
        await lazy.negotiate()
        await busy.negotiate()
        for _ in range(40):
            sim.emit("POWERDOWN")
            await trio.testing.wait_all_tasks_blocked()  # the busy client keeps up
        for _ in range(40):
            assert (await busy.recv())["event"] == "POWERDOWN"
        with pytest.raises(EOFError):
            while True:
                await lazy.recv()
        assert len(sim.clients) == 1
        assert (await busy.execute("query-status"))["return"]["running"] is True
        nursery.cancel_scope.cancel()


async def test_a_reply_bigger_than_the_bound_reaches_a_slow_reader(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = Simulator(epoch=EPOCH, max_output_buffer=2000)
    async with sim, trio.open_nursery() as nursery:
        slow, _ = connect(sim, nursery, lockstep=True)  # each write waits for a read
        await slow.negotiate()
        big = "x" * 20_000  # QEMU echoes any id whole: one message, ten times the bound
        await slow.send({"execute": "query-status", "id": big})
        await trio.testing.wait_all_tasks_blocked()  # the writer is in the middle of it
        for _ in range(5):
            sim.emit("POWERDOWN")  # queued behind it: well within the bound
        assert (await slow.recv())["id"] == big
        assert [(await slow.recv())["event"] for _ in range(5)] == ["POWERDOWN"] * 5
        assert (await slow.execute("query-status", id=2))["id"] == 2
        nursery.cancel_scope.cancel()


async def test_a_big_reply_does_not_widen_the_bound_for_the_backlog(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = Simulator(epoch=EPOCH, max_output_buffer=2000)
    async with sim, trio.open_nursery() as nursery:
        lazy, _ = connect(sim, nursery, lockstep=True)
        await lazy.negotiate()
        await lazy.send({"execute": "query-status", "id": "x" * 20_000})
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(40):  # ~4,000 bytes behind the reply, which nobody reads
            sim.emit("POWERDOWN")
        await sim.wait_no_clients()
        nursery.cancel_scope.cancel()


async def test_simulator_must_be_entered_to_listen() -> None:
    with pytest.raises(RuntimeError, match="async with Simulator"):
        await Simulator().listen_tcp()


async def test_body_exception_comes_out_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with Simulator():
            raise KeyError("x")


async def test_peer_helper_reports_eof(autojump_clock: trio.abc.Clock) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        peer, _ = connect(sim, nursery)
        await peer.recv()
        sim.disconnect()
        with pytest.raises(EOFError):
            await peer.recv()
        assert isinstance(peer, Peer) and peer.eof
