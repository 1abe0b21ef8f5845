from __future__ import annotations

import ipaddress
import re

import pytest

from qmpsim.fakedata import FakeData
from qmpsim.qmp.profiles import QEMU_7_2, validate_event
from qmpsim.vm.machine import (
    Machine,
    ManualClock,
    SpiceConfig,
    SpiceConnect,
    SpiceInitialize,
    VmConfig,
    VncConfig,
    VncConnect,
    VncInitialize,
)


def draw(fake: FakeData) -> list[object]:
    return [
        fake.endpoint("a", "ipv6"),
        fake.connection_id("s"),
        fake.node_name(),
        fake.image_path(),
        fake.vm_name(),
        fake.uuid(),
        fake.sasl_username(),
        fake.x509_dname(),
        fake.rtc_offset(),
    ]


def test_same_seed_same_values_other_seed_other_values() -> None:
    assert draw(FakeData(7)) == draw(FakeData(7))
    assert draw(FakeData(7)) != draw(FakeData(8))


@pytest.mark.parametrize(("family", "version"), [("ipv4", 4), ("ipv6", 6)])
def test_hosts_match_their_family(family: str, version: int) -> None:
    fake = FakeData(1)
    for _ in range(20):
        assert ipaddress.ip_address(fake.host(family)).version == version


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="'ipx' is not one of ipv4, ipv6"):
        FakeData().host("ipx")


def test_a_client_keeps_its_host_and_gets_fresh_string_ports() -> None:
    fake = FakeData(2)
    first, second = fake.endpoint("a"), fake.endpoint("a")
    assert first.host == second.host
    assert isinstance(first.service, str)
    assert 32768 <= int(first.service) <= 60999
    assert fake.endpoint("b").host != first.host


def test_spice_connection_id_is_stable_per_client() -> None:
    fake = FakeData(3)
    assert fake.connection_id("s") == fake.connection_id("s")
    assert fake.connection_id("s") != fake.connection_id("t")


@pytest.mark.parametrize(
    ("interface", "index", "name"),
    [
        ("ide", 0, "ide0-hd0"),
        ("ide", 3, "ide1-hd1"),
        ("scsi", 8, "scsi1-hd1"),
        ("virtio", 2, "virtio2"),
        ("floppy", 0, "floppy0"),
        ("none", 1, "drive1"),
    ],
)
def test_drive_names_look_like_qemus(interface: str, index: int, name: str) -> None:
    assert FakeData().drive_name(interface, index) == name


def test_node_names_are_unique_and_look_generated() -> None:
    fake = FakeData(4)
    drawn = [fake.node_name() for _ in range(50)]
    assert len(set(drawn)) == 50
    assert all(re.fullmatch(r"#block\d{3}", n) for n in drawn)


def test_identities_look_real() -> None:
    fake = FakeData(5)
    assert re.fullmatch(r"[\w.]+@[A-Z.]+", fake.sasl_username())
    assert re.fullmatch(r"C=[A-Z]{2},O=[^,=]+,L=[^,=]+,CN=[\w.-]+", fake.x509_dname())
    assert re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", fake.uuid())


def test_fake_values_feed_conformant_events() -> None:
    fake = FakeData(6)
    m = Machine(
        vm=VmConfig(vnc=VncConfig(host="::", family="ipv6", auth="sasl"), spice=SpiceConfig()),
        profile=QEMU_7_2,
        clock=ManualClock(),
    )
    ep = fake.endpoint("viewer", "ipv6")
    events = m.cause(VncConnect("viewer", ep.host, ep.service, ep.family))
    events += m.cause(VncInitialize("viewer", sasl_username=fake.sasl_username()))
    sp = fake.endpoint("remote")
    events += m.cause(SpiceConnect("remote", 1, 0, sp.host, sp.service, sp.family))
    events += m.cause(SpiceInitialize("remote"))
    for event in events:
        assert validate_event(QEMU_7_2, event.to_json()) == []
    assert events[0].data is not None
    assert events[0].data["client"]["host"] == ep.host
