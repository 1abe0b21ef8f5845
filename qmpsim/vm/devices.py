"""Devices: ``device_add``/``device_del``, the buses they sit on, and what QOM shows of them.

The machine type decides the buses: ``-M none`` (a VM without vCPUs) has none,
``-M pc`` has ``pci.0`` with the i440FX host bridge in slot 0 and the PIIX3 in
slot 1; a USB controller or a virtio-serial device adds its own bus
(``ID.0``).  ``device_add`` checks what QEMU checks, in QEMU's order and with
its texts; ``device_del`` of a PCI device only asks the guest
(:class:`~qmpsim.vm.guest.Guest`), and the device leaves when the guest ejects
it, while a USB device or a virtio-serial port leaves at once.  Either way
DEVICE_DELETED comes after the reply, the virtio backend's first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import qom
from .backends import Backends
from .component import Component, on_cause, on_command
from .device_types import (
    BUS_OF_PARENT,
    ISA,
    PC_BUILTIN,
    PCI,
    TYPES,
    DeviceType,
    PciFunction,
    machine_type,
)
from .ghash import HashOrder
from .guest import Guest
from .values import CommandError, Event, Outcome

PERIPHERAL = "/machine/peripheral"
ANONYMOUS = "/machine/peripheral-anon"
_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
# a PCI address: hexadecimal slot[.function], each as strtoul(…, 16) reads it
_ADDR = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)(?:\.(?:0[xX])?([0-9a-fA-F]+))?\Z")
# a QOM object's properties by name, each with the type and the id its errors name
_Table = dict[str, tuple[qom.Property, str, str | None]]
_FIRST_MAC = 0x56  # qemu_macaddr_default_if_unset(): 52:54:00:12:34:56, then on


@dataclass(frozen=True)
class DeviceEjected:
    """The guest released a device whose unplug the host requested (``guest-unplugs``)."""

    device: str


@dataclass(frozen=True)
class UnplugRefused:
    """The guest refused to release a device whose unplug the host requested: it stays,
    and QEMU reports nothing for a PCI device (DEVICE_UNPLUG_GUEST_ERROR is for
    pseries CPUs and memory and for ACPI memory unplug)."""

    device: str


@dataclass
class _Bus:
    name: str
    kind: str
    path: str
    hotpluggable: bool = True
    owner: _Device | None = None


@dataclass
class _Device:
    type: DeviceType
    id: str | None
    path: str
    bus: _Bus
    devfn: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    hotplugged: bool = True
    unplug_requested: bool = False
    mac: str | None = None

    @property
    def label(self) -> str:
        return self.id if self.id is not None else self.path


class Devices(Component):
    """The buses and the devices plugged into them (``VmConfig.cpus`` > 0 is a ``pc``)."""

    def reset(self) -> None:
        self._devices: dict[str, _Device] = {}  # by QOM path, in plug order
        self._buses: dict[str, _Bus] = {}
        self._named = HashOrder()  # /machine/peripheral's children
        self._anonymous = HashOrder()
        self._anon_count = 0
        self._macs = 0
        vm = self.host.vm
        machine = machine_type(vm)
        if machine == "pc" or machine.startswith("pc-i440fx"):
            self._buses["pci.0"] = _Bus("pci.0", PCI, "/machine/i440fx/pci.0")
            self._buses["isa.0"] = _Bus("isa.0", ISA, "/machine/unattached/device[2]/isa.0", False)
        for dev in vm.devices:  # -device: plugged at start-up, where the model knows the type
            self._cold_plug(dev.driver, dev.id, dict(dev.properties))

    def _cold_plug(self, driver: str, dev_id: str | None, props: dict[str, Any]) -> None:
        outcome = self.device_add({"driver": driver, **({"id": dev_id} if dev_id else {}), **props})
        if isinstance(outcome.reply, CommandError):
            return  # a device the model does not know (pvpanic, ib700…) has no QOM here
        path = f"{PERIPHERAL}/{dev_id}" if dev_id else next(reversed(self._devices))
        self._devices[path].hotplugged = False

    # --- device_add ---------------------------------------------------------------

    def _type(self, driver: str) -> DeviceType | None:
        known = TYPES.get(driver)
        if known is not None:
            return known
        parents = _recorded_parents(self.host.profile)
        seen = driver
        while seen in parents:
            seen = parents[seen]
            if seen in BUS_OF_PARENT:
                return DeviceType(driver, BUS_OF_PARENT[seen])
        return None

    @on_command("device_add")
    def device_add(self, args: Mapping[str, Any]) -> Outcome:
        driver = str(args.get("driver"))
        dev_id = args.get("id")
        # QEMU 10.0 no longer checks a device id's form (the change lies after 7.2)
        if dev_id is not None and not _ID.match(dev_id) and self.host.profile.version < (10,):
            return _error("Parameter 'id' expects an identifier")
        kind = self._type(driver)
        if kind is None:
            return _error(f"'{driver}' is not a valid device model name")
        if kind.abstract:
            return _error("Parameter 'driver' expects a non-abstract device type")
        bus_name = args.get("bus")
        if bus_name is not None:
            bus = self._buses.get(bus_name)
            if bus is None:
                return _error(f"Bus '{bus_name}' not found")
            if bus.kind != kind.bus:
                return _error(f"Device '{driver}' can't go on {bus.kind} bus")
        else:
            found = next((b for b in self._buses.values() if b.kind == kind.bus), None)
            if found is None:
                return _error(f"No '{kind.bus}' bus found for device '{driver}'")
            bus = found
        if not bus.hotpluggable:
            return _error(f"Bus '{bus.name}' does not support hotplugging")
        if dev_id is not None and self._find(dev_id) is not None:
            return _error(f"Duplicate device ID '{dev_id}'")
        props = {k: v for k, v in args.items() if k not in ("driver", "bus", "id")}
        allowed = _recorded_properties(self.host.profile, driver)
        for name in props:
            if allowed is not None and name not in allowed:
                return _error(f"Property '{driver}.{name}' not found")
        backends = self.host.part(Backends)
        held = [(k, str(props[k])) for k in ("netdev", "chardev") if k in props]
        for kind_name, backend in held:
            refusal = backends.refusal(kind_name, backend, driver)
            if refusal is not None:
                return _error(refusal)
        devfn = None
        if bus.kind == PCI:
            placed = self._place(driver, props.get("addr"))
            if isinstance(placed, CommandError):
                return Outcome(placed)
            devfn = placed
        if driver.startswith("virtio-balloon") and self.find_type("virtio-balloon"):
            return _error("Only one balloon device is supported")  # qemu_add_balloon_handler()
        return Outcome({}, tuple(self._plug(kind, dev_id, bus, devfn, props)))

    def _place(self, driver: str, addr: Any) -> int | CommandError:
        """The devfn a PCI device gets (``pci_qdev_realize``), or QEMU's refusal."""
        taken: dict[int, _Device | None] = {
            d.devfn: d for d in self._devices.values() if d.devfn is not None
        }
        taken.update({slot << 3 | fn: None for slot, fn, _ in self._builtin()})
        if addr is None:
            for slot in range(32):
                if slot << 3 not in taken:
                    return slot << 3
            return CommandError(
                "GenericError", f"PCI: no slot/function available for {driver}, all in use"
            )
        match = _ADDR.match(str(addr))
        if match is None or int(match.group(1), 16) > 31 or int(match.group(2) or "0", 16) > 7:
            return CommandError(
                "GenericError", f"Property '{driver}.addr' doesn't take value '{addr}'"
            )
        slot, fn = int(match.group(1), 16), int(match.group(2) or "0", 16)
        devfn = slot << 3 | fn
        if devfn in taken:
            user = taken[devfn]
            name, uid = (user.type.name, user.id) if user else (self._builtin_name(devfn), None)
            return CommandError(
                "GenericError",
                f"PCI: slot {slot} function {fn} not available for {driver},"
                f" in use by {name},id={uid if uid is not None else '(null)'}",
            )
        if fn and slot << 3 in taken:
            user = taken[slot << 3]
            name = user.type.name if user else self._builtin_name(slot << 3)
            return CommandError(
                "GenericError",
                f"PCI: slot {slot} function 0 already occupied by {name},"
                f" new func {driver} cannot be exposed to guest.",
            )
        return devfn

    def _builtin(self) -> tuple[tuple[int, int, PciFunction], ...]:
        return PC_BUILTIN if "pci.0" in self._buses else ()

    @staticmethod
    def _builtin_name(devfn: int) -> str:
        return {0: "i440FX", 8: "PIIX3", 9: "piix3-ide", 11: "PIIX4_PM"}.get(devfn, "?")

    def _plug(
        self,
        kind: DeviceType,
        dev_id: str | None,
        bus: _Bus,
        devfn: int | None,
        props: dict[str, Any],
    ) -> list[Event]:
        if dev_id is not None:
            path = f"{PERIPHERAL}/{dev_id}"
            self._named.add(dev_id)
        else:
            name = f"device[{self._anon_count}]"
            self._anon_count += 1
            path = f"{ANONYMOUS}/{name}"
            self._anonymous.add(name)
        device = _Device(kind, dev_id, path, bus, devfn, props)
        for backend in ("netdev", "chardev"):
            if backend in props:
                self.host.part(Backends).take(backend, str(props[backend]), path)
        if kind.nic:
            device.mac = props.get("mac") or f"52:54:00:12:34:{_FIRST_MAC + self._macs:02x}"
            self._macs += "mac" not in props
        self._devices[path] = device
        if kind.provides is not None:
            name = f"{dev_id}.0" if dev_id is not None else f"{kind.provides}.{len(self._buses)}"
            owner = f"{path}/virtio-backend" if kind.virtio else path
            self._buses[name] = _Bus(name, kind.provides, f"{owner}/{name}", owner=device)
        return []

    # --- device_del and the guest ------------------------------------------------------

    def _find(self, name: str) -> _Device | None:
        """``find_device_state``: an id under /machine/peripheral, or an absolute QOM path."""
        if name.startswith("/"):
            return self._devices.get(name)
        return self._devices.get(f"{PERIPHERAL}/{name}")

    @on_command("device_del")
    def device_del(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args.get("id"))
        device = self._find(name)
        if device is None:
            return Outcome(CommandError("DeviceNotFound", f"Device '{name}' not found"))
        if not device.bus.hotpluggable:
            return _error(f"Bus '{device.bus.name}' does not support hotplugging")
        if device.bus.kind != PCI:
            # USB devices and virtio-serial ports leave at once; the event follows the reply
            self.host.after(0, lambda: self._unplug(device))
            return Outcome({})
        device.unplug_requested = True
        guest = self.host.part(Guest)
        guest.unplug_request(
            device.label, lambda: self._eject(device), lambda: self._refuse(device)
        )
        return Outcome({})

    def _eject(self, device: _Device) -> list[Event]:
        if self._devices.get(device.path) is not device:
            return []  # gone meanwhile (a reset)
        return self._unplug(device)

    def _refuse(self, device: _Device) -> list[Event]:
        # The request is over; the device stays.  QEMU 7.2 and 10.0 send
        # DEVICE_UNPLUG_GUEST_ERROR only for pseries CPUs and memory and for ACPI memory
        # (DIMM) unplug, never for a PCI device, whose refusal the host does not see.
        device.unplug_requested = False
        return []

    def _unplug(self, device: _Device) -> list[Event]:
        """The device and everything on its buses leave, children first."""
        out: list[Event] = []
        for name, bus in list(self._buses.items()):
            if bus.owner is device:
                for child in [d for d in self._devices.values() if d.bus is bus]:
                    out += self._unplug(child)
                del self._buses[name]
        del self._devices[device.path]
        self.host.part(Backends).release(device.path)
        if device.id is not None:
            self._named.remove(device.id)
        else:
            self._anonymous.remove(device.path.rsplit("/", 1)[1])
        if device.type.virtio:
            out.append(self.host.event("DEVICE_DELETED", {"path": f"{device.path}/virtio-backend"}))
        out.append(self.host.event("DEVICE_DELETED", _deleted_data(device.id, device.path)))
        return out

    @on_cause(DeviceEjected, UnplugRefused)
    def guest_answers(self, cause: DeviceEjected | UnplugRefused) -> list[Event]:
        device = self._find(cause.device)
        assert device is not None
        if isinstance(cause, DeviceEjected):
            return self._unplug(device)
        return self._refuse(device)

    def cause_error(self, cause: Any) -> str | None:
        device = self._find(cause.device)
        if device is None:
            return f"no device {cause.device!r} is plugged"
        if not device.unplug_requested:
            return f"no unplug of device {cause.device!r} was requested (device_del)"
        return None

    # --- what QOM and query-pci show ---------------------------------------------------

    def has_bus(self, name: str) -> bool:
        """Whether the machine has the bus called ``name`` (``pci.0`` on a ``pc``)."""
        return name in self._buses

    def unplug_requested(self, label: str) -> bool:
        """Whether the guest was asked to release the device (its id, or its QOM path)
        and has not answered yet."""
        device = self._find(label)
        return device is not None and device.unplug_requested

    def plugged(self) -> list[str]:
        """The plugged devices' ids (QOM paths for anonymous ones), in plug order."""
        return [d.label for d in self._devices.values()]

    def _vcpu(self, path: str) -> bool:
        """Whether ``path`` is a vCPU's QOM object."""
        vm = self.host.vm
        return any(path == vm.cpu_path(index) for index in range(vm.cpus))

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
        path, prop = str(args.get("path")), str(args.get("property"))
        found = self._qom_object(path)
        if isinstance(found, CommandError):
            return Outcome(found)
        type_name, table = found
        entry = table.get(prop)
        return Outcome(qom.not_found(type_name, prop) if entry is None else entry[0].value)

    @on_command("qom-set")
    def qom_set(self, args: Mapping[str, Any]) -> Outcome:
        path, prop = str(args.get("path")), str(args.get("property"))
        found = self._qom_object(path)
        if isinstance(found, CommandError):
            return Outcome(found)
        type_name, table = found
        entry = table.get(prop)
        if entry is None:
            return Outcome(qom.not_found(type_name, prop))
        kind, owner_type, owner_id = entry
        refusal = qom.set_error(prop, kind, type_name=owner_type, device_id=owner_id)
        if refusal is None and callable(kind.setter):
            refusal = kind.setter(args.get("value"))
        return Outcome({} if refusal is None else refusal)

    def _device_at(self, path: str) -> _Device | None:
        """The device at a QOM path, or with that id (as ``qom-get`` takes either)."""
        return self._devices.get(path) or self._devices.get(f"{PERIPHERAL}/{path}")

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

    def find_type(self, prefix: str) -> str | None:
        """The QOM path of the first plugged device whose type starts with ``prefix``."""
        return next(
            (d.path for d in self._devices.values() if d.type.name.startswith(prefix)), None
        )

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


def _deleted_data(dev_id: str | None, path: str) -> dict[str, Any]:
    return {"path": path} if dev_id is None else {"device": dev_id, "path": path}


def _set_realized(value: Any) -> CommandError | None:
    """``realized`` takes a boolean; true changes nothing on a realized device, and false,
    which would unrealize it at once, is not modelled (the device stays)."""
    if not isinstance(value, bool):
        return CommandError(
            "GenericError", "Invalid parameter type for 'realized', expected: boolean"
        )
    return None


def _error(desc: str) -> Outcome:
    return Outcome(CommandError("GenericError", desc))


def _recorded(profile: Any, command: str, arguments: Mapping[str, Any] | None) -> Any:
    """What the profile's real QEMU answered to this request (``None``: not recorded)."""
    lookup = getattr(profile, "recorded_reply", None)
    if lookup is None:
        return None
    # Type and property lists do not depend on the machine or the accelerator; the
    # capability probe recorded them on `-machine none`.
    reply = lookup(command, arguments or {}, kvm=False, machine="none")
    return None if reply is None else reply.get("return")


def _recorded_parents(profile: Any) -> dict[str, str]:
    types = _recorded(profile, "qom-list-types", None) or []
    return {t["name"]: t["parent"] for t in types if "parent" in t}


def _recorded_properties(profile: Any, driver: str) -> set[str] | None:
    props = _recorded(profile, "device-list-properties", {"typename": driver})
    if props is None:
        return None
    return {p["name"] for p in props} | {"addr"}
