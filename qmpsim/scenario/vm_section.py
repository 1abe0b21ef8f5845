"""A scenario's ``vm`` section, both ways: read into the one VM description
(:class:`~qmpsim.vm.description.VmConfig`) and written back from it.

The section's keys are the grammar's (:data:`qmpsim.scenario.grammar_vm._VM`); this
module is the one place that says which field of the description each key is,
and what a key left out means (QEMU's choice, as :class:`VmConfig` completes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmpsim.scenario.nodes import NodeReader, Raw
from qmpsim.vm.description import DeviceConfig, VmConfig
from qmpsim.vm.display import SpiceConfig, VncConfig
from qmpsim.vm.guest import GuestConfig
from qmpsim.vm.images import (
    DEFAULT_SIZE,
    DiskConfig,
    ImageConfig,
    default_file,
    is_auto_node_name,
)
from qmpsim.vm.values import MachineError

if TYPE_CHECKING:
    import yaml

__all__ = ["BALLOON", "has_balloon", "read_vm", "vm_document"]

BALLOON = DeviceConfig("virtio-balloon-pci", "balloon0")
"""The device ``balloon: true`` adds."""

_DEFAULT = VmConfig()
_DEFAULT_GUEST = GuestConfig()


def has_balloon(vm: VmConfig) -> bool:
    """Whether ``vm`` has a balloon device (what ``guest-balloon`` causes need)."""
    return any(d.driver.startswith("virtio-balloon") for d in vm.devices)


# --- reading -------------------------------------------------------------------------


def read_vm(reader: NodeReader, raw: Raw, node: yaml.Node) -> tuple[VmConfig, int]:
    """The VM description of a validated ``vm`` mapping (``node``), and its ``seed``."""
    disks = _disks(reader, raw)
    if raw.get("balloon", (False,))[0] and not raw.get("cpus", (0,))[0]:
        raise reader.error(
            raw["balloon"][1],
            "vm.balloon",
            "a balloon device needs a PCI bus: give the VM cpus (1 or more)",
        )
    extra: dict[str, Any] = {}
    for key in ("name", "uuid", "memory", "incoming", "watchdog"):
        if key in raw:
            extra[key] = raw[key][0]
    if "vnc" in raw:
        extra["vnc"] = VncConfig(**_values(raw["vnc"][0]))
    if "spice" in raw:
        extra["spice"] = SpiceConfig(**_values(raw["spice"][0]))
    if "guest" in raw:
        try:
            extra["guest"] = GuestConfig(**_values(raw["guest"][0]))
        except MachineError as exc:
            raise reader.error(raw["guest"][1], "vm.guest", str(exc)) from None
    try:
        vm = VmConfig(
            no_shutdown=raw.get("no_shutdown", (False,))[0],
            initial_state=raw.get("initial_state", ("running",))[0],
            disks=disks,
            images=tuple(_image(_values(i)) for i in raw.get("images", ([], None))[0]),
            cpus=raw.get("cpus", (0,))[0],
            devices=(BALLOON,) if raw.get("balloon", (False,))[0] else (),
            **extra,
        )
    except MachineError as exc:  # the grammar leaves little to refuse here
        raise reader.error(node, "vm", str(exc)) from None
    return vm, raw.get("seed", (0,))[0]


def _values(raw: Raw) -> dict[str, Any]:
    return {k: v for k, (v, _) in raw.items()}


def _disks(reader: NodeReader, raw: Raw) -> tuple[DiskConfig, ...]:
    disks: list[DiskConfig] = []
    for i, d in enumerate(raw.get("disks", ([], None))[0]):
        values = _values(d)
        if "size" in values:
            values["virtual_size"] = values.pop("size")
        disk = DiskConfig(**values)
        if any(x.name == disk.name for x in disks):
            node = raw["disks"][1].value[i]
            raise reader.error(node, f"vm.disks[{i}]", f"a second disk named {disk.name!r}")
        if disk.node_name and any(x.node_name == disk.node_name for x in disks):
            raise reader.error(
                d["node_name"][1],
                f"vm.disks[{i}].node_name",
                f"a second disk with node name {disk.node_name!r}",
            )
        disks.append(disk)
    return tuple(disks)


def _image(values: dict[str, Any]) -> ImageConfig:
    if "size" in values:
        values["virtual_size"] = values.pop("size")
    return ImageConfig(**values)


# --- writing -------------------------------------------------------------------------


def vm_document(vm: VmConfig, seed: int = 0) -> dict[str, Any]:
    """A ``vm`` section that reads back to ``vm`` (and ``seed``): only what differs
    from the defaults, and nothing QEMU chose (automatic node names, default files)."""
    out: dict[str, Any] = {}
    if vm.name is not None:
        out["name"] = vm.name
    if vm.uuid != _DEFAULT.uuid:
        out["uuid"] = vm.uuid
    if seed:
        out["seed"] = seed
    if vm.no_shutdown:
        out["no_shutdown"] = True
    if vm.initial_state != _DEFAULT.initial_state:
        out["initial_state"] = vm.initial_state
    if vm.watchdog is not None:
        out["watchdog"] = vm.watchdog
    if vm.cpus:
        out["cpus"] = vm.cpus
    if vm.memory != _DEFAULT.memory:
        out["memory"] = vm.memory
    if has_balloon(vm):
        out["balloon"] = True
    if vm.incoming is not None:
        out["incoming"] = vm.incoming
    if vm.disks:
        out["disks"] = [_disk_document(d) for d in vm.disks]
    if vm.images:
        out["images"] = [_image_document(i) for i in vm.images]
    if vm.vnc is not None:
        out["vnc"] = _changed(vm.vnc, VncConfig(), ("host", "port", "family", "auth"))
    if vm.spice is not None:
        out["spice"] = _changed(vm.spice, SpiceConfig(), ("host", "port", "family", "auth", "tls"))
    if vm.guest is not None:
        out["guest"] = _guest_document(vm.guest)
    return out


def _changed(value: Any, default: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(value, n) for n in names if getattr(value, n) != getattr(default, n)}


def _disk_document(d: DiskConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"name": d.name}
    out |= _changed(d, DiskConfig(), ("on_read_error", "on_write_error", "thin", "format"))
    if d.file != default_file(d):
        out["file"] = d.file
    if d.node_name and not is_auto_node_name(d.node_name):
        out["node_name"] = d.node_name
    if d.media != "disk":
        out["media"] = d.media
    if d.virtual_size != DEFAULT_SIZE:
        out["size"] = d.virtual_size
    return out | _changed(d, DiskConfig(), ("data", "backing"))


def _image_document(image: ImageConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"file": image.file}
    if image.format != "qcow2":
        out["format"] = image.format
    if image.virtual_size != DEFAULT_SIZE:
        out["size"] = image.virtual_size
    return out | _changed(image, ImageConfig(""), ("data", "backing"))


def _guest_document(guest: GuestConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (
        "powerdown",
        "powerdown_delay",
        "unplug",
        "unplug_delay",
        "lock_tray",
        "tray",
        "tray_delay",
        "balloon",
        "balloon_delay",
        "balloon_rate",
    ):
        value = getattr(guest, name)
        if value == getattr(_DEFAULT_GUEST, name):
            continue
        if name.endswith("_delay"):
            low, high = value
            if low != high:
                raise ValueError(
                    f"guest {name} {low:g}..{high:g}s: a scenario file gives one duration"
                )
            value = low
        out[name] = value
    return out
