"""Walks and strategies draw device lifecycles: a NIC plugged, its unplug asked for, the
guest letting go of it, each stream obeying the checker's DEVICE_DELETED rules."""

from __future__ import annotations

from hypothesis import given, settings

from qmpsim.testing import walk
from qmpsim.testing.conformance import check_events
from qmpsim.testing.strategies import event_streams
from qmpsim.vm.machine import VmConfig

PC = VmConfig(cpus=1)  # a pc machine: a PCI bus to plug NICs into
DEVICES = ["device_add", "device_del", "guest-unplugs", "stop", "cont"]


def test_seeded_walks_plug_and_unplug_nics() -> None:
    deleted: list[str] = []
    for seed in range(8):
        stream = walk.generate(seed=seed, count=12, vm=PC, causes=DEVICES)
        assert check_events(stream, "qemu-7.2") == []
        deleted += [e["data"]["path"] for e in stream if e["event"] == "DEVICE_DELETED"]
    nics = [path for path in deleted if not path.endswith("/virtio-backend")]
    assert len(set(nics)) >= 3
    # each NIC's virtio backend leaves right before the NIC itself
    assert deleted == [p for nic in nics for p in (f"{nic}/virtio-backend", nic)]
    assert all(nic.startswith("/machine/peripheral/nic") for nic in nics)


def test_without_a_pci_bus_no_nic_is_plugged() -> None:
    stream = walk.generate(seed=1, count=10, vm=VmConfig(), causes=DEVICES)
    assert all(e["event"] != "DEVICE_DELETED" for e in stream)


@settings(max_examples=25, deadline=None)
@given(event_streams(vm=PC, causes=DEVICES, max_size=20))
def test_drawn_device_streams_are_conformant(stream: list[dict[str, object]]) -> None:
    assert check_events(stream, "qemu-7.2") == []
