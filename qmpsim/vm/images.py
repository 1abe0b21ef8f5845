"""What the VM description says about disks and image files.

A :class:`DiskConfig` is one ``-drive`` (or ``-blockdev`` node chain with its
``-device``); an :class:`ImageConfig` is an image file on the host the VM can
open later (a backing file, a mirror target, a CD-ROM image).  The block graph
(:mod:`qmpsim.vm.block`) builds its nodes from them; :func:`complete_disks` fills
in what QEMU would choose for a disk the description leaves open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .block_errors import DISK_POLICIES, ErrorAction, OnError, error_action
from .values import MachineError

ERROR_POLICIES = DISK_POLICIES
DISK_FORMATS = ("raw", "qcow2")
MEDIA = ("disk", "cdrom")
DEFAULT_SIZE = 16 * 1024**3
# what `qemu-img create` allocates for an empty image (query-block's actual-size)
FRESH_ALLOCATION = {"raw": 4096, "qcow2": 200704}
QCOW2_CLUSTER = 65536


@dataclass(frozen=True)
class ImageConfig:
    """An image file on the host: its format, sizes and backing file.

    ``actual_size`` is what the file occupies (``None``: a freshly created image);
    ``backing`` is the backing file a qcow2 image names in its header;
    ``file_size`` is the file's length (``None``: a fresh image's; a qcow2 file
    grows as data is written).
    """

    file: str
    format: str = "qcow2"
    virtual_size: int = DEFAULT_SIZE
    actual_size: int | None = None
    backing: str | None = None
    file_size: int | None = None
    data: int | None = None
    """Bytes of guest data the image holds itself (``None``: its allocation beyond a
    fresh image's); a block job takes its time copying data, not holes."""

    @property
    def data_bytes(self) -> int:
        """``data``, or an estimate from the allocation."""
        if self.data is not None:
            return self.data
        return max(0, self.allocated - FRESH_ALLOCATION[self.format]) // 65536 * 65536

    @property
    def allocated(self) -> int:
        """``actual_size``, or what a fresh image of this format occupies."""
        return FRESH_ALLOCATION[self.format] if self.actual_size is None else self.actual_size

    @property
    def length(self) -> int:
        """The file's length as QEMU reports it (in whole 512-byte sectors): ``file_size``,
        else a fresh image's."""
        if self.file_size is not None:
            return -(-self.file_size // 512) * 512
        return self.virtual_size if self.format == "raw" else qcow2_file_length(self.virtual_size)


def qcow2_file_length(virtual_size: int, data: int = 0) -> int:
    """The length of a qcow2 file holding ``data`` bytes written from offset 0: header,
    refcount table and block, the L1 table (one entry per 512 MiB; a fresh image
    stops at its end, a written one fills its cluster), an L2 table per 512 MiB
    written, and the data clusters (64 KiB each)."""
    span = QCOW2_CLUSTER * QCOW2_CLUSTER // 8  # what one L2 table maps
    l1_entries = max(1, -(-virtual_size // span))
    l1 = -(-(l1_entries * 8) // 512) * 512
    if data <= 0:
        return 3 * QCOW2_CLUSTER + l1
    l1 = -(-l1 // QCOW2_CLUSTER) * QCOW2_CLUSTER
    clusters = -(-data // QCOW2_CLUSTER)
    return 3 * QCOW2_CLUSTER + l1 + -(-data // span) * QCOW2_CLUSTER + clusters * QCOW2_CLUSTER


@dataclass(frozen=True)
class DiskConfig:
    """A block device: ``-drive file=…,format=…,if=virtio,rerror=…,werror=…``.

    Left empty, ``node_name``, ``file``, ``qdev`` and ``actual_size`` are filled in
    by :class:`~qmpsim.vm.description.VmConfig`, per disk, as QEMU would: an automatic
    ``#blockNNN`` node name, ``/var/lib/qemu/NAME.qcow2`` (``.img`` when raw), the
    disk's own virtio device, and the size of a freshly created image.  A ``thin``
    disk is thin-provisioned: only such a disk can run out of space (ENOSPC).  A
    CD-ROM (``media="cdrom"``) without a ``file`` has no medium in its tray.
    """

    name: str = "virtio0"
    node_name: str = ""
    file: str = ""
    format: str = "qcow2"
    virtual_size: int = DEFAULT_SIZE
    actual_size: int | None = None
    read_only: bool = False
    on_read_error: str = "report"
    on_write_error: str = "enospc"
    qdev: str = ""
    thin: bool = False
    device: str | None = None
    """The backend's name on the wire (``query-block``'s ``device``): ``None`` is ``name``;
    ``""`` for a disk on a ``-blockdev`` node, which QEMU names by ``node_name`` only."""
    storage_node_name: str | None = None
    """The protocol (``file``) node under the format node, when the command line named it."""
    media: str = "disk"
    """``disk`` or ``cdrom``."""
    backing: str | None = None
    """The backing file the image names (qcow2); :attr:`VmConfig.images` says what it is."""
    file_size: int | None = None
    """The image file's length (``None``: a fresh image's)."""
    data: int | None = None
    """Bytes of guest data in the image (``None``: estimated from ``actual_size``)."""

    @property
    def wire_name(self) -> str:
        """What QEMU calls this disk in ``query-block`` and ``BLOCK_IO_ERROR``."""
        return self.name if self.device is None else self.device

    @property
    def has_medium(self) -> bool:
        """Whether an image is attached (a CD-ROM may have none)."""
        return self.media != "cdrom" or bool(self.file)

    def action(self, operation: str, nospace: bool) -> ErrorAction:
        """The ``BLOCK_IO_ERROR`` action this disk takes (``blk_get_error_action``)."""
        policy = self.on_write_error if operation == "write" else self.on_read_error
        return error_action(policy, nospace=nospace)

    @property
    def iostatus_enabled(self) -> bool:
        """Whether QEMU tracks (and reports) this disk's io-status (``blk_iostatus_is_enabled``)."""
        write, read = self.on_write_error, self.on_read_error
        return write in (OnError.ENOSPC, OnError.STOP) or read == OnError.STOP


def auto_node_name(counter: int) -> str:
    """QEMU's automatic node name for its ``counter``-th unnamed node (``id_generate``).

    QEMU appends two random digits; here they follow from the counter, so a
    description always names its nodes alike.
    """
    return f"#block{counter}{3 * counter % 100:02d}"


def is_auto_node_name(name: str) -> bool:
    """Whether ``name`` is one QEMU made up: ``#`` starts no name a user may give."""
    return name.startswith("#")


def default_file(disk: DiskConfig) -> str:
    """The image file of a disk the description gives none: ``/var/lib/qemu/NAME.qcow2``
    (``.img`` when raw); a CD-ROM without one has no medium."""
    if disk.media == "cdrom":
        return ""
    return f"/var/lib/qemu/{disk.name}.{'img' if disk.format == 'raw' else 'qcow2'}"


def check_disks(disks: Sequence[DiskConfig], images: Sequence[ImageConfig]) -> None:
    """A :class:`MachineError` for the first thing wrong with the disks or images."""
    names = [d.name for d in disks]
    node_names = [d.node_name for d in disks if d.node_name]
    for d in disks:
        if names.count(d.name) > 1:
            raise MachineError(f"two disks are named {d.name!r}")
        if d.node_name and node_names.count(d.node_name) > 1:
            raise MachineError(f"two disks have the node name {d.node_name!r}")
        if d.format not in DISK_FORMATS:
            raise MachineError(
                f"disk {d.name!r}: format {d.format!r} is not one of {', '.join(DISK_FORMATS)}"
            )
        if d.media not in MEDIA:
            raise MachineError(f"disk {d.name!r}: media {d.media!r} is not one of disk, cdrom")
        for policy in (d.on_read_error, d.on_write_error):
            if policy not in ERROR_POLICIES:
                raise MachineError(
                    f"disk {d.name!r}: error policy {policy!r} is not one of "
                    + ", ".join(ERROR_POLICIES)
                )
    for image in images:
        if image.format not in DISK_FORMATS:
            raise MachineError(
                f"image {image.file!r}: format {image.format!r} is not one of "
                + ", ".join(DISK_FORMATS)
            )


def backing_chain(disk: DiskConfig, images: Sequence[ImageConfig]) -> list[ImageConfig]:
    """The images under ``disk``'s, nearest first, as its image's header chains them.

    A backing file the description does not list is a fresh qcow2 image of the
    disk's size; a chain that loops back is cut where it would repeat.
    """
    known = {i.file: i for i in images}
    chain: list[ImageConfig] = []
    seen = {disk.file}
    backing = disk.backing
    while backing is not None and backing not in seen:
        seen.add(backing)
        image = known.get(backing, ImageConfig(backing, virtual_size=disk.virtual_size))
        chain.append(image)
        backing = image.backing if image.format == "qcow2" else None
    return chain


def creation_order(disks: Sequence[DiskConfig]) -> list[DiskConfig]:
    """The disks in the order QEMU opens their images: ``-blockdev`` nodes first (before
    any ``-drive``), then the ``-drive`` ones, each group in command-line order."""
    return [d for d in disks if d.device == ""] + [d for d in disks if d.device != ""]


def complete_disks(
    disks: tuple[DiskConfig, ...], images: Sequence[ImageConfig] = ()
) -> tuple[DiskConfig, ...]:
    """The disks with every value QEMU would choose filled in.

    Each ``-drive`` opens its protocol node, then its format node, then the nodes of
    its backing chain; a node without a name takes :func:`auto_node_name` of a
    counter that every unnamed node advances (the first disk's is ``#block103``).
    """
    if all(
        (d.node_name or not d.has_medium)
        and (d.file or d.media == "cdrom")
        and d.qdev
        and d.actual_size is not None
        for d in disks
    ):
        return disks
    taken = {d.node_name for d in disks if d.node_name}
    counter = 0
    done: dict[int, DiskConfig] = {}
    index = {id(d): i for i, d in enumerate(disks)}
    for d in creation_order(disks):
        i = index[id(d)]
        node_name = d.node_name
        if d.has_medium:
            if d.storage_node_name is None:
                counter += 1  # the protocol node's automatic name
            while not node_name:
                node_name = auto_node_name(counter)
                counter += 1
                if node_name in taken:  # a name given to another disk
                    node_name = ""
            taken.add(node_name)
            counter += 2 * len(backing_chain(d, images))  # each backing file: two nodes
        done[i] = replace(
            d,
            node_name=node_name,
            file=d.file or default_file(d),
            qdev=d.qdev or f"/machine/peripheral-anon/device[{i}]/virtio-backend",
            actual_size=FRESH_ALLOCATION[d.format] if d.actual_size is None else d.actual_size,
        )
    return tuple(done[i] for i in range(len(disks)))
