"""The ``qmp_server`` fixture used from this suite: sync sockets, qemu.qmp, scenarios, TCP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

import pytest
from qemu.qmp import QMPClient

from qmpsim.testing.pytest_plugin import QmpServer, SimulatorError, _config
from qmpsim.vm.machine import DiskError

TIMEOUT = 10.0


class SyncClient:
    """A minimal blocking QMP client: one JSON message per line, events kept aside."""

    def __init__(self, address: str | tuple[str, int]) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self.greeting = self.read()

    def read(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "the server closed the connection"
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, **arguments: Any) -> dict[str, Any]:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.file.write(json.dumps(request).encode())
        self.file.flush()
        while "event" in (message := self.read()):
            self.events.append(message)
        return message

    def next_event(self) -> dict[str, Any]:
        return self.events.pop(0) if self.events else self.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def client(qmp_server: QmpServer) -> Iterator[SyncClient]:
    c = SyncClient(qmp_server.address)
    assert c.execute("qmp_capabilities") == {"return": {}}
    try:
        yield c
    finally:
        c.close()


def test_a_sync_client_talks_to_a_fresh_vm(qmp_server: QmpServer, client: SyncClient) -> None:
    assert client.greeting["QMP"]["version"]["qemu"]["major"] == 7
    assert client.execute("query-status")["return"]["status"] == "running"
    assert client.execute("stop") == {"return": {}}
    assert client.next_event()["event"] == "STOP"
    assert qmp_server.status == "paused"
    qmp_server.assert_command_sent("stop", count=1)
    qmp_server.assert_event_sent("STOP", count=1)
    assert [c.command for c in qmp_server.transcript.commands_sent()] == [
        "qmp_capabilities",
        "query-status",
        "stop",
    ]


def test_the_socket_is_private_and_removed_at_teardown() -> None:
    server = QmpServer(_config(None))
    server._start()
    path = server.path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert server.address == path
    server._teardown()
    assert not os.path.exists(path)
    with pytest.raises(SimulatorError, match="not running"):
        server.emit("POWERDOWN")


@pytest.mark.qmpsim(vm={"disks": [{"name": "vda", "on_read_error": "stop"}]})
def test_causes_by_object_or_by_name(qmp_server: QmpServer, client: SyncClient) -> None:
    assert qmp_server.wait_for_client() == 1
    events = qmp_server.cause(DiskError("vda"))
    assert [e["event"] for e in events] == ["BLOCK_IO_ERROR", "STOP"]
    assert client.next_event()["data"]["action"] == "stop"
    assert client.next_event()["event"] == "STOP"
    assert qmp_server.status == "io-error"
    assert client.execute("cont") == {"return": {}}
    assert client.next_event()["event"] == "RESUME"
    (event,) = qmp_server.cause("disk-error", device="vda", operation="write")
    assert event["data"]["operation"] == "write"
    assert client.next_event() == event


def test_a_cause_the_vm_cannot_have_is_a_clear_error(qmp_server: QmpServer) -> None:
    from qmpsim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="no disk named 'vdz'"):
        qmp_server.cause("disk-error", device="vdz")


def test_emit_validates_and_delivers(qmp_server: QmpServer, client: SyncClient) -> None:
    from qmpsim.errors import CatalogError

    sent = qmp_server.emit(
        "RTC_CHANGE", {"offset": 78, "qom-path": "/machine/unattached/device[8]"}
    )
    assert client.next_event() == sent
    with pytest.raises(CatalogError):
        qmp_server.emit("RTC_CHANGE", {"offset": "soon", "qom-path": ""})


@pytest.mark.qmpsim(scenario="guest-shutdown")
def test_the_marker_plays_a_shipped_scenario(qmp_server: QmpServer, client: SyncClient) -> None:
    qmp_server.wait_scenario()
    assert client.next_event()["event"] == "SHUTDOWN"
    qmp_server.wait_exited()
    assert client.file.readline() == b""  # QEMU exited: the connection ends


def test_run_scenario_and_wait_for_command(qmp_server: QmpServer) -> None:
    qmp_server.run_scenario("disk-read-error-stop")
    assert qmp_server.status == "running"
    c = SyncClient(qmp_server.path)
    try:
        c.execute("qmp_capabilities")
        c.execute("query-block")
        assert qmp_server.wait_for_command("query-block") == {"execute": "query-block"}
    finally:
        c.close()


def test_waiting_for_what_never_comes_times_out_with_what_was_sent(
    qmp_server: QmpServer, client: SyncClient
) -> None:
    with pytest.raises(TimeoutError, match=r"no cont was sent within 0.01s \(commands sent: qmp"):
        qmp_server.wait_for_command("cont", timeout=0.01)


def test_an_unknown_scenario_lists_the_shipped_ones(qmp_server: QmpServer) -> None:
    from qmpsim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"shipped: .*guest-shutdown"):
        qmp_server.run_scenario("no-such-scenario")


@pytest.mark.qmpsim(tcp=True)
def test_tcp_when_asked(qmp_server: QmpServer, client: SyncClient) -> None:
    host, port = qmp_server.address
    assert host == "127.0.0.1" and port > 0
    assert os.path.exists(qmp_server.path)  # the Unix socket is there as well
    assert client.execute("query-status")["return"]["running"] is True


def test_override_reply_and_call(qmp_server: QmpServer, client: SyncClient) -> None:
    qmp_server.override_reply("query-name", {"name": "db01"})
    assert client.execute("query-name") == {"return": {"name": "db01"}}
    assert qmp_server.call(lambda: qmp_server.sim.clients) == [1]


def test_qemu_qmp_asyncio_client(qmp_server: QmpServer) -> None:
    async def main() -> list[str]:
        qmp = QMPClient("plugin-test")
        await asyncio.wait_for(qmp.connect(qmp_server.path), TIMEOUT)
        try:
            events = qmp.events
            await qmp.execute("stop")
            await asyncio.to_thread(qmp_server.emit, "POWERDOWN")
            return [(await asyncio.wait_for(events.get(), TIMEOUT))["event"] for _ in range(2)]
        finally:
            await qmp.disconnect()

    assert asyncio.run(main()) == ["STOP", "POWERDOWN"]
    qmp_server.assert_command_sent("qmp_capabilities", {"enable": ["oob"]})


def test_importing_the_plugin_stays_cheap() -> None:
    import subprocess
    import sys

    heavy = ("trio", "hypothesis", "faker", "yaml", "qmpsim.runtime.server", "qmpsim.vm.machine")
    code = (
        "import sys, qmpsim.testing.pytest_plugin; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wait_for_command_matches_arguments_and_returns_each_once(
    qmp_server: QmpServer, client: SyncClient
) -> None:
    for line in ("info version", "info status"):
        assert "return" in client.execute("human-monitor-command", **{"command-line": line})
    hmp = "human-monitor-command"
    wanted = {"command-line": "info status"}
    assert qmp_server.wait_for_command(hmp, wanted)["arguments"] == wanted
    first = qmp_server.wait_for_command(hmp)
    assert first["arguments"] == {"command-line": "info version"}
    with pytest.raises(TimeoutError):
        qmp_server.wait_for_command(hmp, timeout=0.01)


def test_a_crashed_simulator_is_reported_not_hung() -> None:
    server = QmpServer(_config(None))
    server._start()

    async def boom() -> None:
        raise RuntimeError("the simulator broke")

    # A task that fails in the simulator's nursery ends its trio run.
    server.call(lambda: server._nursery.start_soon(boom))
    server._thread.join()
    with pytest.raises(SimulatorError, match=r"the simulator stopped: .*the simulator broke"):
        server.emit("POWERDOWN")
    with pytest.raises(BaseExceptionGroup) as info:
        server._teardown()
    assert info.group_contains(RuntimeError, match="the simulator broke")
