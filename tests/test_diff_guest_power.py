"""The power button against real QEMU 7.2 and 10.0, with the test as the guest OS.

A ``-M pc`` runs SeaBIOS and no OS, so nothing answers the ACPI power button: the
test plays the guest's part as an OS would, once the firmware has enabled the
ACPI registers (port 0x604 shows in ``info mtree``): it writes SLP_EN to PM1a_CNT,
which is how a guest powers off.  qmpsim's machine has a :class:`GuestConfig`
whose shutdown comes at once.  Events and replies are compared with timestamps
masked; the port write's own reply is not the host's and leaves the record.
"""

from __future__ import annotations

import time

import pytest
from qemu_harness import Referee, qemu_process
from test_diff_devices import Real, Sim, masked, profile_for
from test_diff_machine import RealMonitor

from qmpsim.vm.machine import GuestConfig, VmConfig

pytestmark = pytest.mark.qemu

PM1A_CNT = 0x604  # SeaBIOS puts the PIIX4 PM registers at 0x600
SLP_EN = 0x2000  # with SLP_TYP 0, which QEMU's DSDT names S5: power off
ENABLED = f"{PM1A_CNT:016x}-{PM1A_CNT + 1:016x} (prio 0, i/o): acpi-cnt"


def wait_for_firmware(real: Real) -> None:
    """Poll the running QEMU until SeaBIOS has mapped the ACPI registers."""
    deadline = time.monotonic() + 30
    while True:
        real.monitor.execute("human-monitor-command", {"command-line": "info mtree"})
        tree = real.messages.pop()["return"]
        if ENABLED in tree:
            return
        if time.monotonic() > deadline:
            pytest.fail("the firmware never enabled the ACPI registers")
        time.sleep(0.05)  # polling an external process's state, not synchronising with qmpsim


def guest_powers_off(real: Real, events: int) -> None:
    line = f"o /w {PM1A_CNT:#x} {SLP_EN:#x}"
    real.monitor.sock.sendall(
        b'{"execute": "human-monitor-command", "arguments": {"command-line": "'
        + line.encode()
        + b'"}}'
    )
    real.await_events(events)
    reply = real.monitor.file.readline()
    if reply:  # QEMU that exits may close before it answers
        assert b'"return": ""' in reply


@pytest.mark.parametrize("no_shutdown", [True, False], ids=["no-shutdown", "exit"])
def test_the_power_button_and_the_guests_shutdown(real_qemu: Referee, no_shutdown: bool) -> None:
    args = ("-M", "pc", *(("-no-shutdown",) if no_shutdown else ()))
    with qemu_process(*args, referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            wait_for_firmware(real)
            real.execute("system_powerdown")
            guest_powers_off(real, 2 if no_shutdown else 1)
            if no_shutdown:
                real.execute("system_reset")
        finally:
            real.monitor.close()
    vm = VmConfig(cpus=1, no_shutdown=no_shutdown, guest=GuestConfig(powerdown_delay=0.0))
    sim = Sim(profile_for(real_qemu), vm)
    sim.execute("system_powerdown")
    if no_shutdown:
        sim.execute("system_reset")
    else:
        assert sim.machine.exited
    assert masked(sim.messages) == masked(real.messages)
