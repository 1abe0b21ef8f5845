"""libvirt manages a VM end to end: a private libvirtd, virsh, and the emulator libvirt
runs — the drop-in, or the real QEMU as the referee.

Every lifecycle verb is checked through what a user sees: ``virsh domstate
--reason`` after each step, and the lines of ``virsh event --all --loop``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_harness import EventLog, Libvirtd, domain_xml, private_libvirtd
from qemu_harness import require_qemu

pytestmark = pytest.mark.slow


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[Libvirtd]:
    with private_libvirtd(tmp_path / "libvirt") as daemon:
        yield daemon


def define(daemon: Libvirtd, tmp: Path, emulator: str, name: str = "vm1") -> str:
    disk = tmp / f"{name}.raw"
    disk.write_bytes(bytes(1 << 20))
    xml = tmp / f"{name}.xml"
    xml.write_text(domain_xml(name, emulator, disk))
    daemon.virsh("define", str(xml))
    return name


def lifecycle(daemon: Libvirtd, events: EventLog, name: str) -> list[tuple[str, str]]:
    """The verbs every emulator must take alike, each with the state it leaves."""
    seen: list[tuple[str, str]] = []

    def step(*verb: str) -> None:
        daemon.virsh(*verb, name)
        seen.append((" ".join(verb), daemon.domstate(name)))

    step("start")
    step("suspend")
    step("resume")
    step("reset")
    events.wait_for("event 'reboot'")
    daemon.restart()  # libvirtd goes away and comes back: the domain keeps running
    events.listen()
    seen.append(("libvirtd restart", daemon.domstate(name)))
    step("suspend")  # and the reconnected monitor still works
    step("resume")
    step("destroy")
    return seen


REFERENCE = [
    ("start", "running (booted)"),
    ("suspend", "paused (user)"),
    ("resume", "running (unpaused)"),
    ("reset", "running (unpaused)"),
    ("libvirtd restart", "running (unpaused)"),
    ("suspend", "paused (user)"),
    ("resume", "running (unpaused)"),
    ("destroy", "shut off (destroyed)"),
]


@pytest.mark.qemu
def test_libvirt_drives_the_real_qemu(libvirtd: Libvirtd, tmp_path: Path) -> None:
    """The referee: what libvirt shows for a real QEMU 7.2 (no guest OS)."""
    name = define(libvirtd, tmp_path, require_qemu())
    events = EventLog(libvirtd, tmp_path / "events.txt")
    try:
        assert lifecycle(libvirtd, events, name) == REFERENCE
        lines = events.wait_for("Stopped Destroyed")
    finally:
        events.close()
    assert "event 'lifecycle' for domain 'vm1': Started Booted" in lines
    assert "event 'lifecycle' for domain 'vm1': Suspended Paused" in lines
    assert "event 'lifecycle' for domain 'vm1': Resumed Unpaused" in lines
    assert "event 'lifecycle' for domain 'vm1': Shutdown Finished after host request" in lines
