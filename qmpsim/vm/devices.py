"""Devices: ``device_add``/``device_del``, the buses they sit on, and what QOM shows of them.

The machine type decides the buses: ``-M none`` (a VM without vCPUs) has none,
``-M pc`` has ``pci.0`` with the i440FX host bridge in slot 0 and the PIIX3 in
slot 1; a USB controller or a virtio-serial device adds its own bus
(``ID.0``).  ``device_add`` checks what QEMU checks, in QEMU's order and with
its texts; ``device_del`` of a PCI device only asks the guest
(:class:`~qmpsim.vm.guest.Guest`), and the device leaves when the guest ejects
it, while a USB device or a virtio-serial port leaves at once.  Either way
DEVICE_DELETED comes after the reply, the virtio backend's first.

One component, :class:`Devices`, built in layers: :mod:`qmpsim.vm.device_tree` (the
buses and the plugged devices, finding one), :mod:`qmpsim.vm.device_qom` (what QOM
and ``query-pci`` show of them) and this module (plugging and unplugging).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .backends import Backends
from .component import on_cause, on_command
from .device_qom import DeviceQom
from .device_tree import ANONYMOUS, PERIPHERAL, Bus, Device
from .device_types import BUS_OF_PARENT, PCI, TYPES, DeviceType
from .guest import Guest
from .values import CommandError, Event, Outcome

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
# a PCI address: hexadecimal slot[.function], each as strtoul(…, 16) reads it
_ADDR = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)(?:\.(?:0[xX])?([0-9a-fA-F]+))?\Z")
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


class Devices(DeviceQom):
    """``device_add``/``device_del``: plugging devices in and out of the VM's buses."""

    def reset(self) -> None:
        super().reset()
        # -device: plugged at start-up, where the model knows the type
        for dev in self.host.vm.devices:
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
        taken: dict[int, Device | None] = {
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

    def _plug(
        self,
        kind: DeviceType,
        dev_id: str | None,
        bus: Bus,
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
        device = Device(kind, dev_id, path, bus, devfn, props)
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
            self._buses[name] = Bus(name, kind.provides, f"{owner}/{name}", owner=device)
        return []

    # --- device_del and the guest ------------------------------------------------------

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

    def _eject(self, device: Device) -> list[Event]:
        if self._devices.get(device.path) is not device:
            return []  # gone meanwhile (a reset)
        return self._unplug(device)

    def _refuse(self, device: Device) -> list[Event]:
        # The request is over; the device stays.  QEMU 7.2 and 10.0 send
        # DEVICE_UNPLUG_GUEST_ERROR only for pseries CPUs and memory and for ACPI memory
        # (DIMM) unplug, never for a PCI device, whose refusal the host does not see.
        device.unplug_requested = False
        return []

    def _unplug(self, device: Device) -> list[Event]:
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


def _deleted_data(dev_id: str | None, path: str) -> dict[str, Any]:
    return {"path": path} if dev_id is None else {"device": dev_id, "path": path}


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
