"""Throttling, VNC and SPICE clients, and the block devices as query-block shows them."""

from __future__ import annotations

import random
from typing import Any

import pytest

from qmpsim.qmp.profiles import QEMU_0_14, QEMU_7_2, ProfileSpec
from qmpsim.vm.machine import (
    DiskConfig,
    DiskError,
    Event,
    Machine,
    MachineError,
    ManualClock,
    RtcChange,
    SpiceConfig,
    SpiceConnect,
    SpiceDisconnect,
    SpiceInitialize,
    VmConfig,
    VncConfig,
    VncConnect,
    VncDisconnect,
    VncInitialize,
    WatchdogExpired,
)

T0 = 1_700_000_000.0


def machine(profile: ProfileSpec = QEMU_7_2, **vm: Any) -> tuple[Machine, ManualClock]:
    clock = ManualClock(T0)
    return Machine(vm=VmConfig(**vm), profile=profile, clock=clock), clock


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


# --- throttling -------------------------------------------------------------------


def test_rtc_change_first_at_once_then_one_pending_replaced() -> None:
    m, clock = machine()
    assert [e.data for e in m.cause(RtcChange(1))] == [
        {"offset": 1, "qom-path": "/machine/unattached/device[9]"}
    ]
    clock.advance(0.25)
    assert m.cause(RtcChange(2)) == []
    clock.advance(0.25)
    assert m.cause(RtcChange(3)) == []
    assert m.next_deadline() == T0 + 1.0
    clock.advance(0.25)
    assert m.poll() == []
    clock.advance(0.25)
    (late,) = m.poll()
    # the pending one keeps the timestamp it was made with
    assert (late.data, late.time) == (
        {"offset": 3, "qom-path": "/machine/unattached/device[9]"},
        T0 + 0.5,
    )
    # a new window opened when it went out
    assert m.next_deadline() == T0 + 2.0
    clock.advance(1.0)
    assert m.poll() == []
    assert m.next_deadline() is None
    assert len(m.cause(RtcChange(4))) == 1


def test_throttling_is_per_event_type() -> None:
    m, clock = machine(watchdog="none")
    assert len(m.cause(RtcChange(1))) == 1
    assert names(m.cause(WatchdogExpired())) == ["WATCHDOG"]
    clock.advance(0.1)
    assert m.cause(WatchdogExpired()) == []
    assert names(m.pending_events()) == ["WATCHDOG"]


def test_watchdog_consequences_are_not_throttled() -> None:
    m, clock = machine(watchdog="reset")
    m.cause(WatchdogExpired())
    clock.advance(0.5)
    assert names(m.cause(WatchdogExpired())) == ["RESET"]
    clock.advance(0.5)
    assert names(m.poll()) == ["WATCHDOG"]


def test_due_events_go_out_before_the_next_ones() -> None:
    m, clock = machine()
    m.cause(RtcChange(1))
    m.cause(RtcChange(2))
    clock.advance(1.5)
    out = m.execute("stop", {})
    assert names(list(out.events)) == ["RTC_CHANGE", "STOP"]


def test_qemu_0_14_does_not_throttle() -> None:
    m, _ = machine(QEMU_0_14)
    assert [e.data for e in m.cause(RtcChange(1)) + m.cause(RtcChange(2))] == [
        {"offset": 1},
        {"offset": 2},
    ]
    assert m.next_deadline() is None


# --- VNC ---------------------------------------------------------------------------


def test_vnc_connect_initialize_disconnect_same_client() -> None:
    m, _ = machine(vnc=VncConfig(port=5901, auth="sasl"))
    (c,) = m.cause(VncConnect("a", host="127.0.0.1", service="58425"))
    assert c.to_json()["data"] == {
        "server": {
            "host": "127.0.0.1",
            "service": "5901",
            "family": "ipv4",
            "websocket": False,
            "auth": "sasl",
        },
        "client": {"host": "127.0.0.1", "service": "58425", "family": "ipv4", "websocket": False},
    }
    (i,) = m.cause(VncInitialize("a", sasl_username="luiz"))
    assert i.data is not None
    assert i.data["client"]["sasl_username"] == "luiz"
    assert m.execute("query-vnc", {}).reply["clients"] == [i.data["client"]]
    (d,) = m.cause(VncDisconnect("a"))
    assert (d.name, d.data) == ("VNC_DISCONNECTED", i.data)
    assert m.execute("query-vnc", {}).reply["clients"] == []


def test_vnc_client_that_never_authenticates() -> None:
    m, _ = machine(vnc=VncConfig())
    events = m.cause(VncConnect("a")) + m.cause(VncDisconnect("a"))
    assert names(events) == ["VNC_CONNECTED", "VNC_DISCONNECTED"]
    assert events[0].data == events[1].data


def test_vnc_client_order_is_enforced() -> None:
    m, _ = machine(vnc=VncConfig())
    with pytest.raises(MachineError, match="'a' is not connected"):
        m.cause(VncInitialize("a"))
    m.cause(VncConnect("a"))
    with pytest.raises(MachineError, match="already connected"):
        m.cause(VncConnect("a"))
    m.cause(VncInitialize("a"))
    with pytest.raises(MachineError, match="already initialized"):
        m.cause(VncInitialize("a"))
    with pytest.raises(MachineError, match="no VNC server"):
        machine()[0].cause(VncConnect("a"))


def test_vnc_ipv6_listener_gets_ipv6_clients() -> None:
    m, _ = machine(vnc=VncConfig(host="::", family="ipv6"))
    (c,) = m.cause(VncConnect("a"))
    assert c.data is not None
    assert (c.data["client"]["host"], c.data["client"]["family"]) == ("::1", "ipv6")


def test_qemu_0_14_vnc_has_no_websocket() -> None:
    m, _ = machine(QEMU_0_14, vnc=VncConfig())
    (c,) = m.cause(VncConnect("a"))
    assert c.data is not None
    assert "websocket" not in c.data["server"]


def test_query_vnc_disabled() -> None:
    assert machine()[0].execute("query-vnc", {}).reply == {"enabled": False}


# --- SPICE -------------------------------------------------------------------------


def test_spice_channels_share_one_connection_id() -> None:
    m, _ = machine(spice=SpiceConfig(port=5921, tls=True))
    events: list[Event] = []
    for channel_type in (1, 2, 3):
        events += m.cause(SpiceConnect("s", channel_type))
        events += m.cause(SpiceInitialize("s", channel_type))
    inits = [e.data for e in events if e.name == "SPICE_INITIALIZED"]
    assert len({d["client"]["connection-id"] for d in inits if d}) == 1
    assert len({d["client"]["port"] for d in inits if d}) == 3
    first = inits[0]
    assert first is not None
    assert first["server"] == {
        "host": "127.0.0.1",
        "port": "5921",
        "family": "ipv4",
        "auth": "spice",
    }
    assert first["client"]["tls"] is True
    reply = m.execute("query-spice", {}).reply
    assert (reply["port"], len(reply["channels"])) == (5921, 3)
    d = m.cause(SpiceDisconnect("s", 2))
    assert names(d) == ["SPICE_DISCONNECTED"]
    assert len(m.execute("query-spice", {}).reply["channels"]) == 2


def test_spice_channel_that_never_initializes() -> None:
    m, _ = machine(spice=SpiceConfig())
    events = m.cause(SpiceConnect("s")) + m.cause(SpiceDisconnect("s"))
    assert names(events) == ["SPICE_CONNECTED", "SPICE_DISCONNECTED"]
    with pytest.raises(MachineError, match="SPICE channel 1/0 of 's' is not connected"):
        m.cause(SpiceInitialize("s"))


def test_query_spice_disabled_as_qemu_7_2_says() -> None:
    assert machine()[0].execute("query-spice", {}).reply == {
        "enabled": False,
        "migrated": False,
        "mouse-mode": "client",
    }


# --- block devices -----------------------------------------------------------------


def test_query_block_agrees_with_block_io_error() -> None:
    m, _ = machine(disks=(DiskConfig(name="drive0", node_name="#block311"),))
    (info,) = m.execute("query-block", {}).reply
    assert (info["device"], info["inserted"]["node-name"], info["io-status"]) == (
        "drive0",
        "#block311",
        "ok",
    )
    assert list(info) == ["device", "qdev", "type", "removable", "locked", "inserted", "io-status"]


def test_duplicate_disks_and_bad_policies_are_refused() -> None:
    with pytest.raises(MachineError, match="two disks are named 'd'"):
        VmConfig(disks=(DiskConfig(name="d"), DiskConfig(name="d")))
    with pytest.raises(MachineError, match="error policy 'panic'"):
        VmConfig(disks=(DiskConfig(on_read_error="panic"),))


def test_each_disk_reports_its_own_node_name_file_and_device() -> None:
    disks = (
        DiskConfig(name="virtio0"),
        DiskConfig(name="virtio1", format="raw"),
        DiskConfig(name="virtio2", node_name="mine", file="/srv/c.qcow2"),
        DiskConfig(name="virtio3"),
    )
    m, _ = machine(disks=disks)
    infos = m.execute("query-block", {}).reply
    inserted = [i["inserted"] for i in infos]
    # QEMU's counter names the protocol node, then the format node, of each -drive
    # (virtio2's protocol node takes #block4..: its format node has a name)
    assert [i["node-name"] for i in inserted] == ["#block103", "#block309", "mine", "#block618"]
    assert [i["file"] for i in inserted] == [
        "/var/lib/qemu/virtio0.qcow2",
        "/var/lib/qemu/virtio1.img",
        "/srv/c.qcow2",
        "/var/lib/qemu/virtio3.qcow2",
    ]
    assert [i["qdev"] for i in infos] == [
        f"/machine/peripheral-anon/device[{n}]/virtio-backend" for n in range(4)
    ]
    # BLOCK_IO_ERROR names the same node as query-block
    for disk, info in zip(m.vm.disks, inserted, strict=True):
        (event,) = m.cause(DiskError(disk.name))
        assert event.data is not None
        assert event.data["node-name"] == info["node-name"]


def test_raw_and_qcow2_images_as_query_block_reports_them() -> None:
    m, _ = machine(disks=(DiskConfig(name="a", format="raw"), DiskConfig(name="b")))
    raw, qcow2 = (i["inserted"]["image"] for i in m.execute("query-block", {}).reply)
    assert (raw["format"], raw["actual-size"]) == ("raw", 4096)
    assert "cluster-size" not in raw and "format-specific" not in raw
    assert (qcow2["format"], qcow2["actual-size"], qcow2["cluster-size"]) == (
        "qcow2",
        200704,
        65536,
    )
    assert qcow2["format-specific"]["type"] == "qcow2"


def test_node_names_and_formats_are_checked() -> None:
    with pytest.raises(MachineError, match="two disks have the node name 'n'"):
        VmConfig(disks=(DiskConfig(name="a", node_name="n"), DiskConfig(name="b", node_name="n")))
    with pytest.raises(MachineError, match="format 'vmdk' is not one of raw, qcow2"):
        VmConfig(disks=(DiskConfig(format="vmdk"),))


def test_only_a_thin_disk_runs_out_of_space() -> None:
    m, _ = machine(disks=(DiskConfig(name="thick"), DiskConfig(name="thin", thin=True)))
    with pytest.raises(MachineError, match="'thick' is not thin-provisioned"):
        m.cause(DiskError("thick", "write", nospace=True))
    assert m.cause_error(DiskError("thick", "write")) is None
    (event, _stop) = m.cause(DiskError("thin", "write", nospace=True))
    assert event.data is not None and event.data["nospace"] is True


class _SamePort(random.Random):
    """A generator that draws the same number every time (as a shrunk draw may)."""

    def randint(self, a: int, b: int) -> int:
        return 40000


def test_two_live_connections_from_one_host_never_share_a_port() -> None:
    vm = VmConfig(vnc=VncConfig(), spice=SpiceConfig())
    m = Machine(vm=vm, profile=QEMU_7_2, clock=ManualClock(), rng=_SamePort())
    ports = [
        e.data["client"]["service"] for e in m.cause(VncConnect("a")) + m.cause(VncConnect("b"))
    ]
    ports += [e.data["client"]["port"] for e in m.cause(SpiceConnect("s"))]
    assert ports == ["40000", "40001", "40002"]
    m.cause(VncDisconnect("a"))
    again = m.cause(VncConnect("c"))[0].data
    assert again is not None and again["client"]["service"] == "40000"
