"""The buses of the VM and the devices plugged into them, as the devices component keeps them.

The machine type decides the buses: ``-M none`` (a VM without vCPUs) has none,
``-M pc`` has ``pci.0`` with the i440FX host bridge in slot 0 and the PIIX3 in
slot 1; a device that provides a bus (a USB controller, a virtio-serial device)
adds its own.  :class:`DeviceTree` holds them and finds a device as QEMU does
(``find_device_state``); :mod:`qmpsim.vm.device_qom` shows them through QOM and
``query-pci``, :mod:`qmpsim.vm.devices` plugs and unplugs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .component import Component
from .device_types import ISA, PC_BUILTIN, PCI, DeviceType, PciFunction, machine_type
from .ghash import HashOrder

PERIPHERAL = "/machine/peripheral"
ANONYMOUS = "/machine/peripheral-anon"


@dataclass
class Bus:
    """A bus devices plug into: its kind (``PCI``, ``usb-bus``…), its QOM path, and the
    device that provides it (``None``: the machine's own)."""

    name: str
    kind: str
    path: str
    hotpluggable: bool = True
    owner: Device | None = None


@dataclass
class Device:
    """A plugged device: its type, id, QOM path, bus and PCI address, and what it was given."""

    type: DeviceType
    id: str | None
    path: str
    bus: Bus
    devfn: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    hotplugged: bool = True
    unplug_requested: bool = False
    mac: str | None = None

    @property
    def label(self) -> str:
        """How the device is named: its id, else its QOM path."""
        return self.id if self.id is not None else self.path


class DeviceTree(Component):
    """The buses and the devices plugged into them (``VmConfig.cpus`` > 0 is a ``pc``)."""

    def reset(self) -> None:
        self._devices: dict[str, Device] = {}  # by QOM path, in plug order
        self._buses: dict[str, Bus] = {}
        self._named = HashOrder()  # /machine/peripheral's children
        self._anonymous = HashOrder()
        self._anon_count = 0
        self._macs = 0
        vm = self.host.vm
        machine = machine_type(vm)
        if machine == "pc" or machine.startswith("pc-i440fx"):
            self._buses["pci.0"] = Bus("pci.0", PCI, "/machine/i440fx/pci.0")
            self._buses["isa.0"] = Bus("isa.0", ISA, "/machine/unattached/device[2]/isa.0", False)

    def _builtin(self) -> tuple[tuple[int, int, PciFunction], ...]:
        return PC_BUILTIN if "pci.0" in self._buses else ()

    @staticmethod
    def _builtin_name(devfn: int) -> str:
        return {0: "i440FX", 8: "PIIX3", 9: "piix3-ide", 11: "PIIX4_PM"}.get(devfn, "?")

    def _find(self, name: str) -> Device | None:
        """``find_device_state``: an id under /machine/peripheral, or an absolute QOM path."""
        if name.startswith("/"):
            return self._devices.get(name)
        return self._devices.get(f"{PERIPHERAL}/{name}")

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

    def _device_at(self, path: str) -> Device | None:
        """The device at a QOM path, or with that id (as ``qom-get`` takes either)."""
        return self._devices.get(path) or self._devices.get(f"{PERIPHERAL}/{path}")

    def find_type(self, prefix: str) -> str | None:
        """The QOM path of the first plugged device whose type starts with ``prefix``."""
        return next(
            (d.path for d in self._devices.values() if d.type.name.startswith(prefix)), None
        )
