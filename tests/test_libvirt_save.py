"""``virsh save`` and ``virsh restore``: libvirt passes the save file with ``getfd`` and
migrates the paused domain into it (``migrate fd:migrate``), then stops the emulator;
to restore, it starts one with ``-incoming defer`` and the file open, and sends
``migrate-incoming fd:N``.  The real QEMU 7.2 is the referee: the drop-in must give
the same domain states and lifecycle events, and a file laid out the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_harness import EventLog, Libvirtd, private_libvirtd
from qemu_harness import require_qemu
from test_libvirt import DROPIN, define

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

HEADER = b"LibvirtQemudSave"
"""How libvirt's save file starts; QEMU's stream follows libvirt's header and XML."""
MAGIC = b"QEVM\x00\x00\x00\x03"


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[Libvirtd]:
    with private_libvirtd(tmp_path / "libvirt") as daemon:
        yield daemon


def save_and_restore(daemon: Libvirtd, tmp: Path, emulator: str, name: str) -> list[str]:
    """Start a domain, save it, restore it: the states after each, the lifecycle events."""
    define(daemon, tmp, emulator, name)
    events = EventLog(daemon, tmp / f"{name}-events.txt")
    state = tmp / f"{name}.save"
    seen = []
    try:
        daemon.virsh("start", name)
        daemon.virsh("save", name, str(state))
        seen.append(daemon.domstate(name))
        data = state.read_bytes()
        assert data.startswith(HEADER) and MAGIC in data
        daemon.virsh("restore", str(state))
        seen.append(daemon.domstate(name))
        daemon.virsh("destroy", name)
        lines = events.wait_for("Stopped Destroyed")
    finally:
        events.close()
    prefix = f"event 'lifecycle' for domain '{name}': "
    return seen + [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def test_virsh_save_and_restore_as_with_the_real_qemu(libvirtd: Libvirtd, tmp_path: Path) -> None:
    real = save_and_restore(libvirtd, tmp_path, require_qemu(), "real")
    assert real[:2] == ["shut off (saved)", "running (restored)"]
    assert save_and_restore(libvirtd, tmp_path, DROPIN, "sim") == real
