"""Walks and strategies draw balloon targets and a guest that sleeps and is woken, each
stream obeying the checker's suspend, balloon-change and throttle rules."""

from __future__ import annotations

from hypothesis import given, settings

from qmpsim.testing import walk
from qmpsim.testing.conformance import check_events
from qmpsim.testing.strategies import event_streams
from qmpsim.vm.machine import DeviceConfig, GuestConfig, VmConfig

PC = VmConfig(
    cpus=1,
    memory=1 << 30,
    devices=(DeviceConfig("virtio-balloon-pci", "balloon0"),),
    guest=GuestConfig(balloon_rate=256 << 20),
)
POWER = ["balloon", "guest-balloon", "guest-suspend", "system_wakeup", "stop", "cont"]


def test_seeded_walks_balloon_suspend_and_wake_up() -> None:
    seen: set[str] = set()
    for seed in range(8):
        stream = walk.generate(seed=seed, count=20, vm=PC, causes=POWER)
        assert stream == walk.generate(seed=seed, count=20, vm=PC, causes=POWER)
        assert check_events(stream, "qemu-7.2") == []
        seen |= {e["event"] for e in stream}
    assert {"BALLOON_CHANGE", "SUSPEND", "WAKEUP"} <= seen


def test_without_a_balloon_or_acpi_no_such_move_is_made() -> None:
    stream = walk.generate(seed=1, count=10, vm=VmConfig(), causes=POWER)
    assert not {e["event"] for e in stream} & {"BALLOON_CHANGE", "SUSPEND", "WAKEUP"}


@settings(max_examples=25, deadline=None)
@given(event_streams(vm=PC, causes=POWER, max_size=20))
def test_drawn_power_streams_are_conformant(stream: list[dict[str, object]]) -> None:
    assert check_events(stream, "qemu-7.2") == []
