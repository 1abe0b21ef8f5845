"""Disks as a block graph: nodes, backends, their queries, resizing, throttling, trays.

The graph (:mod:`qmpsim.vm.nodes`) starts as the VM description says: each disk's
image opened as a protocol node under a format node, backing chains under them,
one backend per disk.  ``blockdev-add``/``blockdev-del`` add and remove nodes;
``query-block``, ``query-named-block-nodes`` and ``query-blockstats`` read the
same graph, so they agree with each other and with ``BLOCK_IO_ERROR``.  Disk
errors (:class:`DiskError`) follow each disk's error policy; guest I/O
(:class:`DiskIo`) moves the statistics on the virtual clock; CD-ROM trays open
and close with ``DEVICE_TRAY_MOVED``, asking the guest (:mod:`qmpsim.vm.guest`)
first when it locked the tray.  Texts of refusals are QEMU's
(``tests/test_diff_block*.py`` compare them with QEMU 7.2 and 10.0).

One component, :class:`BlockGraph`, built in layers, each a module:

* :mod:`qmpsim.vm.block_core`: the graph from the description, finding backends and
  nodes, the queries, :class:`Refused` and :func:`refusals`;
* :mod:`qmpsim.vm.block_media`: CD-ROM trays and removable media (:class:`TrayMoved`);
* :mod:`qmpsim.vm.block_io`: disk errors, their retries, guest I/O (:class:`DiskError`,
  :class:`DiskRepaired`, :class:`DiskIo`);
* this module: ``blockdev-add``/``blockdev-del``, ``block_resize``,
  ``block_set_io_throttle``, and what each cause needs of the VM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from qmpsim.errors import suggest

from . import block_info as info
from .block_core import Refused, refusals, wellformed
from .block_io import BlockIo, DiskError, DiskIo, DiskRepaired
from .block_media import TrayMoved, Trays
from .component import Unmet, on_command
from .images import ImageConfig
from .nodes import Node, Throttle
from .values import Outcome

__all__ = [
    "BlockGraph",
    "DiskError",
    "DiskIo",
    "DiskRepaired",
    "Refused",
    "TrayMoved",
    "refusals",
    "wellformed",
]


class BlockGraph(BlockIo, Trays):
    """The block layer: nodes, backends, disk errors, I/O, throttling and trays."""

    # --- blockdev-add / blockdev-del ------------------------------------------------

    @on_command("blockdev-add")
    @refusals
    def blockdev_add(self, args: Mapping[str, Any]) -> Outcome:
        if not args.get("node-name"):
            raise Refused("'node-name' must be specified for the root node")
        node = self._open(args, bool(args.get("read-only", False)))
        node.monitor = True
        return Outcome({})

    def _open(self, args: Mapping[str, Any], read_only: bool) -> Node:
        """Open the node ``args`` describes (its inline children first)."""
        driver = str(args.get("driver"))
        name = args.get("node-name")
        if name is not None:
            self._check_name(str(name))
        read_only = bool(args.get("read-only", read_only))
        if driver in ("raw", "qcow2"):
            child = args.get("file")
            if child is None:
                raise Refused("Parameter 'file' is missing")
            if isinstance(child, str):
                proto = self.graph.find(child) or self._refuse_missing(child)
                if self.graph.backend_of(proto) is not None or self.graph.parents(proto):
                    raise Refused(
                        f"Conflicts with use by {self._user(proto)} as 'file', which does not "
                        "allow 'write' on " + proto.name
                    )
            else:
                proto = self._open(child, read_only)
            image = self.images.get(proto.filename)
            if image is None or image.format != driver:
                image = ImageConfig(proto.filename, driver, proto.size, proto.allocated)
            backing = args.get("backing", "")
            node = self.graph.open_format(
                image, proto, self.images, node_name=name, backing=backing == ""
            )
            if isinstance(backing, str) and backing:
                node.backing = self.graph.find(backing) or self._refuse_missing(backing)
                node.backing_file = node.backing.filename
            node.read_only = read_only
            return node
        filename = str(args.get("filename", ""))
        image = self.images.get(filename) or ImageConfig(filename, "raw")
        node_name, auto = self.graph.name(name)
        return self.graph.add(
            Node(node_name, driver, filename, image.length, image.allocated, read_only, auto=auto)
        )

    def _check_name(self, name: str) -> None:
        """``bdrv_assign_node_name``'s checks, in its order."""
        if not wellformed(name):
            raise Refused(f"Invalid node-name: '{name}'")
        if self.graph.backend(name) is not None:
            raise Refused(f"node-name={name} is conflicting with a device id")
        if self.graph.find(name) is not None:
            raise Refused(f"Duplicate nodes with node-name='{name}'")
        if len(name) >= 32:
            raise Refused("Node name too long")

    def _refuse_missing(self, name: str) -> Node:
        raise Refused(f"Cannot find device='{name}' nor node-name='{name}'")

    def _user(self, node: Node) -> str:
        backend = self.graph.backend_of(node)
        if backend is not None:
            return f"device '{backend.config.qdev}'"
        parents = self.graph.parents(node)
        return f"node '{parents[0].name}'" if parents else "nobody"

    @on_command("blockdev-del")
    @refusals
    def blockdev_del(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args.get("node-name"))
        node = self.graph.find(name)
        if node is None:
            raise Refused(f"Failed to find node with node-name='{name}'")
        if self.graph.backend_of(node) is not None:
            raise Refused(f"Node {name} is in use")
        if not node.monitor:
            raise Refused(f"Node {name} is not owned by the monitor")
        if self.graph.parents(node):
            raise Refused(f"Block device {name} is in use")
        self.graph.drop(node)
        return Outcome({})

    # --- block_resize ---------------------------------------------------------------

    @on_command("block_resize")
    @refusals
    def block_resize(self, args: Mapping[str, Any]) -> Outcome:
        device, node_name = args.get("device"), args.get("node-name")
        node = self.lookup(device, node_name)
        if node is None:
            raise Refused(f"Cannot find device='{device or ''}' nor node-name='{node_name or ''}'")
        size = int(args["size"])
        if size < 0:
            raise Refused("Parameter 'size' expects a >0 size")
        target = node
        while target.is_filter and target.child is not None:
            target = target.child
        if target.driver == "qcow2" and size % 512:
            raise Refused("The new size must be a multiple of 512")
        if target.read_only:
            raise Refused("Image is read-only")
        if target.driver in ("raw", "file"):
            size = -(-size // 512) * 512  # a raw image reports whole sectors
            for n in (target, target.file):
                if n is not None:
                    n.size = size
        else:
            target.size = size
        image = self.images.get(target.filename)
        if image is not None and target.is_format:
            self.images[target.filename] = replace(image, virtual_size=size)
        # a thin disk that ran out of space has room to grow again
        for backend in self.graph.backends:
            if self._shown(backend) is target:
                failing = self._failing.get(backend.config.name)
                if failing is not None and failing.nospace:
                    del self._failing[backend.config.name]
        return Outcome({})

    # --- throttling -----------------------------------------------------------------

    @on_command("block_set_io_throttle")
    @refusals
    def block_set_io_throttle(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        if backend.root is None:
            raise Refused("Device has no medium")
        limits = {
            k: int(args[k])
            for k in (*info.THROTTLE_LIMITS, *info.THROTTLE_EXTRAS)
            if k in args and args[k] is not None
        }
        problem = _throttle_problem(limits)
        if problem:
            raise Refused(problem)
        if any(limits.get(k, 0) for k in (*info.THROTTLE_LIMITS, *info.THROTTLE_EXTRAS[:6])):
            group = args.get("group")
            if group is None:  # a new throttle joins the group named after its device
                old = backend.throttle
                group = old.group if old is not None else args.get("device") or args.get("id")
            backend.throttle = Throttle(limits, str(group))
        else:
            backend.throttle = None
        return Outcome({})

    # --- what a cause needs ------------------------------------------------------------

    def cause_unmet(self, cause: Any) -> Unmet | None:
        names = [b.config.name for b in self.graph.backends]
        backend = next(
            (b for b in self.graph.backends if cause.device in (b.config.name, b.config.wire_name)),
            None,
        )
        if backend is None:
            known = ", ".join(names) if names else "none: add them under vm.disks"
            return Unmet(
                f"no disk named {cause.device!r}{suggest(cause.device, names)};"
                f" the VM's disks are: {known}",
                "device",
            )
        disk = backend.config
        if isinstance(cause, DiskError):
            if cause.operation not in ("read", "write"):
                return Unmet(f"operation {cause.operation!r} is not read or write", "operation")
            if cause.nospace and not disk.thin:
                return Unmet(
                    f"disk {disk.name!r} is not thin-provisioned, so it cannot run out of"
                    " space; add `thin: true` to it in vm.disks",
                    "nospace",
                )
        if isinstance(cause, DiskIo):
            if cause.operation not in ("read", "write", "flush"):
                return Unmet(
                    f"operation {cause.operation!r} is not read, write or flush", "operation"
                )
            if cause.size < 0 or cause.requests < 1 or cause.offset < 0:
                return Unmet("an I/O needs a size and offset >= 0 and at least one request")
        if isinstance(cause, TrayMoved) and not backend.removable:
            return Unmet(
                f"disk {disk.name!r} has no tray (it is not a CD-ROM); add `media: cdrom`"
                " to it in vm.disks",
                "device",
            )
        return None

    def cause_error(self, cause: Any) -> str | None:
        backend = self.backend(cause.device)
        if isinstance(cause, DiskError | DiskIo) and backend.root is None:
            return f"disk {backend.config.name!r} has no medium"
        return None


def _throttle_problem(limits: Mapping[str, int]) -> str | None:
    """``throttle_is_valid``'s first complaint, if any."""
    for kind in ("bps", "iops"):
        total = limits.get(kind, 0) or limits.get(f"{kind}_max", 0)
        split = any(
            limits.get(f"{kind}_{rw}", 0) or limits.get(f"{kind}_{rw}_max", 0)
            for rw in ("rd", "wr")
        )
        if total and split:
            return "bps/iops/max total values and read/write values cannot be used at the same time"
    for value in limits.values():
        if value < 0 or value > 1_000_000_000_000_000:
            return "bps/iops/max values must be within [0, 1000000000000000]"
    return None
