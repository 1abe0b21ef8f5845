"""CD-ROM trays against real QEMU 7.2 and 10.0: eject, the tray commands, DEVICE_TRAY_MOVED.

A firmware without an OS never locks a tray, so every command acts at once;
what a guest that locked its tray does is the guest model's (tests/test_vm_block.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from block_harness import host_image, make_image, pair
from qemu_harness import Referee

pytestmark = pytest.mark.qemu


@pytest.fixture
def cdroms(tmp_path: Path) -> tuple[list[str], list[object]]:
    iso = make_image(tmp_path / "a.iso", "raw", "2M")
    iso2 = make_image(tmp_path / "b.iso", "raw", "4M")
    iso3 = make_image(tmp_path / "c.iso", "raw", "1M")
    disk = make_image(tmp_path / "d.img", "raw", "1M")
    argv = [
        "-blockdev", f"driver=file,filename={iso},node-name=cdf,read-only=on",
        "-blockdev", "driver=raw,file=cdf,node-name=cdr,read-only=on",
        "-device", "ide-cd,drive=cdr,id=cd0,bus=ide.1",
        "-device", "ide-cd,id=cd1,bus=ide.1",
        "-drive", f"if=none,id=cdd,media=cdrom,file={iso3},format=raw",
        "-device", "ide-cd,drive=cdd,id=cd2,bus=ide.0",
        "-drive", f"file={disk},format=raw,if=virtio",
    ]  # fmt: skip
    return argv, [host_image(p) for p in (iso, iso2, iso3, disk)]


def test_trays_open_close_and_change_media(real_qemu: Referee, cdroms: tuple) -> None:
    argv, images = cdroms
    iso2 = images[1].file
    steps: list[tuple[str, dict[str, object]]] = [
        ("query-block", {}),
        ("eject", {"id": "cd0"}),
        ("eject", {"id": "cd0"}),
        ("query-block", {}),
        ("blockdev-close-tray", {"id": "cd0"}),
        ("blockdev-close-tray", {"id": "cd0"}),
        ("blockdev-change-medium", {"id": "cd0", "filename": iso2, "format": "raw"}),
        ("blockdev-open-tray", {"device": "cdd"}),
        ("blockdev-open-tray", {"device": "cdd"}),
        ("blockdev-remove-medium", {"id": "cd2"}),
        ("blockdev-remove-medium", {"id": "cd2"}),
        (
            "blockdev-add",
            {
                "driver": "raw",
                "node-name": "new",
                "read-only": True,
                "file": {"driver": "file", "filename": iso2},
            },
        ),
        ("blockdev-insert-medium", {"id": "cd0", "node-name": "new"}),
        ("blockdev-insert-medium", {"id": "cd2", "node-name": "nonode"}),
        ("blockdev-insert-medium", {"id": "cd2", "node-name": "new"}),
        ("blockdev-insert-medium", {"id": "cd2", "node-name": "new"}),
        ("blockdev-close-tray", {"device": "cdd"}),
        ("blockdev-insert-medium", {"id": "cd1", "node-name": "new"}),
        ("blockdev-change-medium", {"id": "cd1", "filename": iso2, "format": "raw"}),
        ("eject", {"id": "cd1", "force": True}),
        ("blockdev-change-medium", {"id": "cd1", "filename": iso2, "read-only-mode": "read-write"}),
        ("query-block", {}),
        ("query-named-block-nodes", {}),
    ]  # fmt: skip
    with pair(real_qemu, argv, images) as both:
        for command, args in steps:
            both.run(command, args)
    both.compare()


def test_tray_commands_refuse_as_qemu_does(real_qemu: Referee, cdroms: tuple) -> None:
    argv, images = cdroms
    steps: list[tuple[str, dict[str, object]]] = [
        ("eject", {"device": "nodev"}),
        ("eject", {"id": "nodev"}),
        ("eject", {}),
        ("eject", {"device": "cdd", "id": "cd2"}),
        ("eject", {"device": "virtio0"}),
        ("blockdev-open-tray", {"device": "virtio0"}),
        ("blockdev-close-tray", {"device": "virtio0"}),
        ("blockdev-remove-medium", {"id": "/machine/peripheral-anon/device[0]/virtio-backend"}),
        ("blockdev-remove-medium", {"id": "cd0"}),
        ("blockdev-insert-medium", {"id": "cd1", "node-name": "cdr"}),
        ("blockdev-open-tray", {"id": "cd1"}),
        ("blockdev-insert-medium", {"id": "cd1", "node-name": "cdr"}),
        ("blockdev-insert-medium", {"id": "cd1", "node-name": "cdf"}),
    ]
    with pair(real_qemu, argv, images) as both:
        for command, args in steps:
            both.run(command, args)
    both.compare()
