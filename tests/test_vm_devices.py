"""Devices: device_add's checks, unplug with and without the guest, QOM and query-pci."""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.ghash import HashOrder
from qmpsim.vm.machine import (
    CommandError,
    DeviceConfig,
    DeviceEjected,
    Event,
    GuestConfig,
    Machine,
    MachineError,
    ManualClock,
    UnplugRefused,
    VmConfig,
)


def pc(guest: GuestConfig | None = None) -> tuple[Machine, ManualClock]:
    clock = ManualClock(100.0)
    return Machine(VmConfig(cpus=1, guest=guest), get_profile("qemu-7.2"), clock), clock


def run(m: Machine, command: str, **args: Any) -> Any:
    reply = m.execute(command, args).reply
    if isinstance(reply, CommandError):
        return (reply.error_class, reply.desc)
    return reply


def data(events: list[Event]) -> list[tuple[str, Any]]:
    return [(e.name, e.data) for e in events]


@pytest.mark.parametrize(
    ("args", "desc"),
    [
        ({"driver": "nosuch", "id": "x"}, "'nosuch' is not a valid device model name"),
        ({"driver": "pci-device"}, "Parameter 'driver' expects a non-abstract device type"),
        ({"driver": "virtio-net-pci", "id": "1bad"}, "Parameter 'id' expects an identifier"),
        ({"driver": "isa-serial", "id": "s"}, "Bus 'isa.0' does not support hotplugging"),
        ({"driver": "virtio-net-pci", "bus": "pci.7"}, "Bus 'pci.7' not found"),
        ({"driver": "e1000", "bus": "isa.0"}, "Device 'e1000' can't go on ISA bus"),
        ({"driver": "usb-kbd", "id": "k"}, "No 'usb-bus' bus found for device 'usb-kbd'"),
        ({"driver": "usb-kbd", "bus": "pci.0"}, "Device 'usb-kbd' can't go on PCI bus"),
        ({"driver": "virtio-net-pci", "addr": "0x01"},
         "PCI: slot 1 function 0 not available for virtio-net-pci, in use by PIIX3,id=(null)"),
    ],
)  # fmt: skip
def test_device_add_refuses_as_qemu_does(args: dict[str, Any], desc: str) -> None:
    m, _ = pc()
    assert run(m, "device_add", **args) == ("GenericError", desc)
    assert run(m, "qom-list", path="/machine/peripheral") == [{"name": "type", "type": "string"}]


def test_a_machine_without_buses_takes_no_device() -> None:
    m = Machine(VmConfig(), get_profile("qemu-7.2"), ManualClock())
    assert run(m, "device_add", driver="virtio-net-pci", id="n1") == (
        "GenericError",
        "No 'PCI' bus found for device 'virtio-net-pci'",
    )
    assert run(m, "query-pci") == []


def test_slots_duplicates_and_what_qom_shows() -> None:
    m, _ = pc()
    assert run(m, "device_add", driver="virtio-net-pci", id="n1") == {}
    assert run(m, "device_add", driver="virtio-net-pci", id="n1") == (
        "GenericError",
        "Duplicate device ID 'n1'",
    )
    assert run(m, "device_add", driver="e1000", id="e1", addr="0x5") == {}
    assert run(m, "device_add", driver="e1000", id="e2", addr="0x05.1") == (
        "GenericError",
        "PCI: slot 5 function 0 already occupied by e1000, new func e1000 cannot be exposed to"
        " guest.",
    )
    assert run(m, "qom-get", path="/machine/peripheral/n1", property="addr") == 16
    assert run(m, "qom-get", path="e1", property="addr") == 40
    assert run(m, "qom-get", path="n1", property="mac") == "52:54:00:12:34:56"
    assert run(m, "qom-get", path="e1", property="mac") == "52:54:00:12:34:57"
    assert run(m, "qom-get", path="n1", property="parent_bus") == "/machine/i440fx/pci.0"
    assert run(m, "qom-get", path="n1", property="nosuch") == (
        "GenericError",
        "Property 'virtio-net-pci.nosuch' not found",
    )
    assert run(m, "qom-get", path="/machine/peripheral/zz", property="type") == (
        "DeviceNotFound",
        "Device '/machine/peripheral/zz' not found",
    )
    pci = run(m, "query-pci")[0]["devices"]
    assert [(d["slot"], d["function"], d["qdev_id"]) for d in pci] == [
        (0, 0, ""), (1, 0, ""), (1, 1, ""), (1, 3, ""), (2, 0, "n1"), (5, 0, "e1"),
    ]  # fmt: skip


def test_a_pci_unplug_waits_for_the_guest_then_the_backend_leaves_first() -> None:
    m, clock = pc(GuestConfig(unplug_delay=0.25))
    run(m, "device_add", driver="virtio-net-pci", id="n1")
    assert m.execute("device_del", {"id": "n1"}).events == ()
    assert [c["name"] for c in run(m, "qom-list", path="/machine/peripheral")] == ["type", "n1"]
    clock.advance(0.25)
    assert data(m.poll()) == [
        ("DEVICE_DELETED", {"path": "/machine/peripheral/n1/virtio-backend"}),
        ("DEVICE_DELETED", {"device": "n1", "path": "/machine/peripheral/n1"}),
    ]
    assert run(m, "qom-list", path="/machine/peripheral") == [{"name": "type", "type": "string"}]
    assert run(m, "device_del", id="n1") == ("DeviceNotFound", "Device 'n1' not found")


def test_without_a_guest_nothing_leaves_until_the_guest_unplugs_cause() -> None:
    m, clock = pc()
    run(m, "device_add", driver="e1000", id="e1")
    with pytest.raises(MachineError, match="no unplug of device 'e1' was requested"):
        m.cause(DeviceEjected("e1"))
    run(m, "device_del", id="e1")
    run(m, "device_del", id="e1")  # QEMU asks the guest again
    clock.advance(3600)
    assert m.poll() == []
    assert data(m.cause(DeviceEjected("e1"))) == [
        ("DEVICE_DELETED", {"device": "e1", "path": "/machine/peripheral/e1"})
    ]


def test_a_refusing_guest_keeps_the_device_and_qemu_says_nothing() -> None:
    m, clock = pc(GuestConfig(unplug="refuse", unplug_delay=0.1))
    run(m, "device_add", driver="e1000", id="e1")
    run(m, "device_del", id="e1")
    assert m.next_deadline() == 100.1
    clock.advance(0.1)
    assert m.poll() == []
    assert [c["name"] for c in run(m, "qom-list", path="/machine/peripheral")] == ["type", "e1"]
    with pytest.raises(MachineError, match="no unplug"):
        m.cause(UnplugRefused("e1"))  # the request is over
    with pytest.raises(MachineError, match="no unplug"):
        m.cause(DeviceEjected("e1"))
    run(m, "device_del", id="e1")  # asks again
    assert m.cause(UnplugRefused("e1")) == []


def test_usb_and_serial_ports_leave_without_the_guest_after_the_reply() -> None:
    m, _ = pc()
    run(m, "device_add", driver="piix3-usb-uhci", id="usb")
    run(m, "device_add", driver="usb-kbd", id="k")
    run(m, "device_add", driver="virtio-serial-pci", id="vs")
    run(m, "device_add", driver="virtserialport", id="p1")
    assert run(m, "qom-get", path="k", property="parent_bus") == "/machine/peripheral/usb/usb.0"
    assert run(m, "qom-get", path="p1", property="parent_bus") == (
        "/machine/peripheral/vs/virtio-backend/vs.0"
    )
    outcome = m.execute("device_del", {"id": "k"})
    assert outcome.events == () and outcome.reply == {}
    assert data(m.poll()) == [("DEVICE_DELETED", {"device": "k", "path": "/machine/peripheral/k"})]
    run(m, "device_del", id="p1")
    assert data(m.poll())[0][1] == {"device": "p1", "path": "/machine/peripheral/p1"}


def test_anonymous_devices_and_a_controller_that_takes_its_devices_along() -> None:
    m, _ = pc()
    run(m, "device_add", driver="virtio-net-pci")
    assert run(m, "qom-list", path="/machine/peripheral-anon")[1] == {
        "name": "device[0]",
        "type": "child<virtio-net-pci>",
    }
    run(m, "device_add", driver="piix3-usb-uhci", id="usb")
    run(m, "device_add", driver="usb-tablet", id="t")
    run(m, "device_del", id="usb")
    assert [e.data for e in m.cause(DeviceEjected("usb"))] == [
        {"device": "t", "path": "/machine/peripheral/t"},
        {"device": "usb", "path": "/machine/peripheral/usb"},
    ]


@pytest.mark.parametrize(
    ("added", "removed", "listed"),
    [
        (["n1", "k", "usb"], [], ["n1", "k", "usb"]),
        (["n1", "n4"], [], ["n1", "n4"]),
        (["vs", "x", "rng", "p1", "t"], ["p1", "t", "x"], ["rng", "vs"]),
    ],
)
def test_qom_list_follows_glibs_hash_table(
    added: list[str], removed: list[str], listed: list[str]
) -> None:
    """Orders QEMU 7.2 and 10.0 listed for these ids (tests/test_diff_devices.py)."""
    table = HashOrder()
    for key in added:
        table.add(key)
    for key in removed:
        table.remove(key)
    assert list(reversed(table.keys())) == listed


def test_a_big_table_keeps_every_key_through_resizes() -> None:
    table = HashOrder()
    keys = [f"dev{i}" for i in range(40)]
    for key in keys:
        table.add(key)
    for key in keys[:30]:
        table.remove(key)
    assert sorted(table.keys()) == sorted(keys[30:])


def test_netdevs_and_chardevs_held_by_devices() -> None:
    m, _ = pc()
    assert run(m, "netdev_add", type="user", id="net0") == {}
    assert run(m, "netdev_add", type="user", id="net0") == ("GenericError", "Duplicate ID 'net0'")
    assert run(m, "netdev_del", id="zz") == ("DeviceNotFound", "Device 'zz' not found")
    run(m, "device_add", driver="e1000", id="e1", netdev="net0")
    assert run(m, "device_add", driver="e1000", id="e2", netdev="net0") == (
        "GenericError",
        "Property 'e1000.netdev' can't take value 'net0', it's in use",
    )
    assert run(m, "qom-get", path="e1", property="netdev") == "net0"
    run(m, "chardev-add", id="c2", backend={"type": "ringbuf", "data": {}})
    assert run(m, "chardev-add", id="c2", backend={"type": "null", "data": {}}) == (
        "GenericError",
        "Chardev with id 'c2' already exists",
    )
    run(m, "device_add", driver="virtio-serial-pci", id="vs")
    run(m, "device_add", driver="virtserialport", id="p1", chardev="c2")
    assert run(m, "chardev-remove", id="c2") == ("GenericError", "Chardev 'c2' is busy")
    run(m, "device_del", id="p1")
    m.poll()
    assert run(m, "chardev-remove", id="c2") == {}
    assert run(m, "query-chardev") == []
    pty = run(m, "chardev-add", id="t", backend={"type": "pty", "data": {}})
    assert run(m, "query-chardev") == [
        {"label": "t", "filename": f"pty:{pty['pty']}", "frontend-open": False}
    ]


def test_command_line_devices_are_plugged_at_start() -> None:
    vm = VmConfig(
        machine="pc",
        devices=(
            DeviceConfig("e1000", "e1", (("addr", "0x4"),)),
            DeviceConfig("pvpanic"),  # a device the model has no QOM for
            DeviceConfig("virtio-net-pci"),
        ),
    )
    m = Machine(vm, get_profile("qemu-7.2"), ManualClock())
    assert run(m, "qom-get", path="e1", property="addr") == 32
    assert run(m, "qom-get", path="e1", property="hotplugged") is False
    anonymous = run(m, "qom-list", path="/machine/peripheral-anon")
    assert anonymous[1] == {"name": "device[0]", "type": "child<virtio-net-pci>"}
    m.execute("device_add", {"driver": "e1000", "id": "e2"})
    assert run(m, "qom-get", path="e2", property="hotplugged") is True
    m.reset()
    assert [c["name"] for c in run(m, "qom-list", path="/machine/peripheral")] == ["type", "e1"]
