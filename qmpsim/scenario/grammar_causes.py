"""The grammar of ``cause`` steps: each cause kind, its keys, and how it becomes the
machine's cause (:mod:`qmpsim.vm.machine`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qmpsim.scenario.grammar_kinds import (
    _BOOL,
    _FAMILY,
    _NAME,
    _STR,
    _Key,
    _Scalar,
    _Size,
)
from qmpsim.scenario.grammar_vm import _WATCHDOG_ACTION
from qmpsim.vm import machine as m

_CLIENT = _Key("client", _NAME, True, "A label naming the remote client (any stable word).")
_CHANNEL = (
    _CLIENT,
    _Key("channel_type", _Scalar("int", minimum=1), doc="SPICE channel type (1 is main)."),
    _Key("channel_id", _Scalar("int", minimum=0), doc="SPICE channel id (default 0)."),
)
_ADDRESS = (
    _Key("host", _STR, doc="The client's address (default: made up)."),
    _Key("family", _FAMILY, doc="Its address family."),
)


def _opt(a: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: a[n] for n in names if n in a}


# cause kind -> (its keys, how it becomes a machine cause, one-line description)
_CAUSES: dict[str, tuple[tuple[_Key, ...], Callable[[dict[str, Any]], m.Cause], str]] = {
    "disk-error": (
        (
            _Key("device", _NAME, True, "The disk (one of `vm.disks`)."),
            _Key("operation", _Scalar("str", enum=("read", "write")), doc="Default `read`."),
            _Key("nospace", _BOOL, doc="The host ran out of space (ENOSPC)."),
            _Key(
                "persistent",
                _BOOL,
                doc="The fault stays: every `cont` retry fails again until `disk-repaired`.",
            ),
        ),
        lambda a: m.DiskError(
            a["device"],
            a.get("operation", "read"),
            a.get("nospace", False),
            a.get("persistent", False),
        ),
        "a disk I/O error; the disk's policy decides report, ignore or stop",
    ),
    "disk-repaired": (
        (_Key("device", _NAME, True, "The disk (one of `vm.disks`)."),),
        lambda a: m.DiskRepaired(a["device"]),
        "the host fixed a persistent disk fault; the next `cont` retry succeeds",
    ),
    "watchdog": (
        (_Key("action", _WATCHDOG_ACTION, doc="Overrides `vm.watchdog`."),),
        lambda a: m.WatchdogExpired(a.get("action")),
        "the watchdog timer expires",
    ),
    "rtc-change": (
        (_Key("offset", _Scalar("int"), True, "Seconds from host UTC."),),
        lambda a: m.RtcChange(a["offset"]),
        "the guest writes its RTC",
    ),
    "guest-shutdown": ((), lambda a: m.GuestShutdown(), "the guest powers itself off"),
    "guest-reset": ((), lambda a: m.GuestReset(), "the guest reboots itself"),
    "guest-panic": ((), lambda a: m.GuestPanic(), "the guest kernel panics"),
    "guest-crashloaded": (
        (),
        lambda a: m.GuestCrashLoaded(),
        "the guest's crash kernel has loaded after a panic (kdump)",
    ),
    "guest-powerdown": (
        (),
        lambda a: m.GuestPowerdown(),
        "an ACPI power button press reaches the guest",
    ),
    "guest-unplugs": (
        (_Key("device", _STR, True, "The device's id or QOM path (its `device_del` came)."),),
        lambda a: m.DeviceEjected(a["device"]),
        "the guest ejects a device whose unplug was requested: DEVICE_DELETED",
    ),
    "guest-balloon": (
        (_Key("actual", _Size(), True, "The RAM the guest keeps (rounded down to 4 KiB)."),),
        lambda a: m.BalloonResized(a["actual"]),
        "the guest's balloon driver reports its size: BALLOON_CHANGE (one a second at most)",
    ),
    "guest-suspend": (
        (_Key("disk", _BOOL, doc="To disk (S4): SUSPEND_DISK, then a guest shutdown."),),
        lambda a: m.GuestSuspend(a.get("disk", False)),
        "the guest suspends itself to RAM: SUSPEND, run state `suspended` until system_wakeup",
    ),
    "guest-refuses-unplug": (
        (_Key("device", _STR, True, "The device's id or QOM path (its `device_del` came)."),),
        lambda a: m.UnplugRefused(a["device"]),
        "the guest refuses an unplug: the device stays (QEMU reports nothing for PCI)",
    ),
    "disk-io": (
        (
            _Key("device", _NAME, True, "The disk (one of `vm.disks`)."),
            _Key(
                "operation", _Scalar("str", enum=("read", "write", "flush")), doc="Default `read`."
            ),
            _Key("size", _Size(), doc="Bytes read or written (default 4K)."),
            _Key("requests", _Scalar("int", minimum=1), doc="In how many requests (default 1)."),
            _Key("offset", _Size(), doc="Where on the disk (default 0)."),
        ),
        lambda a: m.DiskIo(
            a["device"],
            a.get("operation", "read"),
            a.get("size", 4096),
            a.get("requests", 1),
            a.get("offset", 0),
        ),
        "the guest reads or writes a disk: query-blockstats counts it",
    ),
    "tray-moved": (
        (
            _Key("device", _NAME, True, "The CD-ROM (one of `vm.disks`, `media: cdrom`)."),
            _Key("open", _BOOL, doc="Opened (default) or closed."),
        ),
        lambda a: m.TrayMoved(a["device"], a.get("open", True)),
        "the guest (or a hand on the drive) opens or closes a CD-ROM tray",
    ),
    "job-error": (
        (
            _Key("job", _NAME, True, "The block job's id (a client started it)."),
            _Key(
                "operation",
                _Scalar("str", enum=("read", "write")),
                doc="`write` (default: the target) or `read` (the source).",
            ),
            _Key("nospace", _BOOL, doc="The target ran out of space (ENOSPC)."),
        ),
        lambda a: m.JobError(a["job"], a.get("operation", "write"), a.get("nospace", False)),
        "an I/O error hits a running block job: its on-source-error/on-target-error decides",
    ),
    "guest-dirties-memory": (
        (
            _Key(
                "rate",
                _Size(),
                True,
                "Bytes of its RAM the guest writes per second (`200M`; 0: idle again).",
            ),
        ),
        lambda a: m.GuestDirtiesMemory(a["rate"]),
        "the guest's workload dirties memory: a live migration must send it again",
    ),
    "migration-target-lost": (
        (_Key("error", _STR, doc="QEMU's text for it (default: a write on a closed socket)."),),
        lambda a: m.MigrationTargetLost(a.get("error")),
        "the migration's destination goes away: the migration fails with that error (a"
        " postcopy pauses, postcopy-paused, until migrate resumes it)",
    ),
    "vnc-connect": (
        (_CLIENT, *_ADDRESS, _Key("service", _STR, doc="The client's port (default: made up).")),
        lambda a: m.VncConnect(a["client"], **_opt(a, "host", "service", "family")),
        "a VNC client connects",
    ),
    "vnc-initialize": (
        (
            _CLIENT,
            _Key("x509_dname", _STR, doc="The TLS certificate's dname (x509 auth)."),
            _Key("sasl_username", _STR, doc="The SASL user name (sasl auth)."),
        ),
        lambda a: m.VncInitialize(a["client"], **_opt(a, "x509_dname", "sasl_username")),
        "a VNC client authenticates",
    ),
    "vnc-disconnect": ((_CLIENT,), lambda a: m.VncDisconnect(a["client"]), "a VNC client leaves"),
    "spice-connect": (
        (*_CHANNEL, *_ADDRESS, _Key("port", _STR, doc="The client's port (default: made up).")),
        lambda a: m.SpiceConnect(
            a["client"],
            a.get("channel_type", 1),
            a.get("channel_id", 0),
            **_opt(a, "host", "port", "family"),
        ),
        "a SPICE channel connects",
    ),
    "spice-initialize": (
        (
            *_CHANNEL,
            _Key("tls", _BOOL, doc="Whether the channel is encrypted (default: vm.spice.tls)."),
        ),
        lambda a: m.SpiceInitialize(
            a["client"], a.get("channel_type", 1), a.get("channel_id", 0), **_opt(a, "tls")
        ),
        "a SPICE channel completes its handshake",
    ),
    "spice-disconnect": (
        _CHANNEL,
        lambda a: m.SpiceDisconnect(a["client"], a.get("channel_type", 1), a.get("channel_id", 0)),
        "a SPICE channel leaves",
    ),
}
