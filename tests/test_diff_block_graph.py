"""The block graph against real QEMU 7.2 and 10.0: queries, blockdev-add/del, block_resize.

Disks come from ``-drive`` and ``-blockdev`` command lines with real raw and
qcow2 images (one with a backing file); qmpsim builds the same VM from the same
command line.  What differs by nature is masked (:mod:`block_harness`):
timestamps and the random digits of automatic node names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from block_harness import host_image, make_image, pair, write_data
from qemu_harness import Referee

pytestmark = pytest.mark.qemu


@pytest.fixture
def disks(tmp_path: Path) -> tuple[list[str], list[object]]:
    raw = make_image(tmp_path / "a.img", "raw", "1M")
    qcow2 = make_image(tmp_path / "b.qcow2", "qcow2", "16M")
    base = make_image(tmp_path / "base.qcow2", "qcow2", "32M")
    write_data(base, "qcow2", 0, 1 << 20)
    top = make_image(tmp_path / "top.qcow2", "qcow2", "32M", backing=Path(base))
    other = make_image(tmp_path / "c.qcow2", "qcow2", "16M")
    spare = make_image(tmp_path / "spare.qcow2", "qcow2", "8M")
    spare_raw = make_image(tmp_path / "spare.img", "raw", "2M")
    argv = [
        "-drive", f"file={raw},format=raw,if=virtio",
        "-drive", f"file={qcow2},format=qcow2,if=virtio,node-name=bq,werror=stop",
        "-drive", f"file={top},format=qcow2,if=virtio",
        "-blockdev", f"driver=file,filename={other},node-name=bf,read-only=on",
        "-blockdev", "driver=qcow2,file=bf,node-name=named,read-only=on",
        "-device", "virtio-blk-pci,drive=named,id=vd0",
    ]  # fmt: skip
    images = [host_image(p) for p in (raw, qcow2, base, top, other, spare, spare_raw)]
    return argv, images


QUERIES = [
    ("query-block", None),
    ("query-named-block-nodes", None),
    ("query-named-block-nodes", {"flat": True}),
    ("query-blockstats", None),
    ("query-blockstats", {"query-nodes": True}),
]


def test_queries_of_drives_blockdevs_and_a_backing_chain(real_qemu: Referee, disks: tuple) -> None:
    argv, images = disks
    with pair(real_qemu, argv, images) as both:
        for command, args in QUERIES:
            both.run(command, args)
    both.compare()


def test_blockdev_add_and_del_with_their_refusals(real_qemu: Referee, disks: tuple) -> None:
    argv, images = disks
    spare, spare_raw = images[-2].file, images[-1].file
    steps: list[tuple[str, dict[str, object]]] = [
        ("blockdev-add", {"driver": "file", "node-name": "f1", "filename": spare}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "q1", "file": "f1"}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "q1", "file": "f1"}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "q2", "file": "nonode"}),
        ("blockdev-add", {"driver": "file", "filename": spare}),
        ("blockdev-add", {"driver": "file", "node-name": "9bad", "filename": spare}),
        ("blockdev-add", {"driver": "file", "node-name": "virtio0", "filename": spare}),
        ("blockdev-add", {"driver": "file", "node-name": "x" * 32, "filename": spare}),
        (
            "blockdev-add",
            {"driver": "raw", "node-name": "r2", "file": {"driver": "file", "filename": spare_raw}},
        ),
        ("query-named-block-nodes", {}),
        ("query-blockstats", {"query-nodes": True}),
        ("blockdev-del", {"node-name": "f1"}),
        ("blockdev-del", {"node-name": "nonode"}),
        ("blockdev-del", {"node-name": "named"}),
        ("blockdev-del", {"node-name": "bq"}),
        ("blockdev-del", {"node-name": "q1"}),
        ("blockdev-del", {"node-name": "f1"}),
        ("blockdev-del", {"node-name": "r2"}),
        ("query-named-block-nodes", {"flat": True}),
    ]
    with pair(real_qemu, argv, images) as both:
        for command, args in steps:
            both.run(command, args)
    both.compare()


def test_block_resize_shows_in_both_queries(real_qemu: Referee, disks: tuple) -> None:
    argv, images = disks
    steps: list[tuple[str, dict[str, object]]] = [
        ("block_resize", {"device": "virtio0", "size": 2 << 20}),
        ("block_resize", {"node-name": "bq", "size": 32 << 20}),
        ("block_resize", {"device": "virtio1", "size": 1000}),
        ("block_resize", {"device": "nodev", "size": 1 << 20}),
        ("block_resize", {"node-name": "nonode", "size": 1 << 20}),
        ("block_resize", {"size": 1 << 20}),
        ("block_resize", {"device": "virtio0", "node-name": "bq", "size": 3 << 20}),
        ("block_resize", {"device": "virtio0", "size": -1}),
        ("block_resize", {"device": "virtio0", "size": 1000}),
        ("block_resize", {"node-name": "named", "size": 64 << 20}),
        ("query-block", {}),
        ("query-named-block-nodes", {}),
    ]
    with pair(real_qemu, argv, images) as both:
        for command, args in steps:
            both.run(command, args)
    both.compare()


def test_block_set_io_throttle_shows_in_query_block(real_qemu: Referee, disks: tuple) -> None:
    argv, images = disks
    zero = dict.fromkeys(("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"), 0)
    steps: list[tuple[str, dict[str, object]]] = [
        ("block_set_io_throttle", {**zero, "device": "virtio0", "bps": 1 << 20}),
        ("block_set_io_throttle", {**zero, "id": "vd0", "iops_rd": 100, "iops_wr": 50}),
        (
            "block_set_io_throttle",
            {**zero, "id": "/machine/peripheral/vd0/virtio-backend", "iops_rd": 9, "iops_wr": 5},
        ),
        (
            "block_set_io_throttle",
            {**zero, "device": "virtio1", "bps_rd": 1000, "bps_rd_max": 2000, "group": "g"},
        ),
        ("block_set_io_throttle", {**zero, "device": "virtio2", "iops": 10, "iops_size": 4096}),
        ("block_set_io_throttle", {**zero, "device": "virtio2", "bps": 1, "bps_rd": 1}),
        ("block_set_io_throttle", {**zero, "device": "virtio2", "bps": -1}),
        ("block_set_io_throttle", {**zero, "device": "nodev", "bps": 1}),
        ("block_set_io_throttle", {**zero, "id": "nodev", "bps": 1}),
        ("block_set_io_throttle", {**zero, "bps": 1}),
        ("query-block", {}),
        ("block_set_io_throttle", {**zero, "device": "virtio0"}),
        ("query-block", {}),
        ("query-named-block-nodes", {}),
    ]
    with pair(real_qemu, argv, images) as both:
        for command, args in steps:
            both.run(command, args)
    both.compare()
