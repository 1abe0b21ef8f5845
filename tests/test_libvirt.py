"""libvirt manages a VM end to end: a private libvirtd, virsh, and the emulator libvirt
runs — the drop-in, or the real QEMU as the referee.

Every step is checked through what a user sees: ``virsh domstate --reason`` after
it, and the lines of ``virsh event --all --loop``.  libvirt probes the emulator
from scratch each time (the capability cache starts empty).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_harness import TIMEOUT, EventLog, Libvirtd, domain_xml, private_libvirtd
from qemu_harness import require_qemu

pytestmark = pytest.mark.slow

DROPIN = str(Path(sys.executable).parent / "qmpsim-system-x86_64")


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


def wait_state(daemon: Libvirtd, name: str, expected: str) -> str:
    """Wait until the domain is in ``expected`` (libvirt follows events asynchronously)."""
    deadline = time.monotonic() + TIMEOUT
    while (state := daemon.domstate(name)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {state!r}, not {expected!r}, after {TIMEOUT} s")
        time.sleep(0.02)  # polling libvirt's view of another process
    return state


def ctl(daemon: Libvirtd, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qmpsim", "ctl", "--run-dir", str(daemon.run_dir), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr


def lifecycle(daemon: Libvirtd, events: EventLog, name: str) -> list[tuple[str, str]]:
    """The verbs of a VM's life, each with the state it leaves: what every emulator
    must do alike when no guest OS answers the power button."""
    seen: list[tuple[str, str]] = []

    def step(*verb: str) -> None:
        daemon.virsh(*verb, name)
        seen.append((" ".join(verb), daemon.domstate(name)))

    step("start")
    step("suspend")
    step("resume")
    step("reset")
    events.wait_for("event 'reboot'")
    step("reboot")  # the power button, which nothing answers
    step("shutdown")
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
    ("reboot", "running (unpaused)"),
    ("shutdown", "running (unpaused)"),
    ("libvirtd restart", "running (unpaused)"),
    ("suspend", "paused (user)"),
    ("resume", "running (unpaused)"),
    ("destroy", "shut off (destroyed)"),
]


@pytest.mark.qemu
def test_the_lifecycle_verbs_give_the_states_the_real_qemu_gives(
    libvirtd: Libvirtd, tmp_path: Path
) -> None:
    """The referee: the real QEMU 7.2 (no guest OS), then the drop-in with a guest that
    ignores the power button, through the same verbs."""
    (libvirtd.settings_dir / "default.toml").write_text('[guest]\npowerdown = "ignore"\n')
    results = []
    for emulator, name in ((require_qemu(), "real"), (DROPIN, "sim")):
        define(libvirtd, tmp_path, emulator, name)
        events = EventLog(libvirtd, tmp_path / f"{name}-events.txt")
        try:
            results.append(lifecycle(libvirtd, events, name))
            lines = events.wait_for("Stopped Destroyed")
        finally:
            events.close()
        for line in ("Started Booted", "Suspended Paused", "Resumed Unpaused", "Stopped Destroyed"):
            assert f"event 'lifecycle' for domain '{name}': {line}" in lines
        assert f"event 'lifecycle' for domain '{name}': Shutdown Finished after host request" in (
            lines
        )
    assert results == [REFERENCE, REFERENCE]


def test_libvirt_manages_a_simulated_vm_end_to_end(libvirtd: Libvirtd, tmp_path: Path) -> None:
    """Every verb, and the events qmpsim makes happen, as libvirt and its user see them."""
    (libvirtd.settings_dir / "default.toml").write_text("[guest]\npowerdown_delay = 0.2\n")
    name = define(libvirtd, tmp_path, DROPIN)
    events = EventLog(libvirtd, tmp_path / "events.txt")
    states: list[tuple[str, str]] = []

    def seen(what: str, expected: str) -> None:
        states.append((what, wait_state(libvirtd, name, expected)))

    try:
        libvirtd.virsh("start", name)
        seen("start", "running (booted)")
        # the balloon: the guest gives 32 MiB back, and its driver's statistics
        libvirtd.virsh("setmem", name, "32768", "--live")
        events.wait_for("event 'balloon-change'")
        assert "Used memory:    32768 KiB" in libvirtd.virsh("dominfo", name).stdout
        libvirtd.virsh("dommemstat", name, "--period", "1", "--live")
        stats = dict(
            line.split()
            for line in libvirtd.virsh("dommemstat", name).stdout.splitlines()
            if line.strip()
        )
        assert stats["actual"] == stats["available"] == "32768", stats
        assert stats["unused"] == "16384" and int(stats["last_update"]) > 0, stats
        libvirtd.virsh("suspend", name)
        seen("suspend", "paused (user)")
        libvirtd.virsh("resume", name)
        seen("resume", "running (unpaused)")

        ctl(libvirtd, name, "cause", "disk-error", "device=virtio-disk0", "operation=write")
        seen("cause disk-error", "paused (I/O error)")
        assert libvirtd.virsh("domblkerror", name).stdout.strip() == "vda: unspecified error"
        libvirtd.virsh("resume", name)
        seen("resume", "running (unpaused)")

        ctl(libvirtd, name, "cause", "watchdog")
        seen("cause watchdog", "paused (watchdog)")
        libvirtd.virsh("resume", name)
        seen("resume", "running (unpaused)")

        for cause in ("vnc-connect", "vnc-initialize", "vnc-disconnect"):
            ctl(
                libvirtd,
                name,
                "cause",
                cause,
                "client=viewer",
                *(["host=127.0.0.1", "service=41000"] if cause == "vnc-connect" else []),
            )
        events.wait_for("event 'graphics'", count=3)

        libvirtd.virsh("reset", name)
        seen("reset", "running (unpaused)")
        # the guest shuts down (SHUTDOWN, STOP under -no-shutdown); libvirt resets and
        # resumes it, a second RESET
        libvirtd.virsh("reboot", name)
        events.wait_for("event 'reboot'", count=2)
        seen("reboot", "running (unpaused)")

        libvirtd.restart()
        events.listen()
        seen("libvirtd restart", "running (unpaused)")

        libvirtd.virsh("shutdown", name)
        seen("shutdown", "shut off (shutdown)")
        libvirtd.virsh("start", name)
        seen("start", "running (booted)")
        libvirtd.virsh("destroy", name)
        seen("destroy", "shut off (destroyed)")
        lines = events.wait_for("Stopped Destroyed")
    finally:
        events.close()
    assert states == [
        ("start", "running (booted)"),
        ("suspend", "paused (user)"),
        ("resume", "running (unpaused)"),
        ("cause disk-error", "paused (I/O error)"),
        ("resume", "running (unpaused)"),
        ("cause watchdog", "paused (watchdog)"),
        ("resume", "running (unpaused)"),
        ("reset", "running (unpaused)"),
        ("reboot", "running (unpaused)"),
        ("libvirtd restart", "running (unpaused)"),
        ("shutdown", "shut off (shutdown)"),
        ("start", "running (booted)"),
        ("destroy", "shut off (destroyed)"),
    ]
    expected = [
        "event 'balloon-change' for domain 'vm1': 32768KiB",
        "event 'io-error' for domain 'vm1': /tmp",
        "event 'io-error-reason' for domain 'vm1': /tmp",
        "event 'watchdog' for domain 'vm1': pause",
        "event 'graphics' for domain 'vm1': connect local[IPv4 127.0.0.1 5900] "
        "remote[IPv4 127.0.0.1 41000] none",
        "event 'graphics' for domain 'vm1': initialize local[IPv4 127.0.0.1 5900] "
        "remote[IPv4 127.0.0.1 41000] none",
        "event 'graphics' for domain 'vm1': disconnect local[IPv4 127.0.0.1 5900] "
        "remote[IPv4 127.0.0.1 41000] none",
        "event 'lifecycle' for domain 'vm1': Suspended I/O Error",
        "event 'lifecycle' for domain 'vm1': Suspended Watchdog",
        "event 'lifecycle' for domain 'vm1': Shutdown Finished after guest request",
        "event 'lifecycle' for domain 'vm1': Stopped Shutdown",
        "event 'lifecycle' for domain 'vm1': Stopped Destroyed",
    ]
    for text in expected:
        assert any(line.startswith(text) for line in lines), (text, lines)
    (tmp_path / "events.txt").rename(tmp_path / "vm1-events.txt")
