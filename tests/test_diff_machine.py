"""The machine against a real QEMU 7.2: events, replies and run states must agree.

Each test runs the same commands on a fresh ``qemu-system-x86_64`` and on a
:class:`~qmpsim.vm.machine.Machine` behind qmpsim's protocol, then compares the
parsed messages after masking what legitimately differs (timestamps, client
ports, the version string in HMP output).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from qemu_harness import QEMU_7_2 as REFEREE_7_2
from qemu_harness import SAFETY_TIMEOUT, Referee, connect_unix, mask, qemu_process

from qmpsim.qmp.profiles import QEMU_7_2, ProfileSpec, get_profile, validate_event
from qmpsim.qmp.protocol import Request, ServerConnection
from qmpsim.vm.machine import (
    Cause,
    CommandError,
    DiskConfig,
    Machine,
    ManualClock,
    VmConfig,
    VncConfig,
    VncConnect,
    VncDisconnect,
    VncInitialize,
)

pytestmark = pytest.mark.qemu

Message = dict[str, Any]


def _masked(message: Message) -> Message:
    out = {k: v for k, v in message.items() if k != "timestamp"}
    data = out.get("data")
    if isinstance(data, dict) and isinstance(data.get("client"), dict):
        out["data"] = {**data, "client": {**data["client"], "service": "PORT"}}
    ret = out.get("return")
    if isinstance(ret, dict) and isinstance(ret.get("clients"), list):
        clients = [{**c, "service": "PORT"} for c in ret["clients"]]
        out["return"] = {**ret, "clients": clients}
    return out


class RealMonitor:
    """A negotiated QMP connection to a real QEMU."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connect_unix(self.sock, path)
        self.sock.settimeout(SAFETY_TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.messages: list[Message] = []
        self.raw: list[bytes] = []
        json.loads(self.file.readline())
        self.execute("qmp_capabilities")
        self.messages.clear()
        self.raw.clear()

    def execute(self, command: str, arguments: Message | None = None) -> Message:
        request: Message = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode())
        while True:
            line = self.file.readline()
            if not line:
                return {}
            message = json.loads(line)
            self.messages.append(message)
            self.raw.append(line)
            if "event" not in message:
                return message  # type: ignore[no-any-return]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class SimMonitor:
    """The same, on a machine behind qmpsim's protocol (bytes in, bytes out, parsed back)."""

    def __init__(self, vm: VmConfig, profile: ProfileSpec = QEMU_7_2) -> None:
        self.profile = profile
        self.machine = Machine(vm=vm, profile=profile, clock=ManualClock())
        self.conn = ServerConnection(profile)
        self.conn.greeting()
        self.messages: list[Message] = []
        self.raw: list[bytes] = []
        self.closed = False
        self.execute("qmp_capabilities")
        self.messages.clear()
        self.raw.clear()

    def _out(self, data: bytes) -> None:
        assert data.endswith(b"\r\n")
        for line in data.split(b"\r\n")[:-1]:
            self.messages.append(json.loads(line))
            self.raw.append(line + b"\r\n")

    def execute(self, command: str, arguments: Message | None = None) -> Message:
        request: Message = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.conn.receive_data(json.dumps(request).encode())
        while (item := self.conn.next_request()) is not None:
            if isinstance(item, bytes):
                self._out(item)
                continue
            assert isinstance(item, Request)
            outcome = self.machine.execute(item.command, item.arguments)
            for event in outcome.events:
                self._out(self.conn.send_event(event.to_json()))
            if isinstance(outcome.reply, CommandError):
                self._out(self.conn.send_error(item, outcome.reply.error_class, outcome.reply.desc))
            else:
                self._out(self.conn.send_return(item, outcome.reply))
            for event in self.machine.poll():
                self._out(self.conn.send_event(event.to_json()))
            if outcome.close:
                self.closed = True
        return self.messages[-1]

    def cause(self, cause: Cause) -> None:
        for event in self.machine.cause(cause):
            self._out(self.conn.send_event(event.to_json()))


def assert_same(real: list[Message], sim: list[Message], profile: ProfileSpec = QEMU_7_2) -> None:
    assert [_masked(m) for m in sim] == [_masked(m) for m in real]
    for message in sim:
        if "event" in message:
            assert validate_event(profile, message) == []


@contextmanager
def real(*args: str, referee: Referee = REFEREE_7_2) -> Iterator[RealMonitor]:
    with qemu_process(*args, referee=referee) as path:
        monitor = RealMonitor(path)
        try:
            yield monitor
        finally:
            monitor.close()


LIFECYCLE = [
    "query-status",
    "stop",
    "stop",
    "query-status",
    "system_powerdown",
    "system_reset",
    "query-status",
    "cont",
    "cont",
    "query-status",
    "system_reset",
    "system_powerdown",
    "query-status",
]


def test_stop_cont_reset_powerdown_and_status(real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    sim = SimMonitor(VmConfig(), profile)
    with real(referee=real_qemu) as qemu:
        for command in LIFECYCLE:
            qemu.execute(command)
            sim.execute(command)
    assert_same(qemu.messages, sim.messages, profile)
    # byte for byte too: members go out in QEMU's order
    assert [mask(line) for line in sim.raw] == [mask(line) for line in qemu.raw]


def test_quit_sends_shutdown_then_reply_then_closes(real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    sim = SimMonitor(VmConfig(), profile)
    with real(referee=real_qemu) as qemu:
        qemu.execute("stop")
        qemu.execute("quit")
        assert qemu.file.readline() == b""
        sim.execute("stop")
        sim.execute("quit")
    assert sim.closed
    assert_same(qemu.messages, sim.messages, profile)
    assert [mask(line) for line in sim.raw] == [mask(line) for line in qemu.raw]


def test_prelaunch_identity_and_hmp(real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    uuid = "12345678-1234-1234-1234-123456789abc"
    sim = SimMonitor(VmConfig(name="guest1", uuid=uuid, initial_state="prelaunch"), profile)
    hmp = "human-monitor-command"
    steps: list[tuple[str, Message | None]] = [
        ("query-status", None),
        (hmp, {"command-line": "info status"}),
        ("query-name", None),
        ("query-uuid", None),
        ("query-kvm", None),
        ("query-vnc", None),
        ("query-spice", None),
        ("query-block", None),
        (hmp, {"command-line": "info name"}),
        (hmp, {"command-line": "info uuid"}),
        (hmp, {"command-line": "info kvm"}),
        (hmp, {"command-line": "info nothing"}),
        (hmp, {"command-line": "  info   status  "}),
        (hmp, {"command-line": "info status now"}),
        (hmp, {"command-line": "info balloon"}),
        (hmp, {"command-line": "info status", "cpu-index": 0}),
        ("cont", None),
        (hmp, {"command-line": "stop"}),
        (hmp, {"command-line": "info status"}),
        (hmp, {"command-line": "system_reset"}),
        (hmp, {"command-line": "info status"}),
    ]
    with real("-S", "-name", "guest1", "-uuid", uuid, referee=real_qemu) as qemu:
        for command, args in steps:
            qemu.execute(command, args)
            sim.execute(command, args)
    assert_same(qemu.messages, sim.messages, profile)
    assert [mask(line) for line in sim.raw] == [mask(line) for line in qemu.raw]


def test_query_block_of_a_virtio_disk(real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    with tempfile.TemporaryDirectory(prefix="qmpsim-disk-") as tmp:
        image = os.path.join(tmp, "disk0.raw")
        with open(image, "wb") as f:
            f.truncate(1 << 20)
        drive = f"file={image},format=raw,if=virtio,werror=stop,rerror=report"
        with real("-M", "pc", "-S", "-drive", drive, referee=real_qemu) as qemu:
            (real_info,) = qemu.execute("query-block")["return"]
    node = real_info["inserted"]["node-name"]
    disk = DiskConfig(
        name="virtio0",
        node_name=node,
        file=image,
        format="raw",
        virtual_size=1 << 20,
        on_write_error="stop",
    )
    (sim_info,) = SimMonitor(VmConfig(disks=(disk,)), profile).execute("query-block")["return"]
    real_info["inserted"]["image"]["actual-size"] = sim_info["inserted"]["image"]["actual-size"]
    assert sim_info == real_info


def _event_bytes(lines: list[bytes]) -> list[bytes]:
    return [_PORT.sub(b'"service": "P"', mask(line)) for line in lines if b'"event"' in line]


_PORT = re.compile(rb'"service": "\d+"')


def _rfb_handshake(port: int) -> socket.socket:
    """Version exchange, security type None, ClientInit; returns after ServerInit."""
    client = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
    version = client.recv(12)
    assert version.startswith(b"RFB 003.")
    client.sendall(b"RFB 003.008\n")
    count = client.recv(1)[0]
    types = client.recv(count)
    assert 1 in types
    client.sendall(b"\x01")
    assert client.recv(4) == b"\x00\x00\x00\x00"
    client.sendall(b"\x01")  # shared
    server_init = client.recv(1024)
    assert len(server_init) >= 24
    return client


def _wait_no_vnc_clients(qemu: RealMonitor) -> None:
    for _ in range(500):  # QEMU notices a closed socket on its own time
        if not qemu.execute("query-vnc")["return"]["clients"]:
            return
    pytest.fail("QEMU never noticed the VNC client leaving")


def test_vnc_client_connects_authenticates_and_leaves(real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    # QEMU binds the first free display from :40 to :99 itself, and says which.
    with real("-M", "pc", "-S", "-vnc", "127.0.0.1:40,to=99", referee=real_qemu) as qemu:
        port = int(qemu.execute("query-vnc")["return"]["service"])
        client = _rfb_handshake(port)
        qemu.execute("query-vnc")
        client.close()
        _wait_no_vnc_clients(qemu)
        # a client that leaves before authenticating
        lurker = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
        assert lurker.recv(12).startswith(b"RFB")
        lurker.close()
        _wait_no_vnc_clients(qemu)
    real_events = [m for m in qemu.messages if "event" in m]
    real_replies = [m for m in qemu.messages if "event" not in m]

    sim = SimMonitor(VmConfig(vnc=VncConfig(port=port)), profile)
    sim.execute("query-vnc")
    sim.cause(VncConnect("viewer"))
    sim.cause(VncInitialize("viewer"))
    sim.execute("query-vnc")
    sim.cause(VncDisconnect("viewer"))
    sim.execute("query-vnc")
    sim.cause(VncConnect("lurker"))
    sim.cause(VncDisconnect("lurker"))
    sim.execute("query-vnc")
    sim_events = [m for m in sim.messages if "event" in m]
    sim_replies = [m for m in sim.messages if "event" not in m]

    assert [m["event"] for m in real_events] == [
        "VNC_CONNECTED",
        "VNC_INITIALIZED",
        "VNC_DISCONNECTED",
        "VNC_CONNECTED",
        "VNC_DISCONNECTED",
    ]
    assert_same(real_events, sim_events, profile)
    assert _event_bytes(sim.raw) == _event_bytes(qemu.raw)
    # the replies: no client, one client, (polling, as long as QEMU took), no client
    assert_same(real_replies[:2], sim_replies[:2], profile)
    assert_same(real_replies[-1:], sim_replies[-1:], profile)
