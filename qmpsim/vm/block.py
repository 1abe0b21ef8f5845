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
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from qmpsim.errors import suggest

from . import block_info as info
from .block_errors import ErrorAction
from .component import Component, Unmet, on_cause, on_command
from .guest import Guest
from .images import DiskConfig, ImageConfig, backing_chain, creation_order
from .nodes import Backend, Graph, Node, Throttle
from .runstate import RunState
from .values import CommandError, Event, MachineError, Outcome

_STRERROR = {False: "Input/output error", True: "No space left on device"}
# simulated request latency, for the *_total_time_ns counters
_LATENCY_NS = 100_000


# --- causes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskError:
    """A disk I/O error on ``device``; the disk's error policy decides the action.

    When the action is ``stop``, ``cont`` retries the request: it succeeds unless
    ``persistent``, in which case it fails again (same event, another STOP) at every
    ``cont`` until :class:`DiskRepaired` (or ``system_reset``, which drops it).  A
    thin disk that ran out of space (``nospace``) also has room again once
    ``block_resize`` grows it.
    """

    device: str
    operation: str = "read"  # "read" | "write"
    nospace: bool = False
    persistent: bool = False


@dataclass(frozen=True)
class DiskRepaired:
    """The host fixed what made ``device`` fail; the next ``cont`` retry succeeds."""

    device: str


@dataclass(frozen=True)
class DiskIo:
    """The guest read or wrote ``size`` bytes on ``device`` in ``requests`` requests,
    from ``offset``; ``query-blockstats`` counts them (``flush`` counts requests only)."""

    device: str
    operation: str = "read"  # "read" | "write" | "flush"
    size: int = 4096
    requests: int = 1
    offset: int = 0


@dataclass(frozen=True)
class TrayMoved:
    """Someone at the VM (the guest, or a hand on the drive) opened or closed a CD-ROM tray."""

    device: str
    open: bool = True


def _error(desc: str, error_class: str = "GenericError") -> Outcome:
    return Outcome(CommandError(error_class, desc))


class Refused(Exception):
    """A command refused with QEMU's error (raised deep, answered at the top)."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.error = CommandError(error_class, desc)


def refusals(fn: Any) -> Any:
    """Turn a :class:`Refused` raised by a command handler into its error reply (after
    the events the handler had made: QEMU sends those before it fails)."""

    def run(self: Any, args: Mapping[str, Any]) -> Outcome:
        try:
            outcome: Outcome = fn(self, args)
        except Refused as exc:
            return Outcome(exc.error, tuple(self.host.part(BlockGraph).pending_events()))
        return outcome

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    run.__dict__.update(fn.__dict__)
    return run


class BlockGraph(Component):
    """The block layer: nodes, backends, disk errors, I/O, throttling and trays."""

    def reset(self) -> None:
        self.graph = Graph()
        vm = self.host.vm
        self.images: dict[str, ImageConfig] = {i.file: i for i in vm.images}
        # QEMU opens -blockdev nodes before -drive ones, but lists the backends -drive
        # made before those its devices made for -blockdev nodes
        attached = [self._attach(d) for d in creation_order(vm.disks)]
        self.graph.backends = [b for b in attached if b.config.device != ""]
        self.graph.backends += [b for b in attached if b.config.device == ""]
        self._failing: dict[str, DiskError] = {}
        self._retry: list[DiskError] = []
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

    # --- trays ----------------------------------------------------------------------

    def _tray_event(self, backend: Backend, open_: bool) -> Event:
        backend.tray_open = open_
        return self.host.event(
            "DEVICE_TRAY_MOVED",
            {"device": backend.config.wire_name, "id": backend.qdev_id, "tray-open": open_},
        )

    def pending_events(self) -> list[Event]:
        """The events a command made so far (a failing command sends them with its error)."""
        out, self._events = self._events, []
        return out

    def _open_tray(self, backend: Backend, args: Mapping[str, Any], force: bool) -> str | None:
        """``do_open_tray``: ``None`` once open, else why not: ``locked`` (the guest was
        asked to open it), ``no-tray``; a device without removable media is refused."""
        label = str(args["id"] if args.get("id") is not None else args.get("device"))
        if not backend.removable:
            raise Refused(f"Device '{label}' is not removable")
        if backend.tray_open:
            return None
        if backend.locked and not force:
            opens = functools.partial(self._guest_opens, backend)  # no closure: picklable
            self.host.part(Guest).tray_eject_request(label, opens)
            return "locked"
        backend.locked = False
        self._events.append(self._tray_event(backend, True))
        return None

    def _guest_opens(self, backend: Backend) -> list[Event]:
        if backend.tray_open:
            return []
        backend.locked = False
        return [self._tray_event(backend, True)]

    @staticmethod
    def _label(args: Mapping[str, Any]) -> str:
        return str(args["device"] if args.get("device") is not None else args.get("id"))

    @on_command("blockdev-open-tray")
    @refusals
    def blockdev_open_tray(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        self._open_tray(backend, args, bool(args.get("force", False)))  # locked: the guest decides
        return Outcome({}, tuple(self.pending_events()))

    @on_command("blockdev-close-tray")
    @refusals
    def blockdev_close_tray(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        self._close_tray(backend, args)
        return Outcome({}, tuple(self.pending_events()))

    def _close_tray(self, backend: Backend, args: Mapping[str, Any]) -> None:
        if not backend.removable:
            raise Refused(f"Device '{self._label(args)}' is not removable")
        if backend.tray_open:
            self._events.append(self._tray_event(backend, False))
            # a guest that locks trays locks the new medium in
            backend.locked = backend.root is not None and self.host.part(Guest).locks_trays

    def _remove_medium(self, backend: Backend, args: Mapping[str, Any]) -> None:
        if not backend.removable:
            raise Refused(f"Device '{self._label(args)}' is not removable")
        if not backend.tray_open:
            raise Refused(f"Tray of device '{self._label(args)}' is not open")
        if backend.root is not None:
            root, backend.root = backend.root, None
            if not root.monitor:
                self.graph.drop(root)

    def _insert_medium(self, backend: Backend, node: Node) -> None:
        if not backend.removable:
            raise Refused("Device is not removable")
        if not backend.tray_open:
            raise Refused("Tray of the device is not open")
        if backend.root is not None:
            raise Refused("There already is a medium in the device")
        backend.root = node

    @on_command("eject")
    @refusals
    def eject(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        if self._open_tray(backend, args, bool(args.get("force", False))) == "locked":
            label = str(args["id"] if args.get("id") is not None else args.get("device"))
            raise Refused(
                f"Device '{label}' is locked and force was not specified, "
                "wait for tray to open and try again"
            )
        self._remove_medium(backend, args)
        return Outcome({}, tuple(self.pending_events()))

    @on_command("blockdev-remove-medium")
    @refusals
    def blockdev_remove_medium(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        self._remove_medium(backend, args)
        return Outcome({})

    @on_command("blockdev-insert-medium")
    @refusals
    def blockdev_insert_medium(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        name = str(args.get("node-name"))
        node = self.graph.find(name)
        if node is None:
            raise Refused(f"Node '{name}' not found")
        if self.graph.backend_of(node) is not None:
            raise Refused(f"Node '{name}' is already in use")
        self._insert_medium(backend, node)
        return Outcome({})

    @on_command("blockdev-change-medium")
    @refusals
    def blockdev_change_medium(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        mode = args.get("read-only-mode", "retain")
        read_only = {"read-only": True, "read-write": False}.get(
            str(mode),
            backend.root.read_only if backend.root is not None else backend.config.media == "cdrom",
        )
        filename = str(args["filename"])
        fmt = args.get("format")
        known = self.images.get(filename)
        if fmt is None:
            fmt = known.format if known is not None else "raw"
        image = known if known is not None and known.format == fmt else ImageConfig(filename, fmt)
        medium = self.graph.open_image(image, self.images, read_only=read_only)
        try:
            if self._open_tray(backend, args, bool(args.get("force", False))) == "locked":
                label = str(args["id"] if args.get("id") is not None else args.get("device"))
                raise Refused(
                    f"Device '{label}' is locked and force was not specified, "
                    "wait for tray to open and try again"
                )
            self._remove_medium(backend, args)
            self._insert_medium(backend, medium)
        except Refused:
            self.graph.drop(medium)  # the new medium's last reference goes
            raise
        self._close_tray(backend, args)
        return Outcome({}, tuple(self.pending_events()))

    @on_cause(TrayMoved)
    def tray_moved(self, c: TrayMoved) -> list[Event]:
        backend = self.backend(c.device)
        if backend.tray_open == c.open:
            return []
        if c.open:
            backend.locked = False
        return [self._tray_event(backend, c.open)]

    # --- disk errors and I/O ----------------------------------------------------------

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

    @on_cause(DiskError)
    def disk_error(self, c: DiskError) -> list[Event]:
        backend = self.backend(c.device)
        disk = backend.config
        action = disk.action(c.operation, c.nospace)
        if action == ErrorAction.STOP and disk.iostatus_enabled and backend.io_status == "ok":
            backend.io_status = "nospace" if c.nospace else "failed"
        if action == ErrorAction.STOP and c.persistent:
            self._failing[disk.name] = c
        if action == ErrorAction.REPORT:
            stats = backend.stats
            if c.operation == "read":
                stats.failed_rd_operations += 1
            else:
                stats.failed_wr_operations += 1
            stats.last_io = self.host.clock()
        events = [self.host.event("BLOCK_IO_ERROR", self._io_error_data(backend, c, action))]
        if action == ErrorAction.STOP:
            events += self.host.stop(RunState.IO_ERROR)
        return events

    def _io_error_data(self, backend: Backend, c: DiskError, action: ErrorAction) -> dict[str, Any]:
        disk = backend.config
        if not self.host.profile.run_states:
            return {"device": disk.wire_name, "operation": c.operation, "action": action.value}
        data: dict[str, Any] = {}
        spec = self.host.profile.events["BLOCK_IO_ERROR"].data
        if spec is not None and spec.member("qom-path") is not None:  # QEMU 9.2 on
            qdev = disk.qdev
            data["qom-path"] = qdev if qdev.startswith("/") else f"/machine/peripheral/{qdev}"
        data["device"] = disk.wire_name
        root = self._shown(backend)
        data["node-name"] = root.name if root is not None else disk.node_name
        data["operation"] = c.operation
        data["action"] = action.value
        if disk.iostatus_enabled:
            data["nospace"] = c.nospace
        data["reason"] = _STRERROR[c.nospace]
        return data

    @on_cause(DiskRepaired)
    def disk_repaired(self, c: DiskRepaired) -> list[Event]:
        self._failing.pop(self.backend(c.device).config.name, None)
        return []

    @on_cause(DiskIo)
    def disk_io(self, c: DiskIo) -> list[Event]:
        backend = self.backend(c.device)
        s = backend.stats
        if c.operation == "read":
            s.rd_bytes += c.size
            s.rd_operations += c.requests
            s.rd_total_time_ns += c.requests * _LATENCY_NS
        elif c.operation == "write":
            s.wr_bytes += c.size
            s.wr_operations += c.requests
            s.wr_total_time_ns += c.requests * _LATENCY_NS
            root = self._shown(backend)
            end = c.offset + c.size
            for node in (root, root.file if root is not None else None):
                if node is not None:
                    node.wr_highest_offset = max(node.wr_highest_offset, end)
            if root is not None and root.driver == "qcow2":
                # a qcow2 image allocates clusters as the guest first writes them
                grown = -(-end // 65536) * 65536 + root.allocated // 2
                root.allocated = max(root.allocated, min(grown, root.size + root.allocated))
                if root.file is not None:
                    root.file.allocated = root.allocated
        else:
            s.flush_operations += c.requests
            s.flush_total_time_ns += c.requests * _LATENCY_NS
        s.last_io = self.host.clock()
        return []

    # --- what the machine asks on cont and system_reset -------------------------------

    def continued(self) -> None:
        """``cont``: io-status back to ok; stopped requests are retried after the reply."""
        for backend in self.graph.backends:
            backend.io_status = "ok"

    def resumed(self) -> None:
        """The VM runs again: the devices retry the requests that stopped it."""
        self._retry += self._failing.values()
        self._failing.clear()

    def requests_dropped(self) -> None:
        """``system_reset``: the requests waiting for a retry are dropped."""
        self._failing.clear()

    def next_deadline(self) -> float | None:
        return self.host.clock() if self._retry else None

    def poll(self) -> list[Event]:
        out: list[Event] = []
        retry, self._retry = self._retry, []
        for error in retry:
            out += self.disk_error(error)
        return out


def wellformed(name: str) -> bool:
    """``id_wellformed``: a letter, then letters, digits, ``-``, ``.`` and ``_``."""
    return (
        bool(name)
        and name[0].isascii()
        and name[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "-._") for c in name)
    )


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
