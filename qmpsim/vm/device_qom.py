"""What QOM and ``query-pci`` show of the plugged devices and the vCPUs.

``qom-list``, ``qom-get`` and ``qom-set`` under ``/machine/peripheral`` (and
``/machine/peripheral-anon``, a virtio proxy's ``virtio-backend``, a vCPU's path)
read the devices :class:`~qmpsim.vm.device_tree.DeviceTree` keeps; a component that
owns a device answers for its properties (:mod:`qmpsim.vm.qom`).  A device's list is
what the profile's QEMU listed for its type where recorded.  ``query-pci`` lists the
built-in functions of a ``pc`` and the plugged PCI devices, slot by slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import qom
from .component import on_command
from .device_tree import ANONYMOUS, PERIPHERAL, DeviceTree
from .device_types import PciFunction
from .values import CommandError, Outcome

# a QOM object's properties by name, each with the type and the id its errors name
_Table = dict[str, tuple[qom.Property, str, str | None]]


class DeviceQom(DeviceTree):
    """The devices as QOM and ``query-pci`` show them."""

    @on_command("qom-list")
    def qom_list(self, args: Mapping[str, Any]) -> Outcome:
        path = str(args.get("path"))
        if self._vcpu(path):
            # The vCPU's identity and what it lacks; its feature flags are not modelled, so
            # none are listed (a client that reads each listed flag reads none).
            return Outcome([{"name": "type", "type": "string"}, *_VCPU_PROPERTIES])
        table = {PERIPHERAL: self._named, ANONYMOUS: self._anonymous}.get(path.rstrip("/"))
        if table is None:
            return self._qom_list_device(path)
        base = PERIPHERAL if table is self._named else ANONYMOUS
        children = [
            {"name": key, "type": f"child<{self._devices[f'{base}/{key}'].type.name}>"}
            for key in reversed(table.keys())  # qom-list prepends as it walks the table
        ]
        return Outcome([{"name": "type", "type": "string"}, *children])

    def _qom_list_device(self, path: str) -> Outcome:
        """A device's properties: what the profile's QEMU listed for a device of the same
        type (recorded on 7.2 and 10.0: the list depends on the type alone), else the
        properties the model knows of it."""
        found = self._qom_object(path)
        if isinstance(found, CommandError):
            return Outcome(found)
        _, properties = found
        backend = path.endswith("/" + qom.BACKEND)
        device = self._device_at(path.removesuffix("/" + qom.BACKEND) if backend else path)
        assert device is not None  # _qom_object found it
        where = f"{PERIPHERAL}/{device.type.name}" + (f"/{qom.BACKEND}" if backend else "")
        recorded = self.host.profile.recorded_reply(
            "qom-list", {"path": where}, machine="pc", other_machines=False
        )
        if recorded is not None and "return" in recorded:
            return Outcome(recorded["return"])
        return Outcome(
            [{"name": name, "type": kind.type} for name, (kind, *_) in properties.items()]
        )

    @on_command("qom-get")
    def qom_get(self, args: Mapping[str, Any]) -> Outcome:
        found = self._qom_property(args)
        if isinstance(found, CommandError):
            return Outcome(found)
        kind, *_ = found
        return Outcome(kind.value)

    @on_command("qom-set")
    def qom_set(self, args: Mapping[str, Any]) -> Outcome:
        found = self._qom_property(args)
        if isinstance(found, CommandError):
            return Outcome(found)
        kind, owner_type, owner_id = found
        prop = str(args.get("property"))
        refusal = qom.set_error(prop, kind, type_name=owner_type, device_id=owner_id)
        if refusal is None and callable(kind.setter):
            refusal = kind.setter(args.get("value"))
        return Outcome({} if refusal is None else refusal)

    def _qom_property(
        self, args: Mapping[str, Any]
    ) -> tuple[qom.Property, str, str | None] | CommandError:
        """The property ``qom-get``/``qom-set`` name (``path``, ``property``), with the type
        and the id its errors name; else the error that the object or property is missing."""
        path, prop = str(args.get("path")), str(args.get("property"))
        found = self._qom_object(path)
        if isinstance(found, CommandError):
            return found
        type_name, table = found
        entry = table.get(prop)
        return qom.not_found(type_name, prop) if entry is None else entry

    def _qom_object(self, path: str) -> tuple[str, _Table] | CommandError:
        """The object at ``path``: its type and properties, each with the type and the
        id an error about it names (a virtio proxy's aliases name its backend)."""
        read_only = qom.READ_ONLY
        if self._vcpu(path):
            # the vCPU's identity and what it lacks; its feature flags are not modelled
            return VCPU_TYPE, {
                name: (qom.Property(value, read_only), VCPU_TYPE, None)
                for name, value in (
                    ("type", VCPU_TYPE),
                    ("unavailable-features", []),
                    ("filtered-features", []),
                )
            }
        backend = path.endswith("/" + qom.BACKEND)
        base = path.removesuffix("/" + qom.BACKEND) if backend else path
        device = self._device_at(base)
        if device is None or (backend and not device.type.virtio):
            return CommandError("DeviceNotFound", f"Device '{path}' not found")
        proxy = device.type.name
        inner = qom.backend_type(proxy) if device.type.virtio else proxy
        own_type = inner if backend else proxy
        own_id = None if backend else device.id
        bus = f"{device.path}/virtio-bus" if backend else device.bus.path
        table: _Table = {
            "type": (qom.Property(own_type, read_only, "string"), own_type, own_id),
            "realized": (qom.Property(True, _set_realized, "bool"), own_type, own_id),
            "hotpluggable": (qom.Property(True, read_only, "bool"), own_type, own_id),
            "hotplugged": (qom.Property(device.hotplugged, read_only, "bool"), own_type, own_id),
            "parent_bus": (qom.Property(bus, read_only, "link<bus>"), own_type, own_id),
        }
        statics: dict[str, Any] = {}
        if device.devfn is not None:
            statics["addr"] = device.devfn
        if device.mac is not None:
            statics["mac"] = device.mac
            statics["netdev"] = device.properties.get("netdev", "")
        statics.update({k: v for k, v in device.properties.items() if k not in statics})
        for name, value in statics.items():
            aliased = device.type.virtio and name not in qom.PROXY_PROPERTIES
            if backend and not aliased:
                continue  # the proxy's own: not the backend's
            where = (inner, None) if aliased else (proxy, device.id)
            kind = qom.Property(value, type="int32" if name == "addr" else "str")
            table.setdefault(name, (kind, *where))
        owner = qom.owner_of(proxy)
        if owner is not None:
            part: qom.PropertyOwner = self.host.part(owner)
            where = (inner, None) if device.type.virtio else (proxy, device.id)
            for name, kind in part.qom_properties(inner).items():
                if kind.setter == qom.STATIC and name in table:
                    continue  # -device gave it
                table[name] = (kind, *where)
        return own_type, table

    @on_command("query-pci")
    def query_pci(self, _args: Mapping[str, Any]) -> Outcome:
        if "pci.0" not in self._buses:
            return Outcome([])
        found: list[tuple[int, str, PciFunction]] = [
            (slot << 3 | fn, "", info) for slot, fn, info in self._builtin()
        ]
        for d in self._devices.values():
            if d.devfn is not None and d.type.pci is not None:
                found.append((d.devfn, d.id or "", d.type.pci))
        devices = [_pci_info(devfn, qdev_id, info) for devfn, qdev_id, info in sorted(found)]
        return Outcome([{"bus": 0, "devices": devices}])


def _pci_info(devfn: int, qdev_id: str, info: PciFunction) -> dict[str, Any]:
    """A ``PciDeviceInfo``, members in QAPI order (the wire writer reorders them as QEMU)."""
    class_info: dict[str, Any] = {}
    if info.desc is not None:
        class_info["desc"] = info.desc
    class_info["class"] = info.class_code
    out: dict[str, Any] = {"bus": 0, "slot": devfn >> 3, "function": devfn & 7}
    out["class_info"] = class_info
    out["id"] = {
        "device": info.device,
        "vendor": info.vendor,
        "subsystem": info.subsystem,
        "subsystem-vendor": info.subsystem_vendor,
    }
    if info.irq_pin:
        out["irq"] = 0  # PCI_INTERRUPT_LINE: no firmware set it
    out["irq_pin"] = info.irq_pin
    out["qdev_id"] = qdev_id
    regions = []
    for r in info.regions:
        region: dict[str, Any] = {"bar": r.bar, "type": r.type, "address": -1, "size": r.size}
        if r.type == "memory":
            region["prefetch"] = r.prefetch
            region["mem_type_64"] = r.mem_type_64
        regions.append(region)
    out["regions"] = regions
    return out


VCPU_TYPE = "qemu64-x86_64-cpu"
_VCPU_PROPERTIES = (
    {"name": "unavailable-features", "type": "strList"},
    {"name": "filtered-features", "type": "X86CPUFeatureWordInfo"},
)


def _set_realized(value: Any) -> CommandError | None:
    """``realized`` takes a boolean; true changes nothing on a realized device, and false,
    which would unrealize it at once, is not modelled (the device stays)."""
    if not isinstance(value, bool):
        return CommandError(
            "GenericError", "Invalid parameter type for 'realized', expected: boolean"
        )
    return None
