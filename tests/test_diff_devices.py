"""Devices against real QEMU 7.2 and 10.0: device_add's refusals, unplugs, QOM and query-pci.

A ``-M pc`` whose firmware only halts has no guest OS, so the test plays the
guest: where a real guest's ACPI ``_EJ0`` method writes the PCI hotplug eject
register (port 0xae08, one bit per slot of bus 0), the test writes it through
``human-monitor-command``, and qmpsim's machine undergoes
:class:`~qmpsim.vm.machine.DeviceEjected`.  USB devices and virtio-serial ports
leave without a guest.  DEVICE_DELETED comes after the reply in both; the test
reads until the events it expects have come, then compares every message with
timestamps masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from qemu_harness import Referee, qemu_process
from test_diff_machine import RealMonitor

from qmpsim.qmp.profiles import ProfileSpec, get_profile
from qmpsim.qmp.protocol import Request, ServerConnection
from qmpsim.vm.machine import (
    ChardevConfig,
    CommandError,
    DeviceEjected,
    Machine,
    ManualClock,
    VmConfig,
)

pytestmark = pytest.mark.qemu

Message = dict[str, Any]
EJECT_PORT = 0xAE08  # PIIX4 ACPI PCI hotplug: B0EJ, a write ejects the slots whose bits are set


@pytest.fixture
def halting_bios(tmp_path: Path) -> str:
    path = tmp_path / "halt.bin"
    path.write_bytes(b"\xf4" * 65536)
    return str(path)


def profile_for(referee: Referee) -> ProfileSpec:
    return get_profile(referee.profile)


class Sim:
    """The machine behind qmpsim's protocol; events due after a reply follow it."""

    def __init__(self, profile: ProfileSpec, vm: VmConfig) -> None:
        self.machine = Machine(vm, profile, ManualClock())
        self.conn = ServerConnection(profile)
        self.conn.greeting()
        self.messages: list[Message] = []
        self.execute("qmp_capabilities")
        self.messages.clear()

    def _out(self, data: bytes) -> None:
        for line in data.split(b"\r\n")[:-1]:
            self.messages.append(json.loads(line))

    def execute(self, command: str, arguments: Message | None = None) -> None:
        request: Message = {"execute": command, **({"arguments": arguments} if arguments else {})}
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

    def eject(self, device: str) -> None:
        for event in self.machine.cause(DeviceEjected(device)):
            self._out(self.conn.send_event(event.to_json()))


class Real:
    """A real QEMU monitor that also reads the events that follow a reply."""

    def __init__(self, monitor: RealMonitor) -> None:
        self.monitor = monitor
        self.messages = monitor.messages

    def execute(self, command: str, arguments: Message | None = None, *, events: int = 0) -> None:
        self.monitor.execute(command, arguments)
        self.await_events(events)

    def await_events(self, count: int) -> None:
        while count:
            line = self.monitor.file.readline()
            assert line, "QEMU closed the monitor"
            message = json.loads(line)
            self.messages.append(message)
            count -= "event" in message

    def eject(self, slot: int, events: int) -> None:
        line = f"o /w {EJECT_PORT:#x} {1 << slot:#x}"
        start = len(self.messages)
        self.monitor.execute("human-monitor-command", {"command-line": line})
        assert self.messages.pop() == {"return": ""}  # the guest's port write is not the host's
        # the eject may be done, its events out, before QEMU writes the command's reply
        self.await_events(events - sum("event" in m for m in self.messages[start:]))


@contextmanager
def both(referee: Referee, bios: str) -> Iterator[tuple[Real, Sim]]:
    with qemu_process("-M", "pc", "-bios", bios, referee=referee) as path:
        monitor = RealMonitor(path)
        ready = path.replace("qmp.sock", "ready.sock")
        monitors = (  # the harness's two -qmp sockets, as QEMU names their chardevs
            ChardevConfig("compat_monitor0", f"unix:{path},server=on", True),
            ChardevConfig("compat_monitor1", f"disconnected:unix:{ready},server=on", True),
        )
        try:
            yield Real(monitor), Sim(profile_for(referee), VmConfig(cpus=1, chardevs=monitors))
        finally:
            monitor.close()


def masked(messages: list[Message]) -> list[Message]:
    return [{k: v for k, v in m.items() if k != "timestamp"} for m in messages]


REFUSALS: list[Message] = [
    {"driver": "nosuch", "id": "x"},
    {"driver": "memory-backend-ram", "id": "m"},
    {"driver": "pci-device", "id": "a"},
    {"driver": "isa-serial", "id": "s"},
    {"driver": "virtio-net-pci", "id": "n1", "bus": "pci.7"},
    {"driver": "virtio-net-pci", "id": "n1", "bus": "isa.0"},
    {"driver": "usb-kbd", "id": "k"},
    {"driver": "virtio-net-pci", "id": "n1", "addr": "0x01"},
    {"driver": "virtio-net-pci", "id": "n1", "addr": "0x00.2"},
    {"driver": "virtio-net-pci", "id": "n1", "bogus": "1"},  # not in device-list-properties
]


def test_device_add_refusals(real_qemu: Referee, halting_bios: str) -> None:
    with both(real_qemu, halting_bios) as (real, sim):
        steps: list[tuple[str, Message]] = [("device_add", a) for a in REFUSALS]
        steps += [
            ("device_add", {"driver": "piix3-usb-uhci", "id": "usb"}),
            ("device_add", {"driver": "usb-kbd", "id": "k", "bus": "pci.0"}),
            ("device_add", {"driver": "virtio-net-pci", "id": "n2", "bus": "usb.0"}),
            ("device_add", {"driver": "virtio-net-pci", "id": "usb"}),
            ("device_add", {"driver": "e1000", "id": "e1", "addr": "0x02"}),
            ("device_add", {"driver": "e1000", "id": "e1", "addr": "0x02.1"}),
            ("device_del", {"id": "nosuch"}),
            ("device_del", {"id": "/machine/peripheral/nosuch"}),
            ("qom-get", {"path": "/machine/peripheral/nosuch", "property": "type"}),
            ("qom-get", {"path": "usb", "property": "nosuch"}),
            ("qom-list", {"path": "/machine/peripheral"}),
        ]
        for command, args in steps:
            real.execute(command, args)
            sim.execute(command, args)
    assert masked(sim.messages) == masked(real.messages)


def test_plug_query_and_unplug(real_qemu: Referee, halting_bios: str) -> None:
    plugged: list[Message] = [
        {"driver": "virtio-net-pci", "id": "n1"},
        {"driver": "e1000", "id": "e1", "addr": "0x5"},
        {"driver": "piix3-usb-uhci", "id": "usb"},
        {"driver": "usb-kbd", "id": "k"},
        {"driver": "virtio-serial-pci", "id": "vs"},
        {"driver": "virtserialport", "id": "p1"},
        {"driver": "virtio-rng-pci", "id": "rng"},
        {"driver": "virtio-net-pci"},
    ]
    queries: list[tuple[str, Message]] = [
        ("query-pci", {}),
        ("qom-list", {"path": "/machine/peripheral"}),
        ("qom-list", {"path": "/machine/peripheral-anon"}),
    ]
    gets = [
        (path, prop)
        for path in ("n1", "/machine/peripheral/e1", "k", "p1", "/machine/peripheral/rng")
        for prop in ("type", "realized", "hotpluggable", "parent_bus")
    ]
    gets += [("n1", "addr"), ("e1", "addr"), ("n1", "mac"), ("e1", "mac"), ("n1", "netdev")]
    with both(real_qemu, halting_bios) as (real, sim):
        for args in plugged:
            real.execute("device_add", args)
            sim.execute("device_add", args)
        for command, args in queries:
            real.execute(command, args)
            sim.execute(command, args)
        for path, prop in gets:
            real.execute("qom-get", {"path": path, "property": prop})
            sim.execute("qom-get", {"path": path, "property": prop})
        # without a guest: a USB device and a serial port leave at once, after the reply
        for dev in ("k", "p1"):
            real.execute("device_del", {"id": dev}, events=1)
            sim.execute("device_del", {"id": dev})
        # (a second device on the two-port UHCI would bring an automatic usb-hub along)
        real.execute("device_add", {"driver": "usb-tablet", "id": "t"})
        sim.execute("device_add", {"driver": "usb-tablet", "id": "t"})
        # PCI devices wait for the guest's eject
        for dev, slot, events in (("n1", 2, 2), ("usb", 3, 2)):
            real.execute("device_del", {"id": dev})
            sim.execute("device_del", {"id": dev})
            real.eject(slot, events)
            sim.eject(dev)
        for command, args in queries:
            real.execute(command, args)
            sim.execute(command, args)
    assert masked(sim.messages) == masked(real.messages)


def test_netdevs_and_chardevs(real_qemu: Referee, halting_bios: str, tmp_path: Path) -> None:
    sock = str(tmp_path / "c3.sock")
    steps: list[tuple[str, Message]] = [
        ("query-chardev", {}),
        ("netdev_add", {"type": "user", "id": "net0"}),
        ("netdev_add", {"type": "user", "id": "net0"}),
        ("netdev_add", {"type": "user", "id": "1bad"}),
        ("netdev_del", {"id": "nosuch"}),
        ("device_add", {"driver": "virtio-net-pci", "id": "n1", "netdev": "net0"}),
        ("device_add", {"driver": "e1000", "id": "e1", "netdev": "net0"}),
        ("device_add", {"driver": "e1000", "id": "e2", "netdev": "nosuch"}),
        ("qom-get", {"path": "n1", "property": "netdev"}),
        ("netdev_del", {"id": "net0"}),
        ("netdev_add", {"type": "user", "id": "net0"}),
        ("chardev-add", {"id": "c1", "backend": {"type": "null", "data": {}}}),
        ("chardev-add", {"id": "c1", "backend": {"type": "null", "data": {}}}),
        ("chardev-add", {"id": "c2", "backend": {"type": "ringbuf", "data": {"size": 1024}}}),
        (
            "chardev-add",
            {
                "id": "c3",
                "backend": {
                    "type": "socket",
                    "data": {
                        "addr": {"type": "unix", "data": {"path": sock}},
                        "server": True,
                        "wait": False,
                    },
                },
            },
        ),
        ("query-chardev", {}),
        ("chardev-remove", {"id": "nosuch"}),
        ("chardev-remove", {"id": "c1"}),
        ("device_add", {"driver": "virtio-serial-pci", "id": "vs"}),
        ("device_add", {"driver": "virtserialport", "id": "p1", "chardev": "c2"}),
        ("device_add", {"driver": "virtserialport", "id": "p2", "chardev": "c2"}),
        ("chardev-remove", {"id": "c2"}),
        ("query-chardev", {}),
    ]
    with both(real_qemu, halting_bios) as (real, sim):
        for command, args in steps:
            real.execute(command, args)
            sim.execute(command, args)
        real.execute("device_del", {"id": "p1"}, events=1)
        sim.execute("device_del", {"id": "p1"})
        for command, args in (("chardev-remove", {"id": "c2"}), ("query-chardev", {})):
            real.execute(command, args)
            sim.execute(command, args)
    assert masked(sim.messages) == masked(real.messages)
