"""The VM description: what a VM is made of before it runs.

:class:`VmConfig` is the one description of a VM: the scenario loader, the
drop-in's command line and the seeded walk build it, the machine
(:class:`~qmpsim.vm.machine.Machine`) runs it.  Frozen; disks are completed once,
as QEMU would name and size them (:func:`~qmpsim.vm.images.complete_disks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qmpsim.vm.display import SpiceConfig, VncConfig
from qmpsim.vm.guest import GuestConfig
from qmpsim.vm.images import DiskConfig, ImageConfig, check_disks, complete_disks
from qmpsim.vm.runstate import INITIAL_STATES
from qmpsim.vm.values import MachineError

__all__ = ["INITIAL_STATES", "ChardevConfig", "DeviceConfig", "VmConfig"]


@dataclass(frozen=True)
class DeviceConfig:
    """A ``-device``: its driver, its id (``None``: anonymous) and its other properties."""

    driver: str
    id: str | None = None
    properties: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        """The property ``name`` as given on the command line."""
        return next((v for k, v in self.properties if k == name), default)


@dataclass(frozen=True)
class ChardevConfig:
    """A character device: its id and what ``query-chardev`` calls it."""

    label: str
    filename: str
    frontend_open: bool = False


@dataclass(frozen=True)
class VmConfig:
    """The VM description; defaults give an idle machine like ``qemu-system-x86_64 -M none``.

    ``watchdog`` is the watchdog device's action (``None``: no watchdog device);
    ``initial_state`` is ``running``, ``paused`` or ``prelaunch`` (``-S``);
    ``cpus`` is the vCPU count (``-M none`` has none; ``-M pc`` has one).
    """

    name: str | None = None
    uuid: str = "00000000-0000-0000-0000-000000000000"
    no_shutdown: bool = False
    initial_state: str = "running"
    watchdog: str | None = None
    disks: tuple[DiskConfig, ...] = ()
    images: tuple[ImageConfig, ...] = ()
    """Image files on the host the VM can open besides its disks' (backing files,
    mirror targets, CD-ROM images)."""
    vnc: VncConfig | None = None
    spice: SpiceConfig | None = None
    cpus: int = 0
    kvm_enabled: bool = False
    kvm_present: bool = True
    rtc_qom_path: str | None = None
    """The RTC's QOM path in RTC_CHANGE; ``None``: where the profile's QEMU puts a
    ``pc``'s RTC (:data:`~qmpsim.vm.machine.RTC_PATHS`)."""
    machine: str | None = None
    """The machine type (``-machine``): ``None`` is ``none``."""
    memory: int = 128 * 1024 * 1024
    """Guest RAM in bytes (``-m``)."""
    devices: tuple[DeviceConfig, ...] = ()
    """Every ``-device``, in command-line order."""
    chardevs: tuple[ChardevConfig, ...] = ()
    cpu_thread_ids: tuple[int, ...] = ()
    """The host thread of each vCPU, where a process runs one per vCPU (the drop-in)."""
    cpu_topology: tuple[int, int, int] | None = None
    """``(sockets, cores, threads)`` as ``-smp`` gives them; ``None``: QEMU's default."""
    guest: GuestConfig | None = None
    """The guest OS and how it reacts (``None``: no OS answers, as under ``-M none``)."""
    incoming: str | None = None
    """``-incoming``: ``defer`` (wait for ``migrate-incoming``) or the URI to listen on;
    the VM starts in ``inmigrate`` and runs once its state came (``None``: no incoming)."""

    def __post_init__(self) -> None:
        if self.initial_state not in INITIAL_STATES:
            raise MachineError(
                f"initial_state {self.initial_state!r} is not one of {', '.join(INITIAL_STATES)}"
            )
        check_disks(self.disks, self.images)
        # frozen, but completed once here: every reader sees the values QEMU would report
        object.__setattr__(self, "disks", complete_disks(self.disks, self.images))

    def cpu_props(self, index: int, *, prefer_cores: bool = True) -> dict[str, int]:
        """vCPU ``index``'s place in the topology (``query-hotpluggable-cpus``' props).

        Without a topology, QEMU makes every vCPU a core of one socket (from 6.2;
        before, a socket of its own: ``prefer_cores=False``).
        """
        if self.cpu_topology is not None:
            _, cores, threads = self.cpu_topology
        else:
            cores, threads = (max(self.cpus, 1), 1) if prefer_cores else (1, 1)
        return {
            "core-id": index // threads % cores,
            "thread-id": index % threads,
            "socket-id": index // (threads * cores),
        }

    @staticmethod
    def cpu_path(index: int) -> str:
        """vCPU ``index``'s QOM path: the first vCPU's child object takes the slot after it."""
        return f"/machine/unattached/device[{0 if index == 0 else index + 1}]"

    def disk(self, name: str) -> DiskConfig:
        """The disk called ``name``; a :class:`MachineError` naming the known ones otherwise."""
        for d in self.disks:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.disks) or "none"
        raise MachineError(f"no disk named {name!r} (disks: {known})")
