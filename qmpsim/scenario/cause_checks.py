"""What a cause step needs of the VM and the profile: the disk it names, a display
server, a watchdog action the profile knows, a balloon, ACPI.  The order of causes
along the timeline is :mod:`qmpsim.scenario.causal`'s."""

from __future__ import annotations

from qmpsim.qmp.profiles import Enum, ProfileSpec
from qmpsim.scenario.nodes import NodeReader, Raw, suggest
from qmpsim.scenario.vm_section import has_balloon
from qmpsim.vm.description import VmConfig

__all__ = ["check_cause"]


def check_cause(
    reader: NodeReader, vm: VmConfig, profile: ProfileSpec, kind: str, raw: Raw, path: str
) -> None:
    """Refuse (located) a cause step that names what ``vm`` lacks or ``profile`` cannot
    report: a disk it does not have, a display server, a watchdog action, a balloon…"""
    if kind in ("disk-error", "disk-repaired", "disk-io", "tray-moved"):
        device, node = raw["device"]
        names = [d.name for d in vm.disks]
        if device not in names:
            known = ", ".join(names) if names else "none: add them under vm.disks"
            raise reader.error(
                node,
                f"{path}.device",
                f"no disk named {device!r}{suggest(device, names)}; the VM's disks are: {known}",
            )
        nospace = raw.get("nospace")
        if nospace is not None and nospace[0] and not vm.disks[names.index(device)].thin:
            raise reader.error(
                nospace[1],
                f"{path}.nospace",
                f"disk {device!r} is not thin-provisioned, so it cannot run out of space;"
                " add `thin: true` to it in vm.disks",
            )
        if kind == "tray-moved" and vm.disks[names.index(device)].media != "cdrom":
            raise reader.error(
                node,
                f"{path}.device",
                f"disk {device!r} has no tray; add `media: cdrom` to it in vm.disks",
            )
    elif kind.startswith("vnc-") and vm.vnc is None:
        raise reader.error(
            raw["cause"][1], f"{path}.cause", f"{kind} needs a VNC server: add vm.vnc"
        )
    elif kind.startswith("spice-") and vm.spice is None:
        raise reader.error(
            raw["cause"][1], f"{path}.cause", f"{kind} needs a SPICE server: add vm.spice"
        )
    elif kind == "watchdog" and "action" not in raw and vm.watchdog is None:
        raise reader.error(
            raw["cause"][1],
            f"{path}.cause",
            "the VM has no watchdog: set vm.watchdog to its action, or give `action`",
        )
    elif kind == "watchdog":
        action, node = raw.get("action", (vm.watchdog, raw["cause"][1]))
        spec = profile.events.get("WATCHDOG")
        member = spec.data.member("action") if spec and spec.data else None
        values = member.type.values if member and isinstance(member.type, Enum) else ()
        if values and action not in values:
            raise reader.error(
                node,
                f"{path}.action" if "action" in raw else f"{path}.cause",
                f"watchdog action {action!r} does not exist in profile "
                f"{profile.name}; expected one of: {', '.join(values)}",
            )
    elif kind == "guest-balloon" and not has_balloon(vm):
        raise reader.error(
            raw["cause"][1], f"{path}.cause", "guest-balloon needs a balloon: add vm.balloon"
        )
    elif kind == "guest-suspend" and not vm.cpus:
        raise reader.error(
            raw["cause"][1],
            f"{path}.cause",
            "guest-suspend needs ACPI, which a VM without cpus (-M none) lacks: give it cpus",
        )
    elif kind == "guest-panic" and "GUEST_PANICKED" not in profile.events:
        raise reader.error(
            raw["cause"][1],
            f"{path}.cause",
            f"profile {profile.name} has no guest panic notification (GUEST_PANICKED)",
        )
    elif kind == "guest-crashloaded" and "GUEST_CRASHLOADED" not in profile.events:
        raise reader.error(
            raw["cause"][1],
            f"{path}.cause",
            f"profile {profile.name} has no crash-loaded notification (GUEST_CRASHLOADED)",
        )
