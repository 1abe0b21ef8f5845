"""The checker's device rule, on streams the device model sends and on broken ones."""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import RULES, check_events
from qmpsim.vm.machine import DeviceEjected, GuestConfig, Machine, ManualClock, VmConfig

PROFILE = get_profile("qemu-7.2")


def deleted(path: str, device: str | None = None) -> dict[str, Any]:
    data = {"path": path} if device is None else {"device": device, "path": path}
    return {"timestamp": {"seconds": 1, "microseconds": 0}, "event": "DEVICE_DELETED", "data": data}


def stop() -> dict[str, Any]:
    return {"timestamp": {"seconds": 1, "microseconds": 0}, "event": "STOP"}


def test_the_models_unplugs_pass() -> None:
    m = Machine(VmConfig(cpus=1, guest=GuestConfig(unplug="ignore")), PROFILE, ManualClock())
    m.execute("device_add", {"driver": "virtio-net-pci", "id": "n1"})
    m.execute("device_add", {"driver": "virtio-net-pci"})
    m.execute("device_del", {"id": "n1"})
    m.execute("device_del", {"id": "/machine/peripheral-anon/device[0]"})
    events = m.cause(DeviceEjected("n1")) + m.cause(
        DeviceEjected("/machine/peripheral-anon/device[0]")
    )
    assert len(events) == 4
    assert check_events([e.to_json() for e in events], PROFILE) == []


BROKEN: dict[str, list[dict[str, Any]]] = {
    "wrong-path": [deleted("/machine/peripheral/n2", "n1")],
    "backend-then-other": [
        deleted("/machine/peripheral/n1/virtio-backend"),
        deleted("/machine/peripheral/e1", "e1"),
    ],
    "backend-then-stop": [deleted("/machine/peripheral/n1/virtio-backend"), stop()],
    "backend-at-the-end": [deleted("/machine/peripheral/n1/virtio-backend")],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_device_streams_are_caught(name: str) -> None:
    found = check_events(BROKEN[name], PROFILE)
    assert [v.rule for v in found] == ["device-deleted"]
    assert "device-deleted" in RULES
