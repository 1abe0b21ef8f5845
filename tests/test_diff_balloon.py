"""The memory balloon against real QEMU 7.2 and 10.0, with the test as the guest's driver.

A ``-M pc`` with SeaBIOS and no OS has a ``virtio-balloon-pci`` whose legacy I/O
BAR the firmware places; nothing drives it.  ``balloon`` and ``query-balloon``
need no guest.  The test plays the guest's balloon driver where a real driver
reports its size: it writes the ``actual`` field of the device's configuration
(BAR 0 + 24: 20 bytes of legacy header without MSI-X, then ``num_pages``) with
``o /w``, and reads ``num_pages`` back with ``i /w`` to check the target the
model computes.  qmpsim's machine undergoes
:class:`~qmpsim.vm.balloon.BalloonResized`.  Three reports in a row show QEMU's
throttle: the first goes out, the third replaces the second and leaves when the
second is up.  Messages are compared with timestamps masked.
"""

from __future__ import annotations

import time

import pytest
from qemu_harness import Referee, qemu_process
from test_diff_devices import Real, Sim, masked, profile_for
from test_diff_machine import RealMonitor

from qmpsim.testing.conformance import check_events
from qmpsim.vm.balloon import PAGE, Balloon
from qmpsim.vm.machine import BalloonResized, DeviceConfig, ManualClock, VmConfig

pytestmark = pytest.mark.qemu

MiB = 1 << 20
RAM = 128 * MiB  # QEMU's default -m


def hmp(real: Real, line: str) -> str:
    """A port access: its reply leaves the record (a guest's I/O is not the host's)."""
    real.monitor.execute("human-monitor-command", {"command-line": line})
    reply = real.messages.pop()["return"]
    assert isinstance(reply, str)
    return reply


def balloon_port(real: Real) -> int:
    """Poll until the firmware has placed the balloon's I/O BAR; its port."""
    deadline = time.monotonic() + 30
    while True:
        real.monitor.execute("query-pci")
        (bus,) = real.messages.pop()["return"]
        (device,) = [d for d in bus["devices"] if d["qdev_id"] == "balloon0"]
        address = device["regions"][0]["address"]
        if address != -1:
            return int(address)
        if time.monotonic() > deadline:
            pytest.fail("the firmware never placed the balloon's BAR")
        time.sleep(0.05)  # polling an external process's state, not synchronising with qmpsim


class SimGuest(Sim):
    def resized(self, actual: int) -> None:
        for event in self.machine.cause(BalloonResized(actual)):
            self._out(self.conn.send_event(event.to_json()))

    def later(self, seconds: float) -> None:
        clock = self.machine.clock
        assert isinstance(clock, ManualClock)
        clock.advance(seconds)
        for event in self.machine.poll():
            self._out(self.conn.send_event(event.to_json()))


TARGETS = [0, -1, 1 << 40, 100 * MiB + 1, 32 * MiB]


def test_balloon_targets_reports_and_the_throttle(real_qemu: Referee) -> None:
    device = ("-device", "virtio-balloon-pci,id=balloon0")
    sim = SimGuest(
        profile_for(real_qemu),
        VmConfig(cpus=1, devices=(DeviceConfig("virtio-balloon-pci", "balloon0"),)),
    )
    pages_asked: list[int] = []
    with qemu_process("-M", "pc", *device, referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            port = balloon_port(real)
            real.execute("query-balloon")
            for value in TARGETS:
                real.execute("balloon", {"value": value})
                reply = hmp(real, f"i /w {port + 20:#x}")
                pages_asked.append(int(reply.rsplit("=", 1)[1], 16))
            real.execute("device_add", {"driver": "virtio-balloon-pci", "id": "b2"})
            # the guest's driver reports three sizes in a row: 64, 96 and 112 MiB given back
            for pages in (0x4000, 0x6000, 0x7000):
                hmp(real, f"o /w {port + 24:#x} {pages:#x}")
            real.await_events(2 - sum("event" in m for m in real.messages))
            real.execute("query-balloon")
        finally:
            real.monitor.close()
    sim.execute("query-balloon")
    expected_pages = []
    for value in TARGETS:
        sim.execute("balloon", {"value": value})
        target = sim.machine.part(Balloon).target()
        assert target is not None
        expected_pages.append((RAM - target) // PAGE)
    # a refused value leaves the previous target: num_pages was 0 until the first accepted
    assert pages_asked == expected_pages
    sim.execute("device_add", {"driver": "virtio-balloon-pci", "id": "b2"})
    for pages in (0x4000, 0x6000, 0x7000):
        sim.resized(RAM - pages * PAGE)
    sim.later(1.0)
    sim.execute("query-balloon")
    assert masked(sim.messages) == masked(real.messages)
    events = [m for m in real.messages if "event" in m]
    assert [e["data"]["actual"] for e in events] == [64 * MiB, 16 * MiB]
    # the checker's rules hold for what real QEMU sent
    assert check_events([m for m in real.messages if "event" in m], real_qemu.profile) == []


def test_without_a_balloon_device(real_qemu: Referee) -> None:
    steps = [("query-balloon", {}), ("balloon", {"value": 0}), ("balloon", {"value": MiB})]
    with qemu_process("-M", "pc", "-S", referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            for command, args in steps:
                real.execute(command, args)
        finally:
            real.monitor.close()
    sim = Sim(profile_for(real_qemu), VmConfig(cpus=1, initial_state="prelaunch"))
    for command, args in steps:
        sim.execute(command, args)
    assert masked(sim.messages) == masked(real.messages)
