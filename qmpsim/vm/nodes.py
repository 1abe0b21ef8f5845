"""The block graph as data: nodes, the backends devices use, and QEMU's naming of nodes.

Each image opened is two nodes: a *protocol* node (driver ``file``: the host file)
and a *format* node (``raw`` or ``qcow2``) on top of it, whose ``backing`` is the
format node of the next image in its chain.  A *backend* (QEMU's BlockBackend) is
what a device reads and writes through: it has a root node (none for an empty
CD-ROM), a tray, an io-status, I/O throttling and statistics.  Nodes are listed
in the order they were named, as QEMU keeps them; an unnamed node takes the
next automatic ``#blockNNN`` name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .images import DiskConfig, ImageConfig, auto_node_name, qcow2_file_length

FORMATS = ("raw", "qcow2")
FILTERS = ("mirror_top", "commit_top", "copy-on-read", "copy-before-write")
"""The drivers of the filter nodes block jobs put into the graph."""


@dataclass(eq=False)
class Node:
    """One node of the graph (QEMU's BlockDriverState)."""

    name: str
    driver: str
    filename: str
    size: int
    """The virtual size (a format node) or the file's length (a protocol node)."""
    allocated: int
    """What the host file occupies (``actual-size``)."""
    read_only: bool = False
    auto: bool = False
    """Named automatically (``#blockNNN``)."""
    file: Node | None = None
    backing: Node | None = None
    backing_file: str = ""
    """The backing file name the image's header records."""
    monitor: bool = False
    """Added by ``blockdev-add`` (only those ``blockdev-del`` removes)."""
    wr_highest_offset: int = 0
    implicit: bool = False
    """A filter a job added without a name for it: ``query-block`` looks through it."""
    bitmaps: Callable[[], list[tuple[int, bool]]] | None = None
    """A job's dirty bitmaps on this node (``dirty-bitmaps``): each one's count of
    dirty bytes and whether it records."""
    data: int = 0
    """Bytes of guest data this image holds itself (a format node)."""

    @property
    def is_format(self) -> bool:
        """Whether this node interprets an image format (raw, qcow2)."""
        return self.driver in FORMATS

    @property
    def is_filter(self) -> bool:
        """Whether a block job put this node in front of another."""
        return self.driver in FILTERS

    @property
    def child(self) -> Node | None:
        """The node this one reads through: its file, or a filter's backing."""
        return self.file if self.file is not None else self.backing

    @property
    def detached(self) -> bool:
        """Opened without the backing file its header names (``backing: null``)."""
        return self.is_format and self.backing is None and bool(self.backing_file)

    def written(self, data: int) -> None:
        """A job wrote ``data`` bytes of guest data into this image (from offset 0)."""
        self.data = max(self.data, data)
        if self.driver == "qcow2" and self.file is not None:
            self.file.size = max(self.file.size, qcow2_file_length(self.size, self.data))

    def data_above(self, base: Node | None) -> int:
        """The guest data in this image and those under it, down to ``base`` (excluded)."""
        total = 0
        node: Node | None = self
        while node is not None and node is not base:
            total += node.data
            node = node.child if node.is_filter else node.backing
        return total

    def chain(self) -> Iterator[Node]:
        """This node and the format nodes of its backing chain, top first."""
        node: Node | None = self
        while node is not None:
            yield node
            node = node.backing

    @property
    def depth(self) -> int:
        """``backing_file_depth``: how many images lie under this one (a filter's child
        counts as one)."""
        under = self.child if self.is_filter else self.backing
        return 0 if under is None else 1 + under.depth


@dataclass
class Stats:
    """One BlockBackend's I/O accounting (``BlockAcctStats``)."""

    rd_bytes: int = 0
    wr_bytes: int = 0
    rd_operations: int = 0
    wr_operations: int = 0
    flush_operations: int = 0
    rd_total_time_ns: int = 0
    wr_total_time_ns: int = 0
    flush_total_time_ns: int = 0
    wr_highest_offset: int = 0
    failed_rd_operations: int = 0
    failed_wr_operations: int = 0
    failed_flush_operations: int = 0
    last_io: float | None = None
    """The clock's time of the last request (``idle_time_ns`` counts from it)."""


@dataclass
class Throttle:
    """``block_set_io_throttle``'s limits on one backend (QEMU's ThrottleConfig)."""

    limits: dict[str, int]
    group: str


@dataclass(eq=False)
class Backend:
    """A BlockBackend: what a disk's device reads and writes through."""

    config: DiskConfig
    root: Node | None
    tray_open: bool = False
    locked: bool = False
    io_status: str = "ok"
    throttle: Throttle | None = None
    stats: Stats = field(default_factory=Stats)

    @property
    def removable(self) -> bool:
        """Whether the device has a tray (a CD-ROM)."""
        return self.config.media == "cdrom"

    @property
    def qdev_id(self) -> str:
        """The device's id or QOM path (``DEVICE_TRAY_MOVED``'s ``id``)."""
        return self.config.qdev

    @property
    def label(self) -> str:
        """A name for messages: the backend's name, else its device's."""
        return self.config.wire_name or self.config.qdev


class Graph:
    """The nodes in naming order, the backends in creation order, and the name counter."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.backends: list[Backend] = []
        self.counter = 0

    # --- naming -------------------------------------------------------------------

    def name(self, given: str | None) -> tuple[str, bool]:
        """The name a new node gets: ``given``, or the next automatic one."""
        if given:
            return given, False
        name = auto_node_name(self.counter)
        self.counter += 1
        return name, True

    def add(self, node: Node) -> Node:
        """List ``node``, named now."""
        self.nodes.append(node)
        return node

    def find(self, name: str) -> Node | None:
        """The node called ``name``."""
        return next((n for n in self.nodes if n.name == name), None)

    def backend(self, name: str) -> Backend | None:
        """The backend called ``name`` (a ``-drive`` id; ``-blockdev`` disks have none)."""
        if not name:
            return None
        return next((b for b in self.backends if b.config.wire_name == name), None)

    def backend_by_qdev(self, qdev: str) -> Backend | None:
        """The backend of the device with id (or QOM path) ``qdev``."""
        return next((b for b in self.backends if b.config.qdev == qdev), None)

    def backend_of(self, node: Node) -> Backend | None:
        """The backend whose root is ``node``."""
        return next((b for b in self.backends if b.root is node), None)

    # --- opening images ------------------------------------------------------------

    def open_image(
        self,
        image: ImageConfig,
        images: dict[str, ImageConfig],
        *,
        node_name: str | None = None,
        file_node_name: str | None = None,
        read_only: bool = False,
        backing: bool = True,
    ) -> Node:
        """Open ``image``: its protocol node, its format node, then its backing chain."""
        name, auto = self.name(file_node_name)
        proto = self.add(
            Node(name, "file", image.file, image.length, image.allocated, read_only, auto=auto)
        )
        return self.open_format(image, proto, images, node_name=node_name, backing=backing)

    def open_format(
        self,
        image: ImageConfig,
        proto: Node,
        images: dict[str, ImageConfig],
        *,
        node_name: str | None = None,
        backing: bool = True,
    ) -> Node:
        """A format node over the protocol node ``proto``, then its backing chain
        (without ``backing``, the node only remembers the name its header gives)."""
        name, auto = self.name(node_name)
        node = self.add(
            Node(
                name,
                image.format,
                image.file,
                image.virtual_size,
                image.allocated,
                proto.read_only,
                auto=auto,
                file=proto,
                data=image.data_bytes,
            )
        )
        if image.format == "qcow2" and image.backing is not None:
            node.backing_file = image.backing
        if backing and image.format == "qcow2" and image.backing is not None:
            under = images.get(image.backing) or ImageConfig(
                image.backing, virtual_size=image.virtual_size
            )
            node.backing = self.open_image(under, images, read_only=True)
        return node

    # --- who uses whom -------------------------------------------------------------

    def parents(self, node: Node) -> list[Node]:
        """The nodes that have ``node`` as their file or backing."""
        return [n for n in self.nodes if n.file is node or n.backing is node]

    def in_use(self, node: Node) -> bool:
        """Whether a node or a backend holds ``node``."""
        return bool(self.parents(node)) or self.backend_of(node) is not None

    def insert_above(self, node: Node, filter_node: Node) -> None:
        """Put ``filter_node`` where ``node`` was: its backends and parents use the filter."""
        for b in self.backends:
            if b.root is node:
                b.root = filter_node
        for n in self.nodes:
            if n is filter_node:
                continue
            if n.file is node:
                n.file = filter_node
            if n.backing is node:
                n.backing = filter_node

    def replace(self, old: Node, new: Node) -> None:
        """Whatever used ``old`` uses ``new`` (a mirror's pivot, a filter's removal)."""
        for b in self.backends:
            if b.root is old:
                b.root = new
        for n in self.nodes:
            if n is new:
                continue
            if n.file is old:
                n.file = new
            if n.backing is old:
                n.backing = new

    def drop(self, node: Node) -> None:
        """Unlist ``node``, then its children that nothing else holds and the monitor
        did not add (QEMU frees a node with its last reference)."""
        if node in self.nodes:
            self.nodes.remove(node)
        for child in (node.file, node.backing):
            if child is not None and not child.monitor and not self.in_use(child):
                self.drop(child)
