"""The block layer's base: the graph as the VM description opens it, and what reads it.

:class:`BlockCore` builds the graph (:mod:`qmpsim.vm.nodes`) from the description:
each disk's image opened as a protocol node under a format node, backing chains
under them, one backend per disk.  It finds backends and nodes as QEMU does
(``bdrv_lookup_bs``, ``qmp_get_blk``) and answers ``query-block``,
``query-named-block-nodes`` and ``query-blockstats`` (:mod:`qmpsim.vm.block_info`
writes their members).  A command that fails deep down raises :class:`Refused`;
:func:`refusals` answers it with QEMU's error, after the events made so far.
The layers above it are :mod:`qmpsim.vm.block_media` (trays and media),
:mod:`qmpsim.vm.block_io` (disk errors and guest I/O) and :mod:`qmpsim.vm.block`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import block_info as info
from .component import Component, on_command
from .guest import Guest
from .images import DiskConfig, ImageConfig, backing_chain, creation_order
from .nodes import Backend, Graph, Node
from .values import CommandError, Event, MachineError, Outcome


class Refused(Exception):
    """A command refused with QEMU's error (raised deep, answered at the top)."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.error = CommandError(error_class, desc)


def refusals(fn: Any) -> Any:
    """Turn a :class:`Refused` raised by a command handler into its error reply (after
    the events the handler had made: QEMU sends those before it fails).  The events are
    the block graph's: the part's own when it is the graph, else those of the graph it
    works on (its ``block``, as the job starts have it)."""

    def run(self: Any, args: Mapping[str, Any]) -> Outcome:
        try:
            outcome: Outcome = fn(self, args)
        except Refused as exc:
            graph = self if isinstance(self, BlockCore) else self.block
            return Outcome(exc.error, tuple(graph.pending_events()))
        return outcome

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    run.__dict__.update(fn.__dict__)
    return run


class BlockCore(Component):
    """The block graph from the description, finding its parts, and its queries."""

    def reset(self) -> None:
        self.graph = Graph()
        vm = self.host.vm
        self.images: dict[str, ImageConfig] = {i.file: i for i in vm.images}
        # QEMU opens -blockdev nodes before -drive ones, but lists the backends -drive
        # made before those its devices made for -blockdev nodes
        attached = [self._attach(d) for d in creation_order(vm.disks)]
        self.graph.backends = [b for b in attached if b.config.device != ""]
        self.graph.backends += [b for b in attached if b.config.device == ""]
        self._events: list[Event] = []  # made by a handler that is refused half-way

    @property
    def version(self) -> tuple[int, int, int]:
        return self.host.profile.version

    def _attach(self, disk: DiskConfig) -> Backend:
        """A disk's backend, its image opened as QEMU opens a ``-drive``."""
        if not disk.has_medium:
            return Backend(disk, None)
        for image in backing_chain(disk, self.host.vm.images):
            self.images.setdefault(image.file, image)
        top = ImageConfig(
            disk.file,
            disk.format,
            disk.virtual_size,
            disk.actual_size,
            disk.backing,
            disk.file_size,
            disk.data,
        )
        self.images[disk.file] = top
        read_only = disk.read_only or (disk.media == "cdrom" and disk.device is None)
        g = self.graph
        proto_name, proto_auto = g.name(disk.storage_node_name)
        proto = g.add(
            Node(
                proto_name,
                "file",
                disk.file,
                top.length,
                top.allocated,
                read_only,
                auto=proto_auto,
            )
        )
        # the description already holds the format node's name; an automatic one
        # advanced QEMU's counter as it was given
        if disk.node_name.startswith("#"):
            g.counter += 1
        root = g.open_format(top, proto, self.images, node_name=disk.node_name)
        if disk.device == "":  # -blockdev nodes belong to the monitor, not to the device
            root.monitor = True
            proto.monitor = disk.storage_node_name is not None
        locked = disk.media == "cdrom" and self.host.part(Guest).locks_trays
        return Backend(disk, root, locked=locked)

    # --- finding things -------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        """The backend of the disk called ``name`` (its description name or wire name)."""
        for b in self.graph.backends:
            if name in (b.config.name, b.config.wire_name):
                return b
        known = ", ".join(b.config.name for b in self.graph.backends) or "none"
        raise MachineError(f"no disk named {name!r} (disks: {known})")

    def lookup(self, device: str | None, node_name: str | None) -> Node | None:
        """``bdrv_lookup_bs``: a backend's root by name, else a node by name."""
        if device:
            b = self.graph.backend(device)
            if b is not None:
                return b.root
        if node_name:
            return self.graph.find(node_name)
        return None

    def device_name(self, node: Node) -> str:
        """``bdrv_get_device_name``: the name of the backend ``node`` is the root of."""
        backend = self.graph.backend_of(node)
        return backend.config.wire_name if backend is not None else ""

    def device_or_node_name(self, node: Node) -> str:
        """``bdrv_get_device_or_node_name``."""
        return self.device_name(node) or node.name

    def _by_device_or_id(self, args: Mapping[str, Any]) -> Backend:
        """``qmp_get_blk``: exactly one of ``device`` and ``id``."""
        device, qdev = args.get("device"), args.get("id")
        if (device is None) == (qdev is None):
            raise Refused("Need exactly one of 'device' and 'id'")
        if qdev is not None:
            b = self.graph.backend_by_qdev(qdev)
            if b is not None:
                return b
            if self.graph.backend_by_qdev(f"/machine/peripheral/{qdev}/virtio-backend"):
                # a virtio-blk proxy: its backend is its virtio-backend child's
                raise Refused("Device does not have a block device backend")
            raise Refused(f"Device '{qdev}' not found", "DeviceNotFound")
        b = self.graph.backend(str(device))
        if b is None:
            raise Refused(f"Device '{device}' not found", "DeviceNotFound")
        return b

    @staticmethod
    def _shown(backend: Backend) -> Node | None:
        """What ``query-block`` shows as inserted: the root, past implicit filters."""
        node = backend.root
        while node is not None and node.auto and node.driver in ("mirror_top", "commit_top"):
            node = node.backing
        return node

    # --- queries --------------------------------------------------------------------

    @on_command("query-block")
    def query_block(self, _args: Mapping[str, Any]) -> Outcome:
        if not self.host.profile.run_states:
            return Outcome([info.legacy_block_info(b) for b in self.graph.backends])
        return Outcome(
            [info.block_info(b, self.version, self._shown(b)) for b in self.graph.backends]
        )

    @on_command("query-named-block-nodes")
    def query_named_block_nodes(self, args: Mapping[str, Any]) -> Outcome:
        nested = not args.get("flat", False)
        return Outcome(
            [info.device_info(n, self.version, nested=nested) for n in reversed(self.graph.nodes)]
        )

    @on_command("query-blockstats")
    def query_blockstats(self, args: Mapping[str, Any]) -> Outcome:
        if args.get("query-nodes", False):
            return Outcome(
                [info.node_stats(n, self.version, backing=False) for n in self.graph.nodes]
            )
        now = self.host.clock()
        return Outcome([info.backend_stats(b, self.version, now) for b in self.graph.backends])

    def pending_events(self) -> list[Event]:
        """The events a command made so far (a failing command sends them with its error)."""
        out, self._events = self._events, []
        return out


def wellformed(name: str) -> bool:
    """``id_wellformed``: a letter, then letters, digits, ``-``, ``.`` and ``_``."""
    return (
        bool(name)
        and name[0].isascii()
        and name[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "-._") for c in name)
    )
