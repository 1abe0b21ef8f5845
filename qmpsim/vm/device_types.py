"""What qmpsim knows of QEMU's device types: the bus each plugs into, the bus it
provides, and how it looks on the PCI bus.

The values are QEMU 7.2's and 10.0's (the same for these types), read from a
real ``-M pc`` with ``query-pci`` and ``qom-get``; ``tests/test_diff_devices.py``
compares them with both QEMUs.  BAR addresses are ``-1``: no firmware or guest
has programmed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PCI, USB, VIRTIO_SERIAL, ISA = "PCI", "usb-bus", "virtio-serial-bus", "ISA"


@dataclass(frozen=True)
class Region:
    """One BAR: its number, ``io`` or ``memory``, size, and for memory its flags."""

    bar: int
    type: str
    size: int
    prefetch: bool = False
    mem_type_64: bool = False


@dataclass(frozen=True)
class PciFunction:
    """What ``query-pci`` shows of a device (its place on the bus aside)."""

    class_code: int
    desc: str | None
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem: int
    irq_pin: int
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class DeviceType:
    """A device model: ``bus`` is the bus type it plugs into (``None``: none, it cannot
    be added), ``provides`` the bus type of the bus it brings, ``virtio`` whether a
    virtio backend device sits under it, ``nic`` whether it takes a MAC address."""

    name: str
    bus: str | None
    provides: str | None = None
    virtio: bool = False
    nic: bool = False
    pci: PciFunction | None = None
    abstract: bool = False


_QUMRANET, _INTEL, _REDHAT_SUB = 0x1AF4, 0x8086, 0x1AF4
_ROM = Region(6, "memory", 262144)


def _virtio_regions(io: int) -> tuple[Region, ...]:
    return (
        Region(0, "io", io),
        Region(1, "memory", 4096),
        Region(4, "memory", 16384, prefetch=True, mem_type_64=True),
    )


TYPES: dict[str, DeviceType] = {
    t.name: t
    for t in (
        DeviceType(
            "virtio-net-pci",
            PCI,
            virtio=True,
            nic=True,
            pci=PciFunction(
                0x200, "Ethernet controller", _QUMRANET, 0x1000, _REDHAT_SUB, 1, 1,
                (*_virtio_regions(32), _ROM),
            ),
        ),
        DeviceType(
            "e1000",
            PCI,
            nic=True,
            pci=PciFunction(
                0x200, "Ethernet controller", _INTEL, 0x100E, _REDHAT_SUB, 0x1100, 1,
                (Region(0, "memory", 131072), Region(1, "io", 64), _ROM),
            ),
        ),
        DeviceType(
            "virtio-serial-pci",
            PCI,
            provides=VIRTIO_SERIAL,
            virtio=True,
            pci=PciFunction(0x780, None, _QUMRANET, 0x1003, _REDHAT_SUB, 3, 1, _virtio_regions(64)),
        ),
        DeviceType(
            "virtio-rng-pci",
            PCI,
            virtio=True,
            pci=PciFunction(0xFF, None, _QUMRANET, 0x1005, _REDHAT_SUB, 4, 1, _virtio_regions(32)),
        ),
        DeviceType(  # no MSI-X: no BAR 1
            "virtio-balloon-pci",
            PCI,
            virtio=True,
            pci=PciFunction(
                0xFF, None, _QUMRANET, 0x1002, _REDHAT_SUB, 5, 1,
                (Region(0, "io", 64), Region(4, "memory", 16384, prefetch=True, mem_type_64=True)),
            ),
        ),
        DeviceType(
            "piix3-usb-uhci",
            PCI,
            provides=USB,
            pci=PciFunction(
                0xC03, "USB controller", _INTEL, 0x7020, _REDHAT_SUB, 0x1100, 4,
                (Region(4, "io", 32),),
            ),
        ),
        DeviceType("usb-kbd", USB),
        DeviceType("usb-mouse", USB),
        DeviceType("usb-tablet", USB),
        DeviceType("virtserialport", VIRTIO_SERIAL),
        DeviceType("virtconsole", VIRTIO_SERIAL),
        DeviceType("isa-serial", ISA),
        DeviceType("pci-device", PCI, abstract=True),
        DeviceType("usb-device", USB, abstract=True),
    )
}  # fmt: skip

# the abstract parents that decide a recorded type's bus (qom-list-types' "parent" chain)
BUS_OF_PARENT = {
    "pci-device": PCI,
    "usb-device": USB,
    "virtio-serial-port": VIRTIO_SERIAL,
    "isa-device": ISA,
}

# -M pc -nodefaults: the i440FX host bridge and the PIIX3 (ISA bridge, IDE, ACPI)
PC_BUILTIN: tuple[tuple[int, int, PciFunction], ...] = (
    (0, 0, PciFunction(0x600, "Host bridge", _INTEL, 0x1237, _REDHAT_SUB, 0x1100, 0)),
    (1, 0, PciFunction(0x601, "ISA bridge", _INTEL, 0x7000, _REDHAT_SUB, 0x1100, 0)),
    (
        1,
        1,
        PciFunction(
            0x101, "IDE controller", _INTEL, 0x7010, _REDHAT_SUB, 0x1100, 0, (Region(4, "io", 16),)
        ),
    ),
    (1, 3, PciFunction(0x680, "Bridge", _INTEL, 0x7113, _REDHAT_SUB, 0x1100, 1)),
)


def machine_type(vm: Any) -> str:
    """The machine type of a VM description: ``-machine``, else ``pc`` with vCPUs and
    ``none`` without (a VM given no machine type is what qmpsim has always called one)."""
    given: str | None = vm.machine
    return given or ("pc" if vm.cpus > 0 else "none")
