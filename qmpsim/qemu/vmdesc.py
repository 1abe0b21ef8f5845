"""The VM a QEMU command line describes, as a :class:`~qmpsim.vm.description.VmConfig`.

Disks come from ``-drive`` and from ``-blockdev`` node chains with the
``-device`` that uses them, named as QEMU names them: a ``-drive`` backend by
its id (``virtio0``, ``ide1-cd0`` when it has none), a ``-blockdev`` disk by its
device's id with an empty backend name on the wire and the node names the
command line gave; ``qdev`` paths, error policies, image formats and sizes as
QEMU reports them.  Watchdog, VNC, SPICE, vCPUs, memory, devices and character
devices complete the description.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qmpsim.vm.description import ChardevConfig, DeviceConfig, VmConfig
from qmpsim.vm.display import SpiceConfig, VncConfig
from qmpsim.vm.guest import GuestConfig
from qmpsim.vm.images import DISK_FORMATS, DiskConfig

from .cmdline import Invocation
from .opts import OptionError, parse_bool

__all__ = ["BLOCK_DEVICES", "WATCHDOGS", "build_vm"]

BLOCK_DEVICES = frozenset(
    (
        "virtio-blk-pci",
        "virtio-blk-device",
        "virtio-blk-ccw",
        "ide-hd",
        "ide-cd",
        "scsi-hd",
        "scsi-cd",
        "scsi-block",
        "usb-storage",
        "floppy",
    )
)
"""Device drivers that put a disk in front of a ``drive``."""
WATCHDOGS = frozenset(("i6300esb", "ib700"))
_CDROMS = frozenset(("ide-cd", "scsi-cd"))
_QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class _Image:
    file: str
    format: str
    virtual_size: int
    actual_size: int

    @property
    def thin(self) -> bool:
        """Whether the image can run out of space: qcow2 grows, a sparse raw file too."""
        return self.format != "raw" or self.actual_size < self.virtual_size


def _image(path: str, fmt: str | None) -> _Image:
    """What QEMU would report for the image at ``path``: format, virtual and allocated size."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            header = f.read(32)
    except OSError:
        return _Image(path, _known(fmt or "raw"), 0, 0)
    if fmt is None:
        fmt = "qcow2" if header.startswith(_QCOW2_MAGIC) else "raw"
    fmt = _known(fmt)
    size = st.st_size
    if fmt == "qcow2" and header.startswith(_QCOW2_MAGIC) and len(header) >= 32:
        (size,) = struct.unpack(">Q", header[24:32])
    return _Image(path, fmt, size, st.st_blocks * 512)


def _known(fmt: str) -> str:
    """``fmt`` as the VM model knows formats: a disk without a format node (the protocol
    node used directly) or in a format it does not model reads as raw."""
    return fmt if fmt in DISK_FORMATS else "raw"


class _Nodes:
    """The ``-blockdev`` graph: node name → node options, nested inline children included."""

    def __init__(self, blockdevs: Sequence[Mapping[str, Any]]) -> None:
        self.nodes: dict[str, Mapping[str, Any]] = {}
        self.unnamed = 0
        for node in blockdevs:
            self.add(node)

    def auto_name(self) -> str:
        # A key for a node the command line did not name; the disk built on it gets
        # QEMU's automatic name from the VM description (VmConfig), as -drive disks do.
        self.unnamed += 1
        return f"#unnamed{self.unnamed}"

    def add(self, node: Mapping[str, Any]) -> str:
        child = node.get("file")
        if isinstance(child, Mapping):
            child_name = self.add(child)
            node = {**node, "file": child_name}
        name = node.get("node-name")
        if not isinstance(name, str):
            name = self.auto_name()
        self.nodes[name] = node
        return name

    def protocol(self, name: str) -> tuple[str | None, str]:
        """The protocol node under ``name`` (``None`` when ``name`` is one) and its filename."""
        node = self.nodes[name]
        child = node.get("file")
        if isinstance(child, str) and child in self.nodes:
            _, filename = self.protocol(child)
            return child, filename
        return None, str(node.get("filename", node.get("file", "")))


def _policy(device: Mapping[str, Any], drive: Mapping[str, Any], key: str, default: str) -> str:
    value = device.get(key, "auto")
    if value == "auto":
        value = drive.get(key, default)
    return str(value)


class _Builder:
    def __init__(self, inv: Invocation) -> None:
        self.inv = inv
        self.nodes = _Nodes(inv.blockdevs)
        self.drives: dict[str, dict[str, Any]] = {}
        self.drive_order: list[str] = []
        self.anonymous = 0
        self.disks: list[DiskConfig] = []

    def drive_ids(self) -> None:
        counters: dict[str, int] = {}
        for drive in self.inv.drives:
            interface = str(drive.get("if", "ide"))
            media = str(drive.get("media", "disk"))
            if "id" in drive:
                ident = str(drive["id"])
            elif interface == "ide":
                index = int(drive.get("index", counters.get("ide", 0)))
                counters["ide"] = index + 1
                kind = "cd" if media == "cdrom" else "hd"
                ident = f"ide{index // 2}-{kind}{index % 2}"
            else:
                index = counters.get(interface, 0)
                counters[interface] = index + 1
                ident = f"{interface}{index}"
            self.drives[ident] = dict(drive)
            self.drive_order.append(ident)

    def qdev(self, device: Mapping[str, Any]) -> str:
        ident = device.get("id")
        if ident is None:
            path = f"/machine/peripheral-anon/device[{self.anonymous}]"
            self.anonymous += 1
        else:
            path = f"/machine/peripheral/{ident}"
        if str(device["driver"]).startswith("virtio-blk"):
            return f"{path}/virtio-backend"
        return path if ident is None else str(ident)

    def disk_for(self, device: Mapping[str, Any], qdev: str) -> DiskConfig:
        ref = str(device.get("drive", ""))
        driver = str(device["driver"])
        media = "cdrom" if driver in _CDROMS else "disk"
        if ref in self.drives:
            drive = self.drives.pop(ref)
            return self.drive_disk(ref, drive, device, qdev, media)
        if ref not in self.nodes.nodes:
            raise OptionError(f"Property '{driver}.drive' can't find value '{ref}'", located=True)
        node = self.nodes.nodes[ref]
        storage, filename = self.nodes.protocol(ref)
        fmt = str(node["driver"]) if storage is not None else None
        image = _image(filename, fmt)
        name = str(device.get("id", ref))
        return DiskConfig(
            name=name,
            node_name="" if ref.startswith("#unnamed") else ref,
            file=image.file,
            format=image.format,
            virtual_size=image.virtual_size,
            actual_size=image.actual_size,
            read_only=parse_bool("read-only", node.get("read-only", False)),
            on_read_error=_policy(device, {}, "rerror", "report"),
            on_write_error=_policy(device, {}, "werror", "enospc"),
            qdev=qdev,
            device="",
            storage_node_name=None if storage is None or storage.startswith("#") else storage,
            media=media,
            thin=image.thin,
        )

    def drive_disk(
        self,
        name: str,
        drive: Mapping[str, Any],
        device: Mapping[str, Any],
        qdev: str,
        media: str,
    ) -> DiskConfig:
        image = _image(str(drive.get("file", "")), drive.get("format"))
        read_only = drive.get("readonly", drive.get("read-only", "off"))
        return DiskConfig(
            name=name,
            node_name=str(drive.get("node-name", "")),
            file=image.file,
            format=image.format,
            virtual_size=image.virtual_size,
            actual_size=image.actual_size,
            read_only=parse_bool("readonly", read_only),
            on_read_error=_policy(device, drive, "rerror", "report"),
            on_write_error=_policy(device, drive, "werror", "enospc"),
            qdev=qdev,
            media="cdrom" if drive.get("media") == "cdrom" else media,
            thin=image.thin,
        )

    def build(self) -> tuple[DiskConfig, ...]:
        self.drive_ids()
        for device in self.inv.devices:
            qdev = self.qdev(device)
            if device["driver"] in BLOCK_DEVICES and "drive" in device:
                self.disks.append(self.disk_for(device, qdev))
        # -drive with an interface: QEMU adds the device itself, after the -device ones
        unattached = 18
        for name, drive in list(self.drives.items()):
            interface = drive.get("if", "ide")
            if interface == "none":
                continue
            if interface == "virtio":
                qdev = self.qdev({"driver": "virtio-blk-pci"})
            else:
                qdev = f"/machine/unattached/device[{unattached}]"
                unattached += 1
            self.disks.append(self.drive_disk(name, drive, {}, qdev, "disk"))
        # QEMU lists disks as it created their backends: the -drive ones in command-line
        # order, then those a -device made on a -blockdev node
        order = {name: i for i, name in enumerate(self.drive_order)}
        return tuple(sorted(self.disks, key=lambda d: order.get(d.name, len(order))))


def _vnc(options: Mapping[str, Any] | None) -> VncConfig | None:
    if options is None:
        return None
    host = str(options["host"]) or "0.0.0.0"
    family = "ipv6" if ":" in host or host.startswith("[") else "ipv4"
    auth = "none"
    if parse_bool("sasl", options.get("sasl", False)):
        auth = "sasl"
    elif "tls-creds" in options:
        auth = "vencrypt"
    elif parse_bool("password", options.get("password", False)):
        auth = "vnc"
    websocket = "websocket" in options
    return VncConfig(host.strip("[]"), 5900 + int(options["display"]), family, auth, websocket)


def _spice(options: Mapping[str, Any] | None) -> SpiceConfig | None:
    if options is None:
        return None
    host = str(options.get("addr", "0.0.0.0"))
    ticketing = not parse_bool("disable-ticketing", options.get("disable-ticketing", False))
    tls = "tls-port" in options
    port = int(options.get("port", options.get("tls-port", 5930)))
    family = "ipv6" if ":" in host else "ipv4"
    return SpiceConfig(host, port, family, "spice" if ticketing else "none", tls)


def _device(options: Mapping[str, Any]) -> DeviceConfig:
    ident = options.get("id")
    rest = tuple((k, v) for k, v in options.items() if k not in ("driver", "id"))
    return DeviceConfig(str(options["driver"]), None if ident is None else str(ident), rest)


def build_vm(
    inv: Invocation,
    *,
    chardevs: Sequence[ChardevConfig] = (),
    cpu_thread_ids: Sequence[int] = (),
    guest: GuestConfig | None = None,
) -> VmConfig:
    """The VM ``inv`` describes; ``chardevs`` and ``cpu_thread_ids`` are what the
    running process set up (names of bound sockets, the vCPU threads)."""
    disks = _Builder(inv).build()
    watchdog = None
    if any(d["driver"] in WATCHDOGS for d in inv.devices):
        watchdog = inv.actions.get("watchdog", "reset")
    machine = inv.machine.get("type")
    cpus = inv.cpus if inv.cpus is not None else (0 if machine in (None, "none") else 1)
    extra: dict[str, Any] = {}
    if inv.uuid is not None:
        extra["uuid"] = inv.uuid
    return VmConfig(
        name=inv.name,
        no_shutdown=inv.no_shutdown,
        initial_state="prelaunch" if inv.paused else "running",
        incoming=inv.incoming,
        watchdog=watchdog,
        disks=disks,
        vnc=_vnc(inv.vnc),
        spice=_spice(inv.spice),
        cpus=cpus,
        kvm_enabled=bool(inv.accel) and inv.accel[0] == "kvm",
        machine=None if machine is None else str(machine),
        memory=inv.memory,
        devices=tuple(_device(d) for d in inv.devices),
        chardevs=tuple(chardevs),
        cpu_thread_ids=tuple(cpu_thread_ids),
        cpu_topology=inv.topology,
        guest=guest,
        **extra,
    )
