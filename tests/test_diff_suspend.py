"""Suspend and wake-up against real QEMU 7.2 and 10.0, with the test as the guest OS.

SeaBIOS maps the PIIX4 ACPI registers and boots nothing; the test suspends the
guest as an OS does, by writing SLP_EN and a sleep type to PM1a_CNT (port
0x604): type 1 is S3 (suspend to RAM), type 2 is S4 (QEMU's PIIX4 default
``s4_val``: suspend to disk).  qmpsim's machine undergoes
:class:`~qmpsim.vm.suspend.GuestSuspend`.  After ``system_wakeup`` SeaBIOS finds
no OS waking vector and resets the machine (RESET ``guest-reset`` a little
later): a firmware's doing, not QEMU's, so each session ends with the wake-up.
Messages are compared with timestamps masked.
"""

from __future__ import annotations

import pytest
from qemu_harness import Referee, qemu_process
from test_diff_devices import Message, Real, Sim, masked, profile_for
from test_diff_guest_power import PM1A_CNT, SLP_EN, wait_for_firmware
from test_diff_machine import RealMonitor

from qmpsim.testing.conformance import check_events
from qmpsim.vm.machine import VmConfig
from qmpsim.vm.suspend import GuestSuspend

pytestmark = pytest.mark.qemu

S3, S4 = 1 << 10, 2 << 10  # SLP_TYP, bits 10-12


def guest_sleeps(real: Real, sleep_type: int, events: int) -> None:
    """The guest's write to PM1a_CNT; its reply leaves the record, the events stay."""
    line = f"o /w {PM1A_CNT:#x} {SLP_EN | sleep_type:#x}"
    before = len(real.messages)
    reply = real.monitor.execute("human-monitor-command", {"command-line": line})
    if reply:
        assert real.messages.pop() == {"return": ""}
    real.await_events(events - sum("event" in m for m in real.messages[before:]))


class SimGuest(Sim):
    def sleeps(self, disk: bool) -> None:
        for event in self.machine.cause(GuestSuspend(disk)):
            self._out(self.conn.send_event(event.to_json()))


HOST: list[tuple[str, Message | None]] = [
    ("query-status", None),
    ("system_powerdown", None),  # a suspended guest does not see the button
    ("query-status", None),
    ("stop", None),
    ("query-status", None),
    ("system_wakeup", None),  # 10.0: paused is not suspended
    ("cont", None),
    ("query-status", None),
    ("human-monitor-command", {"command-line": "info status"}),
    ("system_wakeup", None),
]


def test_the_guest_suspends_to_ram_and_the_host_wakes_it(real_qemu: Referee) -> None:
    with qemu_process("-M", "pc", "-no-shutdown", referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            wait_for_firmware(real)
            real.execute("query-current-machine")
            real.execute("system_wakeup")
            guest_sleeps(real, S3, 1)
            for command, args in HOST:
                real.execute(command, args)
        finally:
            real.monitor.close()
    sim = SimGuest(profile_for(real_qemu), VmConfig(cpus=1, no_shutdown=True))
    sim.execute("query-current-machine")
    sim.execute("system_wakeup")
    sim.sleeps(False)
    for command, args in HOST:
        sim.execute(command, args)
    assert masked(sim.messages) == masked(real.messages)
    assert [m["event"] for m in real.messages if "event" in m][-1] == "WAKEUP"
    # the checker's rules hold for what real QEMU sent
    assert check_events([m for m in real.messages if "event" in m], real_qemu.profile) == []


@pytest.mark.parametrize("no_shutdown", [True, False], ids=["no-shutdown", "exit"])
def test_the_guest_suspends_to_disk(real_qemu: Referee, no_shutdown: bool) -> None:
    flags = ("-no-shutdown",) if no_shutdown else ()
    with qemu_process("-M", "pc", *flags, referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            wait_for_firmware(real)
            guest_sleeps(real, S4, 3 if no_shutdown else 2)
            if no_shutdown:
                real.execute("query-status")
                real.execute("system_wakeup")
        finally:
            real.monitor.close()
    sim = SimGuest(profile_for(real_qemu), VmConfig(cpus=1, no_shutdown=no_shutdown))
    sim.sleeps(True)
    if no_shutdown:
        sim.execute("query-status")
        sim.execute("system_wakeup")
    else:
        assert sim.machine.exited
    assert masked(sim.messages) == masked(real.messages)


@pytest.mark.parametrize("machine", ["none", "pc"])
def test_wakeup_support_and_refusals_without_a_suspend(real_qemu: Referee, machine: str) -> None:
    steps = ["query-current-machine", "system_wakeup"]
    with qemu_process("-M", machine, "-S", referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            for command in steps:
                real.execute(command)
        finally:
            real.monitor.close()
    vm = VmConfig(cpus=1 if machine == "pc" else 0, initial_state="prelaunch")
    sim = Sim(profile_for(real_qemu), vm)
    for command in steps:
        sim.execute(command)
    assert masked(sim.messages) == masked(real.messages)
