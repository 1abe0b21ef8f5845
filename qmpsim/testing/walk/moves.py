"""What each move of the catalogue offers on a given VM, whether it is legal now, and the
arguments drawn when it is made.

The walk (:mod:`~qmpsim.testing.walk.walker`) keeps what it did so far (the VNC clients
it connected, the NICs it plugged) and passes it in; everything else is asked of the
machine, so that a move is legal exactly when the machine would act on it.
"""

from __future__ import annotations

from typing import Any

from qmpsim.testing.walk.catalogue import BALLOON, COMMANDS, DEVICES, JOBS, MIGRATION, Move
from qmpsim.testing.walk.choices import Choices
from qmpsim.testing.walk.migration_moves import (
    held_by_migration,
    migration_legal,
    start_migration,
)
from qmpsim.vm import machine as m

__all__ = [
    "balloon_moves",
    "device_moves",
    "drawn_cause",
    "fixed_moves",
    "job_moves",
    "legal",
    "prepare_command",
    "vnc_moves",
]

_SPICE_CHANNELS = (1, 2, 3, 4)  # main, display, inputs, cursor
_SPICE_CLIENT = "remote-viewer"
_SPICE: dict[str, type[m.SpiceConnect | m.SpiceInitialize | m.SpiceDisconnect]] = {
    "spice-connect": m.SpiceConnect,
    "spice-initialize": m.SpiceInitialize,
    "spice-disconnect": m.SpiceDisconnect,
}
_GUEST: dict[str, m.Cause] = {
    "guest-reset": m.GuestReset(),
    "guest-powerdown": m.GuestPowerdown(),
    "guest-shutdown": m.GuestShutdown(),
    "guest-panic": m.GuestPanic(),
}
_NIC = "virtio-net-pci"
_MiB = 1 << 20


def fixed_moves(vm: m.VmConfig, kind: str) -> list[Move]:
    """The moves of ``kind`` that the VM's description alone decides (none for a kind
    whose moves depend on what the walk did: those have functions of their own)."""
    options: list[Move] = []
    if kind in COMMANDS and kind not in (*JOBS, *DEVICES, *BALLOON, *MIGRATION):
        options.append(Move(kind, {}, None))
    elif kind == "guest-suspend":
        options.append(Move(kind, {}, m.GuestSuspend()))
    elif kind == "disk-error":
        options += [Move(kind, {"device": d.name}, m.DiskError(d.name)) for d in vm.disks]
    elif kind == "disk-io":
        options += [Move(kind, {"device": d.name}, m.DiskIo(d.name)) for d in vm.disks]
    elif kind == "watchdog" and vm.watchdog is not None:
        options.append(Move(kind, {}, m.WatchdogExpired()))
    elif kind == "rtc-change":
        options.append(Move(kind, {"offset": 0}, m.RtcChange(0)))
    elif kind in _GUEST:
        options.append(Move(kind, {}, _GUEST[kind]))
    elif kind in _SPICE:
        for t in _SPICE_CHANNELS:
            args = {"client": _SPICE_CLIENT, "channel_type": t}
            options.append(Move(kind, args, _SPICE[kind](_SPICE_CLIENT, t)))
    return options


def vnc_moves(kind: str, seen: int, live: list[str]) -> list[Move]:
    """A new client (the ``seen``-th), or one of the ``live`` ones initialising or
    leaving: the ones that left are never offered again."""
    if kind == "vnc-connect":
        label = f"viewer{seen}"
        return [Move(kind, {"client": label}, m.VncConnect(label))]
    make = m.VncInitialize if kind == "vnc-initialize" else m.VncDisconnect
    return [Move(kind, {"client": label}, make(label)) for label in live]


def job_moves(machine: m.Machine, kind: str) -> list[Move]:
    """A mirror for each disk no job copies; completing a ready job, cancelling a live
    one, an I/O error in a running one."""
    busy = {j.id: j.status for j in machine.part(m.Jobs).jobs}
    if kind == "drive-mirror":
        return [
            Move(
                kind,
                {
                    "device": d.name,
                    "target": f"/var/lib/qemu/{d.name}.copy.qcow2",
                    "sync": "full",
                },
                None,
            )
            for d in machine.vm.disks
            if d.has_medium and d.name not in busy
        ]
    if kind == "job-error":
        return [Move(kind, {"job": j}, m.JobError(j)) for j in busy]
    wanted = ("ready",) if kind == "job-complete" else ("running", "paused", "ready")
    return [Move(kind, {"id": j}, None) for j, status in busy.items() if status in wanted]


def device_moves(machine: m.Machine, kind: str, nics: int) -> list[Move]:
    """A new NIC (the ``nics``-th) where the VM has a PCI bus; an unplug request for a NIC
    not asked yet; the guest ejecting one whose unplug was asked for."""
    devices = machine.part(m.Devices)
    if kind == "device_add":
        if not devices.has_bus("pci.0"):
            return []
        return [Move(kind, {"driver": _NIC, "id": f"nic{nics}"}, None)]
    plugged = [label for label in devices.plugged() if label.startswith("nic")]
    if kind == "device_del":
        return [
            Move(kind, {"id": nic}, None) for nic in plugged if not devices.unplug_requested(nic)
        ]
    return [Move(kind, {"device": nic}, m.DeviceEjected(nic)) for nic in plugged]


def balloon_moves(machine: m.Machine, kind: str) -> list[Move]:
    """A new target, or the guest's driver reporting a size, where a balloon is plugged
    (the amounts are chosen when the move is made)."""
    if machine.part(m.Balloon).actual() is None:
        return []
    if kind == "balloon":
        return [Move(kind, {"value": machine.vm.memory}, None)]
    return [Move(kind, {"actual": machine.vm.memory}, m.BalloonResized(0))]


def legal(machine: m.Machine, move: Move) -> bool:
    """Whether the machine would act on ``move`` now: a cause it accepts, a command its
    profile has that would do something."""
    if held_by_migration(machine, move):
        return False
    if move.cause is None:
        if move.kind == "system_wakeup":  # refused unless the guest sleeps: no event
            return machine.status == "suspended"
        if move.kind in MIGRATION and move.kind in machine.profile.commands:
            return migration_legal(machine, move)
        if machine.status == "finish-migrate":
            # the source stopped for its switchover: QEMU would hold a command until the
            # migration completes, and a cont in postcopy runs the VM in two places
            return False
        return move.kind in machine.profile.commands
    return machine.cause_error(move.cause) is None


def prepare_command(ch: Choices, machine: m.Machine, move: Move) -> dict[str, Any]:
    """A command move's arguments, those that do not decide legality drawn now (a
    balloon's target), after what it needs set up (a new migration's settings)."""
    if move.kind == "migrate" and not move.args.get("resume"):
        start_migration(ch, machine)
    if move.kind == "balloon":  # a target from a quarter of the RAM to all of it
        ram = machine.vm.memory // _MiB
        return {"value": _MiB * ch.integer(ram // 4, ram)}
    return move.args


def drawn_cause(ch: Choices, machine: m.Machine, move: Move) -> tuple[dict[str, Any], m.Cause]:
    """A cause move's arguments, as a scenario step names them, and its cause, with what
    does not decide legality drawn now (an error's operation, an RTC offset, a size)."""
    assert move.cause is not None
    args = dict(move.args)
    cause = move.cause
    if isinstance(cause, m.DiskError):
        args["operation"] = ch.choice(("read", "write"))
        # only a thin disk can run out of space
        args["nospace"] = machine.vm.disk(cause.device).thin and ch.boolean()
        cause = m.DiskError(cause.device, args["operation"], args["nospace"])
    elif isinstance(cause, m.RtcChange):
        args["offset"] = ch.integer(-86_400, 86_400)
        cause = m.RtcChange(args["offset"])
    elif isinstance(cause, m.DiskIo):
        args["operation"] = ch.choice(("read", "write", "flush"))
        args["size"] = 4096 * ch.integer(1, 256)
        cause = m.DiskIo(cause.device, args["operation"], args["size"])
    elif isinstance(cause, m.BalloonResized):
        ram = machine.vm.memory // _MiB
        args["actual"] = _MiB * ch.integer(ram // 4, ram)
        cause = m.BalloonResized(args["actual"])
    elif isinstance(cause, m.JobError):
        args["operation"] = ch.choice(("read", "write"))
        cause = m.JobError(cause.job, args["operation"])
    return args, cause
