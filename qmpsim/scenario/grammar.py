"""The scenario grammar: one table of definitions (``_STEP_KEYS``, ``_CAUSES``, ``_VM``,
``_TOP``) that the loader validates with and the JSON Schema is generated from, so the
two never drift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from qmpsim.qmp.profiles import PROFILES
from qmpsim.vm import machine as m

if TYPE_CHECKING:
    pass


# --- the grammar: one table, used by the loader and by the JSON Schema -------------


@dataclass(frozen=True)
class _Scalar:
    type: Literal["str", "int", "number", "bool"]
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class _Duration:
    """Seconds as a number, or a string such as ``500ms``, ``2s``, ``1.5m``, ``1h``."""


@dataclass(frozen=True)
class _Size:
    """Bytes as an integer, or a string such as ``512K``, ``64M``, ``16G`` (powers of 1024)."""


@dataclass(frozen=True)
class _Json:
    """Any JSON value (command results, arguments)."""

    object_only: bool = False


@dataclass(frozen=True)
class _Count:
    """A positive integer, or the word ``forever`` (or ``always``)."""

    word: str


@dataclass(frozen=True)
class _Key:
    name: str
    kind: _Kind
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class _Obj:
    name: str
    keys: tuple[_Key, ...]
    doc: str = ""

    def key(self, name: str) -> _Key | None:
        return next((k for k in self.keys if k.name == name), None)


@dataclass(frozen=True)
class _List:
    item: _Kind


@dataclass(frozen=True)
class _Steps:
    """A list of steps."""


@dataclass(frozen=True)
class _StepsMap:
    """Named lists of steps."""


_Kind: TypeAlias = _Scalar | _Duration | _Size | _Json | _Count | _Obj | _List | _Steps | _StepsMap

_STR = _Scalar("str")
_BOOL = _Scalar("bool")
_PORT = _Scalar("int", minimum=0)
_NAME = _Scalar("str", pattern=r"^[A-Za-z0-9_.:-]+$")
_COMMAND = _Scalar("str", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
_FAMILY = _Scalar("str", enum=("ipv4", "ipv6", "unix"))
_TIMES = _Count("always")

_DISK = _Obj(
    "disk",
    (
        _Key("name", _NAME, True, "The block device name, as in BLOCK_IO_ERROR's `device`."),
        _Key(
            "on_read_error",
            _Scalar("str", enum=("report", "ignore", "stop")),
            doc="QEMU's `rerror`: what a read error does (default `report`).",
        ),
        _Key(
            "on_write_error",
            _Scalar("str", enum=("enospc", "report", "ignore", "stop")),
            doc="QEMU's `werror`: what a write error does (default `enospc`: stop when "
            "the host is out of space, report otherwise).",
        ),
        _Key(
            "thin",
            _BOOL,
            doc="A thin-provisioned disk: the only kind that can run out of space "
            "(a `disk-error` with `nospace`).",
        ),
        _Key(
            "format", _Scalar("str", enum=m.DISK_FORMATS), doc="The image format (default qcow2)."
        ),
        _Key("file", _STR, doc="The image file (default /var/lib/qemu/NAME.qcow2, .img if raw)."),
        _Key(
            "node_name",
            _Scalar("str", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,30}$"),
            doc="The format node's name (default: QEMU's automatic #blockNNN, one per disk).",
        ),
        _Key(
            "media",
            _Scalar("str", enum=m.MEDIA),
            doc="`disk` (default) or `cdrom`: a CD-ROM has a tray, and no medium without `file`.",
        ),
        _Key("size", _Size(), doc="The disk's virtual size (default 16G)."),
        _Key(
            "data",
            _Size(),
            doc="The guest data its image holds: what a block job copying it takes time over.",
        ),
        _Key("backing", _STR, doc="The backing file its image names (one of `vm.images`)."),
    ),
)
_IMAGE = _Obj(
    "image",
    (
        _Key("file", _STR, True, "The image file's path."),
        _Key(
            "format", _Scalar("str", enum=m.DISK_FORMATS), doc="The image format (default qcow2)."
        ),
        _Key("size", _Size(), doc="Its virtual size (default 16G)."),
        _Key("data", _Size(), doc="The guest data it holds."),
        _Key("backing", _STR, doc="Its own backing file."),
    ),
)
# What QEMU's vnc_auth_name() reports in VncServerInfo.auth.
_VNC_AUTHS = (
    "none",
    "vnc",
    "ra2",
    "ra2ne",
    "tight",
    "ultra",
    "tls",
    "sasl",
    "vencrypt",
    *(f"vencrypt+{t}+{a}" for t in ("tls", "x509") for a in ("none", "vnc", "plain", "sasl")),
    "vencrypt+plain",
)
_VNC = _Obj(
    "vnc",
    (
        _Key("host", _STR, doc="Listening address (default 127.0.0.1)."),
        _Key("port", _PORT, doc="Listening port (default 5900)."),
        _Key("family", _FAMILY, doc="Address family of `host`."),
        _Key(
            "auth",
            _Scalar("str", enum=_VNC_AUTHS),
            doc="Authentication the server requires.",
        ),
    ),
)
_SPICE = _Obj(
    "spice",
    (
        _Key("host", _STR, doc="Listening address (default 127.0.0.1)."),
        _Key("port", _PORT, doc="Listening port (default 5930)."),
        _Key("family", _FAMILY, doc="Address family of `host`."),
        _Key("auth", _Scalar("str", enum=("spice", "none", "sasl")), doc="Authentication."),
        _Key("tls", _BOOL, doc="Whether channels are encrypted."),
    ),
)
_GUEST = _Obj(
    "guest",
    (
        _Key(
            "powerdown",
            _Scalar("str", enum=("shutdown", "ignore")),
            doc="What the ACPI power button does (default `shutdown`).",
        ),
        _Key("powerdown_delay", _Duration(), doc="How long the guest takes to shut down."),
        _Key(
            "unplug",
            _Scalar("str", enum=("eject", "ignore", "refuse")),
            doc="What a PCI unplug request (`device_del`) does (default `eject`).",
        ),
        _Key("unplug_delay", _Duration(), doc="How long the guest takes to answer it."),
        _Key("lock_tray", _BOOL, doc="Whether the guest locks CD-ROM trays (default true)."),
        _Key(
            "tray",
            _Scalar("str", enum=("open", "ignore")),
            doc="What an eject request on a locked tray does (default `open`).",
        ),
        _Key("tray_delay", _Duration(), doc="How long the guest takes to open it."),
        _Key(
            "balloon",
            _Scalar("str", enum=("follow", "ignore")),
            doc="What its balloon driver does with a new target (default `follow`; `ignore`: "
            "no driver).",
        ),
        _Key("balloon_delay", _Duration(), doc="How long the driver takes to start moving."),
        _Key("balloon_rate", _Size(), doc="Bytes a second the driver moves (default 1G)."),
    ),
)
_WATCHDOG_ACTIONS = ("reset", "shutdown", "poweroff", "pause", "debug", "none", "inject-nmi")
_VM = _Obj(
    "vm",
    (
        _Key("name", _STR, doc="The guest name (`-name`)."),
        _Key("uuid", _Scalar("str", pattern=r"^[0-9a-fA-F-]{36}$"), doc="The VM UUID."),
        _Key("seed", _Scalar("int"), doc="Seed for every random or fake value (default 0)."),
        _Key("no_shutdown", _BOOL, doc="`-no-shutdown`: a guest shutdown stops instead of exits."),
        _Key(
            "initial_state",
            _Scalar("str", enum=("running", "paused", "prelaunch")),
            doc="Run state at start-up (`paused` is `-S`).",
        ),
        _Key(
            "watchdog",
            _Scalar("str", enum=_WATCHDOG_ACTIONS),
            doc="A watchdog device and its action (`-watchdog-action`).",
        ),
        _Key("disks", _List(_DISK), doc="Block devices."),
        _Key("vnc", _VNC, doc="A VNC server."),
        _Key("spice", _SPICE, doc="A SPICE server."),
        _Key(
            "cpus",
            _Scalar("int", minimum=0),
            doc="vCPUs: 0 (default) is `-M none`, without buses; 1 or more a `pc` with `pci.0`.",
        ),
        _Key("guest", _GUEST, doc="A guest OS that reacts to the host (default: none reacts)."),
        _Key(
            "incoming",
            _Scalar("str", pattern=r"^(defer|(tcp|unix|exec|vsock|file):.+)$"),
            doc="`-incoming`: `defer` (wait for `migrate-incoming`) or the URI to wait on"
            " (`unix:PATH`, `tcp:HOST:PORT`); the VM waits in `inmigrate` for its source.",
        ),
        _Key(
            "images",
            _List(_IMAGE),
            doc="Image files on the host the VM can open: backing files, mirror targets, ISOs.",
        ),
        _Key("memory", _Size(), doc="Guest RAM (`-m`, default 128M)."),
        _Key(
            "balloon",
            _BOOL,
            doc="A `virtio-balloon-pci` device, id `balloon0` (needs `cpus` >= 1).",
        ),
    ),
)

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
        (_Key("action", _Scalar("str", enum=_WATCHDOG_ACTIONS), doc="Overrides `vm.watchdog`."),),
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
        "the migration's destination goes away: the migration fails with that error",
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

# fault kind -> (its keys, one-line description)
_FAULTS: dict[str, tuple[tuple[_Key, ...], str]] = {
    "disconnect": ((), "close every client connection"),
    "garbage": (
        (_Key("text", _STR, doc="The bytes to send (default `}garbage{`), then CRLF."),),
        "send a line that is not JSON",
    ),
    "error-without-id": ((), "send an error reply that carries no id"),
    "unknown-id-reply": ((), "send a reply whose id no request used"),
    "split": (
        (_Key("chunk", _Scalar("int", minimum=1), doc="Bytes per write (default 1)."),),
        "write the next message in many small writes",
    ),
    "coalesce": ((), "write the next message and the one after it in a single write"),
    "delayed-reply": (
        (
            _Key("command", _COMMAND, True, "The command whose next reply is late."),
            _Key("delay", _Duration(), True, "How late."),
        ),
        "answer a command late",
    ),
    "event-before-greeting": (
        (_Key("event", _Scalar("str"), doc="Event name (default RESUME)."),),
        "write an event to the next client that connects, before its greeting",
    ),
}
_TIMES_KEY = _Key("times", _TIMES, doc="`once`, a count, or `always` (default).")
_ARGS_KEY = _Key(
    "arguments",
    _Json(object_only=True),
    doc="Match commands whose arguments contain these members.",
)
# step head -> its other keys (cause and fault are per-kind, above)
_STEP_KEYS: dict[str, tuple[_Key, ...]] = {
    "emit": (
        _Key("data", _Json(object_only=True), doc="The event's data, checked against the profile."),
        _Key("fake", _BOOL, doc="Fill the data (or its missing members) with realistic values."),
    ),
    "wait": (),
    "until": (_ARGS_KEY, _Key("timeout", _Duration(), doc="Give up and go on after this long.")),
    "reply": (
        _Key("return", _Json(), doc="The canned result."),
        _Key(
            "error",
            _Obj(
                "error",
                (
                    _Key(
                        "class",
                        _Scalar(
                            "str",
                            enum=(
                                "GenericError",
                                "CommandNotFound",
                                "DeviceNotActive",
                                "DeviceNotFound",
                                "KVMMissingCap",
                            ),
                        ),
                        True,
                    ),
                    _Key("desc", _STR, True),
                ),
            ),
            doc="An error reply instead of a result.",
        ),
        _TIMES_KEY,
    ),
    "on": (_ARGS_KEY, _Key("steps", _Steps(), True, "What to run."), _TIMES_KEY),
    "repeat": (_Key("steps", _Steps(), True, "The block to repeat."),),
    "include": (),
}
_HEADS: dict[str, tuple[_Kind, str]] = {
    "cause": (_Scalar("str", enum=tuple(_CAUSES)), "make something happen the way QEMU would"),
    "emit": (_Scalar("str", pattern=r"^[A-Z][A-Z0-9_]*$"), "emit one event"),
    "wait": (_Duration(), "let time pass"),
    "until": (_COMMAND, "wait until a client sends a command"),
    "reply": (_COMMAND, "override a command's reply"),
    "on": (_COMMAND, "run steps when a client sends a command"),
    "repeat": (_Count("forever"), "repeat a block"),
    "include": (_Scalar("str"), "run another scenario file's timeline here"),
    "fault": (_Scalar("str", enum=tuple(_FAULTS)), "misbehave on the wire"),
}
_TOP = _Obj(
    "scenario",
    (
        _Key("name", _NAME, doc="Short name (default: the file name)."),
        _Key("description", _STR, doc="One line saying what real situation this mimics."),
        _Key("profile", _Scalar("str", enum=tuple(PROFILES)), doc="Protocol profile."),
        _Key("clock", _Scalar("str", enum=("first-client", "startup")), doc="When time starts."),
        _Key("vm", _VM, doc="The VM description."),
        _Key("steps", _Steps(), doc="The timeline."),
        _Key("actions", _StepsMap(), doc="Named blocks the control channel can trigger."),
    ),
)
