"""QOM properties of plugged devices: how ``qom-get`` reads them and ``qom-set`` sets them.

A device's properties fall into three kinds, each with QEMU's answer to ``qom-set``:

- read-only (``type``, ``parent_bus``, ``hotplugged``…): "Property 'T.p' is not
  writable";
- qdev static properties (``addr``, ``mac``, ``netdev``…, whatever ``-device``
  gave): settable only before the device is realized, so every plugged device
  refuses with "Attempt to set property 'p' on device 'ID' (type 'T') after it was
  realized" ("on anonymous device" when it has no id);
- properties with a setter of their own, which a component answers for
  (:func:`answers_for`): the balloon's ``guest-stats-polling-interval``.

A ``virtio-*-pci`` device is a PCI proxy with the virtio device as its
``virtio-backend`` child; QEMU aliases every property of the backend on the
proxy, so an error about such a property names the backend's type, an anonymous
device (measured on QEMU 7.2 and 10.0: ``tests/test_diff_qom.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .values import CommandError

BACKEND = "virtio-backend"
"""The name of a virtio PCI proxy's child that is the virtio device itself."""

# the properties a virtio PCI proxy has of its own (PCIDevice's and virtio-pci's);
# every other property of a virtio-*-pci device is its backend's, aliased
PROXY_PROPERTIES = frozenset(
    {
        "addr",
        "romfile",
        "romsize",
        "rombar",
        "multifunction",
        "failover_pair_id",
        "acpi-index",
        "ioeventfd",
        "vectors",
        "disable-legacy",
        "disable-modern",
        "ats",
        "aer",
        "page-per-vq",
        "migrate-extra",
        "modern-pio-notify",
        "x-disable-pcie",
        "x-ignore-backend-features",
        "virtio-pci-bus-master-bug-migration",
    }
)

READ_ONLY = "read-only"
STATIC = "static"


@dataclass(frozen=True)
class Property:
    """A QOM property: its value, and how ``qom-set`` treats it — :data:`READ_ONLY`,
    :data:`STATIC` (a qdev property, fixed once realized), or a setter that answers
    ``None`` (done) or the error; ``type`` is the type ``qom-list`` names."""

    value: Any
    setter: str | Callable[[Any], CommandError | None] = STATIC
    type: str = "str"


class PropertyOwner(Protocol):
    """A component that answers for some QOM properties of a device type."""

    def qom_properties(self, device_type: str) -> dict[str, Property]:
        """The properties it answers for on a device of ``device_type`` (its backend's
        for a virtio proxy), by name."""


_OWNERS: dict[str, type[Any]] = {}
_T = TypeVar("_T", bound=type[Any])


def answers_for(*device_types: str) -> Callable[[_T], _T]:
    """Mark a component class as answering for QOM properties of ``device_types``."""

    def mark(kind: _T) -> _T:
        for name in device_types:
            _OWNERS[name] = kind
        return kind

    return mark


def owner_of(device_type: str) -> type[Any] | None:
    """The component class answering for properties of ``device_type``, if any."""
    return _OWNERS.get(device_type)


def backend_type(proxy_type: str) -> str:
    """The virtio device type behind a ``virtio-*-pci`` proxy (``virtio-net-device``…)."""
    return proxy_type.removesuffix("-pci") + "-device"


def set_error(
    prop: str, kind: Property, *, type_name: str, device_id: str | None
) -> CommandError | None:
    """QEMU's refusal of ``qom-set`` on a read-only or a static property, else ``None``."""
    if kind.setter == READ_ONLY:
        return CommandError("GenericError", f"Property '{type_name}.{prop}' is not writable")
    if kind.setter == STATIC:
        where = "anonymous device" if device_id is None else f"device '{device_id}'"
        return CommandError(
            "GenericError",
            f"Attempt to set property '{prop}' on {where} (type '{type_name}') "
            "after it was realized",
        )
    return None


def not_found(type_name: str, prop: str) -> CommandError:
    """QEMU's answer for a property the object does not have."""
    return CommandError("GenericError", f"Property '{type_name}.{prop}' not found")
