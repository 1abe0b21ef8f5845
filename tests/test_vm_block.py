"""The block graph without a real QEMU: what only a guest or the host's storage makes happen.

(What QEMU does on its own is compared with QEMU itself in tests/test_diff_block_*.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.machine import (
    CommandError,
    DiskConfig,
    DiskError,
    DiskIo,
    GuestConfig,
    ImageConfig,
    Machine,
    MachineError,
    ManualClock,
    TrayMoved,
    VmConfig,
)


def machine(**vm: Any) -> tuple[Machine, ManualClock]:
    clock = ManualClock()
    return Machine(VmConfig(cpus=1, **vm), get_profile("qemu-7.2"), clock), clock


def names(events: Any) -> list[str]:
    return [e.name for e in events]


CDROM = DiskConfig("cd", file="/srv/a.iso", format="raw", media="cdrom", qdev="cd0", device="")


def test_a_guest_that_locked_its_tray_opens_it_when_asked_after_its_delay() -> None:
    m, clock = machine(disks=(CDROM,), guest=GuestConfig(tray_delay=0.25))
    (info,) = m.execute("query-block", {}).reply
    assert (info["locked"], info["tray_open"]) == (True, False)
    refused = m.execute("eject", {"id": "cd0"})
    assert refused.reply == CommandError(
        "GenericError",
        "Device 'cd0' is locked and force was not specified, wait for tray to open and try again",
    )
    assert m.next_deadline() == pytest.approx(clock.now + 0.25)
    clock.advance(0.25)
    (moved,) = m.poll()
    assert (moved.name, moved.data) == (
        "DEVICE_TRAY_MOVED",
        {"device": "", "id": "cd0", "tray-open": True},
    )
    (info,) = m.execute("query-block", {}).reply
    assert (info["locked"], info["tray_open"], "inserted" in info) == (False, True, True)
    # the medium is still in: a second eject takes it out
    assert m.execute("eject", {"id": "cd0"}).reply == {}
    assert "inserted" not in m.execute("query-block", {}).reply[0]


def test_a_guest_that_ignores_eject_requests_keeps_the_tray_shut_until_forced() -> None:
    m, clock = machine(disks=(CDROM,), guest=GuestConfig(tray="ignore"))
    assert m.execute("blockdev-open-tray", {"id": "cd0"}).reply == {}  # asked, no answer
    clock.advance(60)
    assert m.poll() == []
    forced = m.execute("blockdev-open-tray", {"id": "cd0", "force": True})
    assert names(forced.events) == ["DEVICE_TRAY_MOVED"]
    closed = m.execute("blockdev-close-tray", {"id": "cd0"})
    assert [e.data["tray-open"] for e in closed.events if e.data] == [False]
    # the guest locks the medium in again
    assert m.execute("query-block", {}).reply[0]["locked"] is True


def test_without_a_guest_nothing_locks_a_tray_and_the_hand_on_the_drive_moves_it() -> None:
    m, _ = machine(disks=(CDROM,))
    assert m.execute("query-block", {}).reply[0]["locked"] is False
    assert names(m.cause(TrayMoved("cd"))) == ["DEVICE_TRAY_MOVED"]
    assert m.cause(TrayMoved("cd")) == []  # already open
    with pytest.raises(MachineError, match="has no tray"):
        machine(disks=(DiskConfig("vda"),))[0].cause(TrayMoved("vda"))


def test_an_empty_cdrom_has_no_nodes_and_takes_a_medium() -> None:
    empty = DiskConfig("cd", media="cdrom", qdev="cd0", device="")
    m, _ = machine(disks=(empty,), images=(ImageConfig("/srv/b.iso", "raw", 1 << 20),))
    assert m.execute("query-named-block-nodes", {}).reply == []
    changed = m.execute("blockdev-change-medium", {"id": "cd0", "filename": "/srv/b.iso"})
    assert [e.data["tray-open"] for e in changed.events if e.data] == [True, False]
    inserted = m.execute("query-block", {}).reply[0]["inserted"]
    assert (inserted["file"], inserted["image"]["virtual-size"], inserted["ro"]) == (
        "/srv/b.iso",
        1 << 20,
        True,
    )


def test_guest_io_moves_blockstats_on_the_virtual_clock() -> None:
    m, clock = machine(disks=(DiskConfig("vda"),))
    before = m.execute("query-blockstats", {}).reply[0]["stats"]
    assert "idle_time_ns" not in before  # no I/O yet
    m.cause(DiskIo("vda", "write", 8192, 2, offset=1 << 20))
    m.cause(DiskIo("vda", "read", 4096))
    m.cause(DiskIo("vda", "flush"))
    clock.advance(1.5)
    stats = m.execute("query-blockstats", {}).reply[0]["stats"]
    assert (stats["wr_bytes"], stats["wr_operations"], stats["rd_bytes"]) == (8192, 2, 4096)
    assert (stats["flush_operations"], stats["wr_highest_offset"]) == (1, (1 << 20) + 8192)
    assert stats["idle_time_ns"] == 1_500_000_000
    m.cause(DiskError("vda", "write"))  # report: the request fails
    assert m.execute("query-blockstats", {}).reply[0]["stats"]["failed_wr_operations"] == 1


def test_io_needs_a_running_guest_and_sane_numbers() -> None:
    m, _ = machine(disks=(DiskConfig("vda"),), initial_state="paused")
    with pytest.raises(MachineError, match="needs a running guest"):
        m.cause(DiskIo("vda"))
    m, _ = machine(disks=(DiskConfig("vda"),))
    with pytest.raises(MachineError, match="not read, write or flush"):
        m.cause(DiskIo("vda", "trim"))
    with pytest.raises(MachineError, match="at least one request"):
        m.cause(DiskIo("vda", requests=0))


def test_a_thin_disk_out_of_space_resumes_after_block_resize_and_cont() -> None:
    thin = DiskConfig("vda", thin=True, virtual_size=1 << 30, on_write_error="enospc")
    m, _ = machine(disks=(thin,))
    stopped = m.cause(DiskError("vda", "write", nospace=True, persistent=True))
    assert names(stopped) == ["BLOCK_IO_ERROR", "STOP"]
    assert m.execute("query-block", {}).reply[0]["io-status"] == "nospace"
    # cont alone retries into the same full disk
    assert names(m.execute("cont", {}).events) == ["RESUME"]
    assert names(m.poll()) == ["BLOCK_IO_ERROR", "STOP"]
    assert m.execute("block_resize", {"device": "vda", "size": 2 << 30}).reply == {}
    (info,) = m.execute("query-block", {}).reply
    assert info["inserted"]["image"]["virtual-size"] == 2 << 30
    node = m.execute("query-named-block-nodes", {}).reply[0]
    assert node["image"]["virtual-size"] == 2 << 30
    assert names(m.execute("cont", {}).events) == ["RESUME"]
    assert m.poll() == []
    assert m.execute("query-status", {}).reply["status"] == "running"


def test_backing_chains_come_from_the_images_the_description_lists() -> None:
    base = ImageConfig("/srv/base.qcow2", virtual_size=1 << 30, data=1 << 20)
    disk = DiskConfig("vda", file="/srv/top.qcow2", virtual_size=1 << 30, backing=base.file)
    m, _ = machine(disks=(disk, DiskConfig("vdb")), images=(base,))
    nodes = [
        (n["node-name"], n["drv"], n["file"])
        for n in m.execute("query-named-block-nodes", {"flat": True}).reply
    ]
    # named in QEMU's order: top's file, top, base's file, base, then the next disk
    assert nodes == [
        ("#block515", "qcow2", "/var/lib/qemu/vdb.qcow2"),
        ("#block412", "file", "/var/lib/qemu/vdb.qcow2"),
        ("#block309", "qcow2", "/srv/base.qcow2"),
        ("#block206", "file", "/srv/base.qcow2"),
        ("#block103", "qcow2", "/srv/top.qcow2"),
        ("#block000", "file", "/srv/top.qcow2"),
    ]
    assert m.vm.disks[1].node_name == "#block515"  # the description agrees
    inserted = m.execute("query-block", {}).reply[0]["inserted"]
    assert (inserted["backing_file"], inserted["backing_file_depth"]) == (base.file, 1)
