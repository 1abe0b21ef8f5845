"""The ``trio_qmp_server`` fixture: the simulator in the test's own trio run."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from qmpsim.testing.pytest_plugin import QmpServer, TrioQmpServer

pytest_plugins = ["pytester"]


class TrioClient:
    """A minimal QMP client over any trio stream; events are kept aside."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    async def read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            assert data, "the server closed the connection"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    async def execute(self, command: str) -> dict[str, Any]:
        await self.stream.send_all(json.dumps({"execute": command}).encode())
        while "event" in (message := await self.read()):
            self.events.append(message)
        return message

    async def next_event(self) -> dict[str, Any]:
        return self.events.pop(0) if self.events else await self.read()

    @classmethod
    async def negotiated(cls, stream: trio.abc.Stream) -> TrioClient:
        client = cls(stream)
        assert "QMP" in await client.read()
        assert await client.execute("qmp_capabilities") == {"return": {}}
        return client


@pytest.mark.trio
@pytest.mark.qmpsim(scenario="disk-read-error-stop", strict=True)
async def test_a_scenario_plays_in_virtual_time(
    trio_qmp_server: TrioQmpServer, autojump_clock: trio.testing.MockClock
) -> None:
    client = await TrioClient.negotiated(trio_qmp_server.open_stream())
    start = trio.current_time()
    assert (await client.next_event())["event"] == "BLOCK_IO_ERROR"
    assert (await client.next_event())["event"] == "STOP"
    assert trio.current_time() - start == pytest.approx(2.0)  # the scenario's `wait: 2s`
    assert trio_qmp_server.status == "io-error"
    # The path is still down: the retried read fails again.
    assert await client.execute("cont") == {"return": {}}
    names = [(await client.next_event())["event"] for _ in range(3)]
    assert names == ["RESUME", "BLOCK_IO_ERROR", "STOP"]
    await trio_qmp_server.wait_for_command("cont")
    assert await client.execute("cont") == {"return": {}}
    assert (await client.next_event())["event"] == "RESUME"
    await trio_qmp_server.wait_scenario()
    assert trio_qmp_server.status == "running"
    trio_qmp_server.assert_command_sent("cont", count=2)


@pytest.mark.trio
async def test_unix_socket_client_and_run_scenario(trio_qmp_server: TrioQmpServer) -> None:
    await trio_qmp_server.run_scenario("vnc-probe", seed=3)
    assert trio_qmp_server.path == trio_qmp_server.address
    stream = await trio.open_unix_socket(trio_qmp_server.path)
    async with stream:
        client = await TrioClient.negotiated(stream)
        assert await trio_qmp_server.wait_for_client() == 1
        assert (await client.execute("query-vnc"))["return"]["enabled"] is True
        request = await trio_qmp_server.wait_for_command("query-vnc")
        assert request == {"execute": "query-vnc"}


@pytest.mark.trio
@pytest.mark.qmpsim(vm={"vnc": {"port": 5901}})
async def test_causes_and_emit(trio_qmp_server: TrioQmpServer) -> None:
    client = await TrioClient.negotiated(trio_qmp_server.open_stream())
    (connected,) = trio_qmp_server.cause("vnc-connect", client="alice")
    assert await client.next_event() == connected
    assert connected["data"]["server"]["service"] == "5901"
    sent = trio_qmp_server.emit("POWERDOWN")
    assert await client.next_event() == sent
    trio_qmp_server.override_reply("query-name", {"name": "web"})
    assert await client.execute("query-name") == {"return": {"name": "web"}}
    trio_qmp_server.assert_event_sent("VNC_CONNECTED", count=1)


def test_strict_mode_report_in_a_trio_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
import json
import pytest
import trio

@pytest.mark.trio
@pytest.mark.qmpsim(scenario="watchdog-pause", strict=True)
async def test_watchdog(trio_qmp_server, autojump_clock):
    stream = trio_qmp_server.open_stream()
    await stream.receive_some()
    await stream.send_all(b'{"execute": "qmp_capabilities"}{"execute": "system_reset"}')
    await trio_qmp_server.wait_for_command("system_reset")
    await trio.sleep(70)
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "qmpsim strict mode: the client did not do what scenario 'watchdog-pause' (*) expects",
            "unexpected commands:",
            '  {"execute": "system_reset"}  (+*s)',
            "unmet expectations:",
            "  until cont (*watchdog-pause.yaml:*): timed out after *s",
        ]
    )


def test_the_trio_fixture_needs_a_trio_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_sync(trio_qmp_server):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Trio fixtures can only be used by Trio tests*"])


@pytest.mark.trio
async def test_run_scenario_replaces_the_one_playing(
    trio_qmp_server: TrioQmpServer, autojump_clock: trio.testing.MockClock
) -> None:
    await trio_qmp_server.run_scenario("vnc-probe")
    client = await TrioClient.negotiated(trio_qmp_server.open_stream())
    assert (await client.next_event())["event"] == "VNC_CONNECTED"
    await trio_qmp_server.run_scenario("watchdog-pause")
    assert (await client.next_event())["event"] == "WATCHDOG"
    assert (await client.next_event())["event"] == "STOP"
    await trio.sleep(10)
    names = [e["event"] for e in trio_qmp_server.transcript.events_sent()]
    assert names == ["VNC_CONNECTED", "WATCHDOG", "STOP"]


@pytest.mark.trio
async def test_the_threaded_fixture_serves_a_trio_client_too(qmp_server: QmpServer) -> None:
    async with await trio.open_unix_socket(qmp_server.path) as stream:
        client = await TrioClient.negotiated(stream)
        assert await client.execute("stop") == {"return": {}}
        # Blocking waits go to a worker thread so that this trio run keeps going.
        request = await trio.to_thread.run_sync(qmp_server.wait_for_command, "stop")
        assert request == {"execute": "stop"}
        assert (await client.next_event())["event"] == "STOP"
    assert qmp_server.status == "paused"
