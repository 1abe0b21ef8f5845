"""YAML scenarios: the language, its strict loader and its JSON Schema.

A scenario is metadata, a VM description and a timeline of steps.  The loader
composes the YAML node tree (safe loading, no object construction) so every
mistake is reported with its file, line, column and path in the document.  The
grammar lives in one table of definitions (``_STEP_SPECS``, ``_VM``, ``_TOP``);
the loader validates with it and :func:`scenario_schema` is generated from it,
so the two never drift.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeAlias

from qmpsim.errors import ScenarioError
from qmpsim.qmp.profiles import DEFAULT_PROFILE, PROFILES, Enum, Object, ProfileSpec, Type
from qmpsim.qmp.schema import member_names, problems, type_at, value_at
from qmpsim.vm import machine as m
from qmpsim.vm.display import DisplayCause, display_after, display_key, display_refusal

if TYPE_CHECKING:
    import yaml


def _shipped_dir() -> Path:
    # Installed from a wheel the scenarios sit inside the package; in a source
    # tree (and an editable install) they are the top-level scenarios/ folder.
    here = Path(__file__).resolve().parent.parent
    installed = here / "scenarios"
    return installed if installed.is_dir() else here.parent / "scenarios"


SHIPPED_DIR = _shipped_dir()
"""Where the shipped scenario library lives."""

# --- the typed model --------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a step was written: file (``None`` for a string), 1-based line and column."""

    file: str | None
    line: int
    column: int = 1


@dataclass(frozen=True)
class Disk:
    """A disk, its image and its error policies (QEMU's ``rerror``/``werror``).

    ``None`` leaves a value to QEMU's choice (see :class:`~qmpsim.vm.machine.DiskConfig`).
    """

    name: str
    on_read_error: str = "report"
    on_write_error: str = "enospc"
    thin: bool = False
    format: str = "qcow2"
    file: str | None = None
    node_name: str | None = None
    media: str = "disk"
    size: int | None = None
    data: int | None = None
    backing: str | None = None


@dataclass(frozen=True)
class Image:
    """An image file on the host the VM can open (a backing file, a CD-ROM image…)."""

    file: str
    format: str = "qcow2"
    size: int | None = None
    data: int | None = None
    backing: str | None = None

    def config(self) -> m.ImageConfig:
        """The machine's image description."""
        extra = {"virtual_size": self.size} if self.size is not None else {}
        return m.ImageConfig(self.file, self.format, data=self.data, backing=self.backing, **extra)


@dataclass(frozen=True)
class Vnc:
    """A VNC server the VM exposes."""

    host: str = "127.0.0.1"
    port: int = 5900
    family: str = "ipv4"
    auth: str = "none"


@dataclass(frozen=True)
class Spice:
    """A SPICE server the VM exposes."""

    host: str = "127.0.0.1"
    port: int = 5930
    family: str = "ipv4"
    auth: str = "spice"
    tls: bool = False


@dataclass(frozen=True)
class Guest:
    """The guest OS and how it reacts (see :class:`~qmpsim.vm.machine.GuestConfig`); a delay
    left out is the default range, drawn from the seed."""

    powerdown: str = "shutdown"
    powerdown_delay: float | None = None
    unplug: str = "eject"
    unplug_delay: float | None = None
    lock_tray: bool = True
    tray: str = "open"
    tray_delay: float | None = None

    def config(self) -> m.GuestConfig:
        """The machine's guest description."""
        delays = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k.endswith("_delay") and v is not None
        }
        return m.GuestConfig(
            powerdown=self.powerdown,
            unplug=self.unplug,
            lock_tray=self.lock_tray,
            tray=self.tray,
            **delays,
        )


@dataclass(frozen=True)
class VmSpec:
    """The VM a scenario runs on."""

    name: str | None = None
    uuid: str | None = None
    seed: int = 0
    no_shutdown: bool = False
    initial_state: str = "running"
    watchdog: str | None = None
    disks: tuple[Disk, ...] = ()
    vnc: Vnc | None = None
    spice: Spice | None = None
    cpus: int = 0
    guest: Guest | None = None
    images: tuple[Image, ...] = ()


@dataclass(frozen=True)
class CauseStep:
    """Make something happen the way QEMU would; the machine emits the events."""

    kind: str
    cause: m.Cause
    where: Where


@dataclass(frozen=True)
class EmitStep:
    """Emit one event with explicit data (validated) and/or data filled by Faker."""

    event: str
    data: Mapping[str, Any] | None
    fake: bool
    where: Where


@dataclass(frozen=True)
class WaitStep:
    """Let ``seconds`` of (scaled, possibly virtual) time pass."""

    seconds: float
    where: Where


@dataclass(frozen=True)
class UntilStep:
    """Wait until a client sends ``command`` (with ``arguments``, as
    :func:`~qmpsim.qmp.transcript.arguments_match` matches them)."""

    command: str
    arguments: Mapping[str, Any] | None
    timeout: float | None
    where: Where


@dataclass(frozen=True)
class ReplyStep:
    """Override the reply to ``command``: a canned ``result`` or an ``error``."""

    command: str
    result: Any
    error_class: str | None
    error_desc: str | None
    times: int | None  # None: always
    where: Where


@dataclass(frozen=True)
class OnStep:
    """Whenever a client sends ``command`` (matching ``arguments``, as ``until`` does), run
    ``steps``."""

    command: str
    arguments: Mapping[str, Any] | None
    steps: tuple[Step, ...]
    times: int | None  # None: always
    where: Where


@dataclass(frozen=True)
class RepeatStep:
    """Run ``steps`` ``count`` times (``None``: forever)."""

    count: int | None
    steps: tuple[Step, ...]
    where: Where


@dataclass(frozen=True)
class IncludeStep:
    """The timeline of another scenario file, run in place."""

    path: str
    steps: tuple[Step, ...]
    where: Where


@dataclass(frozen=True)
class FaultStep:
    """Misbehave on the wire to test a client's robustness."""

    kind: str
    text: str | None
    command: str | None
    chunk: int
    delay: float
    where: Where


Step: TypeAlias = (
    CauseStep | EmitStep | WaitStep | UntilStep | ReplyStep | OnStep | RepeatStep | IncludeStep
) | FaultStep

ClockMode = Literal["first-client", "startup"]


@dataclass(frozen=True)
class Scenario:
    """A loaded, validated scenario."""

    name: str
    description: str
    profile: str
    vm: VmSpec
    clock: ClockMode
    steps: tuple[Step, ...]
    actions: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
    source: str | None = None

    def to_yaml(self) -> str:
        """The scenario as a YAML file that loads back to it (see :mod:`qmpsim.scenario.text`)."""
        from qmpsim.scenario.text import to_yaml  # it imports this module

        return to_yaml(self)


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
            "images",
            _List(_IMAGE),
            doc="Image files on the host the VM can open: backing files, mirror targets, ISOs.",
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


# --- loading ----------------------------------------------------------------------

_MAX_VALUES = 100_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$")
_SIZE_UNITS = ("", "K", "M", "G", "T")
_TAGS = {
    "tag:yaml.org,2002:str": "str",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
}
_JSON_TAGS = {*_TAGS, "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = _TAGS.get(node.tag, "a value")
    if kind == "null":
        return "nothing (null)"
    return f"{kind} {node.value!r}" if kind in ("str", "int", "number", "bool") else kind


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# schema.Problem's `expected` word -> how the scenario language says it
_WANT = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing (null)",
    "object": "a mapping",
    "array": "a list",
}


@dataclass
class _State:
    """Causal facts tracked along the timeline to catch impossible orders."""

    strict: bool = True
    exited: Where | None = None
    # each display client or channel (vm.display's key) -> connected|initialized
    display: dict[tuple[Any, ...], str] = field(default_factory=dict)

    def copy(self, strict: bool | None = None) -> _State:
        return _State(self.strict if strict is None else strict, self.exited, dict(self.display))


class _Loader:
    def __init__(self, file: str | None, stack: tuple[Path, ...] = ()) -> None:
        # PyYAML is bound here, on first use: the types, the machine builder and the
        # engine serve idle VMs and control channels without it.
        global yaml
        import yaml

        self.file = file
        self.stack = stack
        self.base = Path(file).resolve().parent if file else Path.cwd()
        self.constructor = yaml.constructor.SafeConstructor()
        self.profile: ProfileSpec = PROFILES[DEFAULT_PROFILE]
        self.vm = VmSpec()
        self.budget = [_MAX_VALUES]  # shared with included files' loaders
        self.includes = True
        """Whether ``include:`` may read files (not for steps sent over a socket)."""

    # errors --------------------------------------------------------------------

    def error(self, node: yaml.Node | None, path: str, message: str) -> ScenarioError:
        if node is None:
            return ScenarioError(message, self.file, None, None, path)
        mark = node.start_mark
        return ScenarioError(message, self.file, mark.line + 1, mark.column + 1, path)

    # documents -----------------------------------------------------------------

    def compose(self, text: str) -> yaml.Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or "invalid YAML"
            if exc.context:
                problem = f"{exc.context}, {problem}"
            raise ScenarioError(
                f"not valid YAML: {problem}",
                self.file,
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
            ) from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"not valid YAML: {exc}", self.file) from None

    def scenario(self, text: str) -> Scenario:
        root = self.compose(text)
        if root is None:
            raise ScenarioError("the file is empty; expected a mapping with `steps`", self.file)
        top = self.mapping(root, "", _TOP, heads=False)
        if "profile" in top:
            self.profile = PROFILES[top["profile"][0]]
        if "vm" in top:
            self.vm = self.vm_spec(top["vm"][0])
        steps_node = top.get("steps", (None, None))[1]
        steps = self.steps(steps_node, "steps") if steps_node is not None else ()
        actions: dict[str, tuple[Step, ...]] = {}
        if "actions" in top:
            node = top["actions"][1]
            for key_node, value_node in self.pairs(node, "actions"):
                name = self.scalar(key_node, "actions", _NAME)
                actions[name] = self.steps(value_node, f"actions.{name}")
        state = _State()
        self.check_causal(steps, state, "steps")
        for name, block in actions.items():
            self.check_causal(block, _State(strict=False), f"actions.{name}")
        default_name = Path(self.file).stem if self.file else "scenario"
        return Scenario(
            name=top.get("name", (default_name,))[0],
            description=top.get("description", ("",))[0],
            profile=self.profile.name,
            vm=self.vm,
            clock=top.get("clock", ("first-client",))[0],
            steps=steps,
            actions=actions,
            source=self.file,
        )

    # generic validation ----------------------------------------------------------

    def pairs(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, f"expected a mapping, found {_describe(node)}")
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, path, "expected a plain key, found a complex key")
            if key_node.value in seen:
                first = seen[key_node.value].start_mark.line + 1
                raise self.error(
                    key_node,
                    path,
                    f"duplicate key {key_node.value!r} (first given on line {first})",
                )
            seen[key_node.value] = key_node
        return list(node.value)

    def mapping(
        self, node: yaml.Node, path: str, spec: _Obj, heads: bool
    ) -> dict[str, tuple[Any, yaml.Node]]:
        """Validate a mapping against ``spec``: key -> (value, value node)."""
        out: dict[str, tuple[Any, yaml.Node]] = {}
        for key_node, value_node in self.pairs(node, path):
            name = key_node.value
            key = spec.key(name)
            sub = f"{path}.{name}" if path else name
            if key is None:
                if heads and name in _HEADS:
                    raise self.error(
                        key_node, path, f"a step has exactly one kind, but {name!r} is a second one"
                    )
                expected = ", ".join(k.name for k in spec.keys) or "no other key"
                raise self.error(
                    key_node,
                    sub,
                    f"unknown key {name!r} in {spec.name}"
                    f"{_suggest(name, [k.name for k in spec.keys])}; expected one of: {expected}",
                )
            out[name] = (self.value(value_node, sub, key.kind), value_node)
        for key in spec.keys:
            if key.required and key.name not in out:
                raise self.error(node, path, f"{spec.name} needs the key {key.name!r}")
        return out

    def value(self, node: yaml.Node, path: str, kind: _Kind) -> Any:
        if isinstance(kind, _Scalar):
            return self.scalar(node, path, kind)
        if isinstance(kind, _Duration):
            return self.duration(node, path)
        if isinstance(kind, _Size):
            return self.size(node, path)
        if isinstance(kind, _Json):
            return self.json(node, path, kind.object_only)
        if isinstance(kind, _Count):
            return self.count(node, path, kind.word)
        if isinstance(kind, _Obj):
            return self.mapping(node, path, kind, heads=False)
        if isinstance(kind, _List):
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(node, path, f"expected a list, found {_describe(node)}")
            return [self.value(n, f"{path}[{i}]", kind.item) for i, n in enumerate(node.value)]
        return None  # steps and step maps are built by the caller from the node

    def scalar(self, node: yaml.Node, path: str, kind: _Scalar) -> Any:
        want = {
            "str": "a string",
            "int": "an integer",
            "number": "a number",
            "bool": "true or false",
        }
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, path, f"expected {want[kind.type]}, found {_describe(node)}")
        tag = _TAGS.get(node.tag)
        ok = tag == kind.type or (kind.type == "number" and tag == "int")
        if not ok:
            raise self.error(node, path, f"expected {want[kind.type]}, found {_describe(node)}")
        value = self.constructor.construct_object(node) if tag != "str" else node.value
        if kind.enum and value not in kind.enum:
            raise self.error(
                node,
                path,
                f"unknown value {value!r}{_suggest(str(value), kind.enum)};"
                f" expected one of: {', '.join(kind.enum)}",
            )
        if kind.minimum is not None and value < kind.minimum:
            raise self.error(
                node, path, f"expected a value of at least {kind.minimum:g}, got {value}"
            )
        if kind.pattern is not None and not re.match(kind.pattern, value):
            raise self.error(node, path, f"{value!r} does not match the pattern {kind.pattern}")
        return value

    def duration(self, node: yaml.Node, path: str) -> float:
        expected = "expected a duration (seconds, or a string like 500ms, 2s, 1.5m, 1h)"
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, path, f"{expected}, found {_describe(node)}")
        match = _DURATION.match(node.value)
        if (
            node.tag
            not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
            or not match
        ):
            raise self.error(node, path, f"{expected}, found {_describe(node)}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    def size(self, node: yaml.Node, path: str) -> int:
        expected = "expected a size (bytes, or a string like 512K, 64M, 16G)"
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int":
                value = int(node.value)
                if value >= 0:
                    return value
            match = _SIZE.match(node.value) if node.tag == "tag:yaml.org,2002:str" else None
            if match:
                return int(float(match.group(1)) * 1024 ** _SIZE_UNITS.index(match.group(2)))
        raise self.error(node, path, f"{expected}, found {_describe(node)}")

    def count(self, node: yaml.Node, path: str, word: str) -> int | None:
        expected = f"expected a positive count, `once` or `{word}`"
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int":
                value = int(node.value)
                if value >= 1:
                    return value
            elif node.value == word:
                return None
            elif node.value == "once":
                return 1
        raise self.error(node, path, f"{expected}, found {_describe(node)}")

    def json(self, node: yaml.Node, path: str, object_only: bool) -> Any:
        if object_only and not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, f"expected a mapping, found {_describe(node)}")
        for sub, sub_path in self.walk(node, path):
            if sub.tag not in _JSON_TAGS:
                raise self.error(sub, sub_path, f"{sub.tag} is not plain JSON data")
            if isinstance(sub, yaml.MappingNode):
                for key_node, _ in self.pairs(sub, sub_path):
                    if key_node.tag != "tag:yaml.org,2002:str":
                        raise self.error(key_node, sub_path, "JSON object keys must be strings")
        return self.constructor.construct_object(node, deep=True)

    def walk(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        out: list[tuple[yaml.Node, str]] = []
        todo = [(node, path)]
        while todo:
            node, path = todo.pop()
            self.spend(node, path)
            out.append((node, path))
            if isinstance(node, yaml.MappingNode):
                todo += [(v, f"{path}.{k.value}") for k, v in reversed(node.value)]
            elif isinstance(node, yaml.SequenceNode):
                todo += [(v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node.value)))]
        return out

    def spend(self, node: yaml.Node, path: str) -> None:
        """Count a value; aliases that multiply a document beyond reason are refused."""
        self.budget[0] -= 1
        if self.budget[0] < 0:
            raise self.error(
                node,
                path,
                f"the document expands to more than {_MAX_VALUES} values "
                "(aliases repeating aliases?)",
            )

    # the VM ------------------------------------------------------------------------

    def vm_spec(self, raw: dict[str, tuple[Any, yaml.Node]]) -> VmSpec:
        disks: list[Disk] = []
        for i, d in enumerate(raw.get("disks", ([], None))[0]):
            disk = Disk(**{k: v for k, (v, _) in d.items()})
            if any(x.name == disk.name for x in disks):
                node = raw["disks"][1].value[i]
                raise self.error(node, f"vm.disks[{i}]", f"a second disk named {disk.name!r}")
            if disk.node_name is not None and any(x.node_name == disk.node_name for x in disks):
                node = d["node_name"][1]
                raise self.error(
                    node,
                    f"vm.disks[{i}].node_name",
                    f"a second disk with node name {disk.node_name!r}",
                )
            disks.append(disk)

        images = tuple(
            Image(**{k: v for k, (v, _) in i.items()}) for i in raw.get("images", ([], None))[0]
        )

        def sub(key: str, cls: type[Vnc] | type[Spice] | type[Guest]) -> Any:
            if key not in raw:
                return None
            return cls(**{k: v for k, (v, _) in raw[key][0].items()})

        return VmSpec(
            name=raw.get("name", (None,))[0],
            uuid=raw.get("uuid", (None,))[0],
            seed=raw.get("seed", (0,))[0],
            no_shutdown=raw.get("no_shutdown", (False,))[0],
            initial_state=raw.get("initial_state", ("running",))[0],
            watchdog=raw.get("watchdog", (None,))[0],
            disks=tuple(disks),
            vnc=sub("vnc", Vnc),
            spice=sub("spice", Spice),
            cpus=raw.get("cpus", (0,))[0],
            guest=sub("guest", Guest),
            images=images,
        )

    # steps ---------------------------------------------------------------------------

    def steps(self, node: yaml.Node, path: str) -> tuple[Step, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, path, f"expected a list of steps, found {_describe(node)}")
        out: list[Step] = []
        for i, item in enumerate(node.value):
            out.append(self.step(item, f"{path}[{i}]"))
        return tuple(out)

    def step(self, node: yaml.Node, path: str) -> Step:
        self.spend(node, path)
        kinds = ", ".join(_HEADS)
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                node,
                path,
                f"expected a step (a mapping with one of: {kinds}), found {_describe(node)}",
            )
        pairs = self.pairs(node, path)
        heads = [(k, v) for k, v in pairs if k.value in _HEADS]
        if not heads:
            first = pairs[0][0] if pairs else node
            word = first.value if isinstance(first, yaml.ScalarNode) else ""
            raise self.error(
                first,
                path,
                f"a step needs one of: {kinds}; found {word!r}{_suggest(word, list(_HEADS))}",
            )
        head_node, value_node = heads[0]
        head = head_node.value
        head_kind, _ = _HEADS[head]
        value = self.value(value_node, f"{path}.{head}", head_kind)
        if head in ("until", "reply", "on"):
            self.check_command(value, value_node, f"{path}.{head}")
        where = Where(self.file, node.start_mark.line + 1, node.start_mark.column + 1)
        if head == "cause":
            keys, build, _ = _CAUSES[value]
            spec = _Obj(f"a {value} cause step", (_Key("cause", head_kind), *keys))
        elif head == "fault":
            fkeys, _ = _FAULTS[value]
            spec = _Obj(f"a {value} fault step", (_Key("fault", head_kind), *fkeys))
        else:
            spec = _Obj(f"a {head} step", (_Key(head, head_kind), *_STEP_KEYS[head]))
        raw = self.mapping(node, path, spec, heads=True)
        args = {k: v for k, (v, _) in raw.items() if k != head}
        if head == "cause":
            self.check_cause(value, raw, path)
            return CauseStep(value, build(args), where)
        if head == "fault" and "command" in raw:
            self.check_command(raw["command"][0], raw["command"][1], f"{path}.command")
        if head == "fault":
            return FaultStep(
                value,
                args.get("text", args.get("event")),
                args.get("command"),
                args.get("chunk", 1),
                args.get("delay", 0.0),
                where,
            )
        if head == "emit":
            return self.emit_step(value, raw, value_node, path, where)
        if head == "wait":
            return WaitStep(value, where)
        if head == "until":
            return UntilStep(value, args.get("arguments"), args.get("timeout"), where)
        if head == "reply":
            if ("return" in args) == ("error" in args):
                raise self.error(
                    node, path, "a reply step needs exactly one of `return` or `error`"
                )
            err = args.get("error")
            return ReplyStep(
                value,
                args.get("return"),
                err["class"][0] if err else None,
                err["desc"][0] if err else None,
                args.get("times"),
                where,
            )
        if head == "on":
            steps = self.steps(raw["steps"][1], f"{path}.steps")
            return OnStep(value, args.get("arguments"), steps, args.get("times"), where)
        if head == "repeat":
            return RepeatStep(value, self.steps(raw["steps"][1], f"{path}.steps"), where)
        return self.include(value, value_node, path, where)

    def check_command(self, command: str, node: yaml.Node, path: str) -> None:
        """A command the profile does not have could never be sent: a mistake."""
        if command not in self.profile.commands:
            raise self.error(
                node,
                path,
                f"unknown command {command!r}{_suggest(command, list(self.profile.commands))}"
                f" in profile {self.profile.name}",
            )

    def check_cause(self, kind: str, raw: dict[str, tuple[Any, yaml.Node]], path: str) -> None:
        if kind in ("disk-error", "disk-repaired", "disk-io", "tray-moved"):
            device, node = raw["device"]
            names = [d.name for d in self.vm.disks]
            if device not in names:
                known = ", ".join(names) if names else "none: add them under vm.disks"
                raise self.error(
                    node,
                    f"{path}.device",
                    f"no disk named {device!r}{_suggest(device, names)};"
                    f" the VM's disks are: {known}",
                )
            nospace = raw.get("nospace")
            if nospace is not None and nospace[0] and not self.vm.disks[names.index(device)].thin:
                raise self.error(
                    nospace[1],
                    f"{path}.nospace",
                    f"disk {device!r} is not thin-provisioned, so it cannot run out of space;"
                    " add `thin: true` to it in vm.disks",
                )
            if kind == "tray-moved" and self.vm.disks[names.index(device)].media != "cdrom":
                raise self.error(
                    node,
                    f"{path}.device",
                    f"disk {device!r} has no tray; add `media: cdrom` to it in vm.disks",
                )
        elif kind.startswith("vnc-") and self.vm.vnc is None:
            raise self.error(
                raw["cause"][1], f"{path}.cause", f"{kind} needs a VNC server: add vm.vnc"
            )
        elif kind.startswith("spice-") and self.vm.spice is None:
            raise self.error(
                raw["cause"][1], f"{path}.cause", f"{kind} needs a SPICE server: add vm.spice"
            )
        elif kind == "watchdog" and "action" not in raw and self.vm.watchdog is None:
            raise self.error(
                raw["cause"][1],
                f"{path}.cause",
                "the VM has no watchdog: set vm.watchdog to its action, or give `action`",
            )
        elif kind == "watchdog":
            action, node = raw.get("action", (self.vm.watchdog, raw["cause"][1]))
            spec = self.profile.events.get("WATCHDOG")
            member = spec.data.member("action") if spec and spec.data else None
            values = member.type.values if member and isinstance(member.type, Enum) else ()
            if values and action not in values:
                raise self.error(
                    node,
                    f"{path}.action" if "action" in raw else f"{path}.cause",
                    f"watchdog action {action!r} does not exist in profile "
                    f"{self.profile.name}; expected one of: {', '.join(values)}",
                )
        elif kind == "guest-panic" and "GUEST_PANICKED" not in self.profile.events:
            raise self.error(
                raw["cause"][1],
                f"{path}.cause",
                f"profile {self.profile.name} has no guest panic notification (GUEST_PANICKED)",
            )

    def emit_step(
        self,
        event: str,
        raw: dict[str, tuple[Any, yaml.Node]],
        event_node: yaml.Node,
        path: str,
        where: Where,
    ) -> EmitStep:
        spec = self.profile.events.get(event) if self.profile.events else None
        if self.profile.events and spec is None:
            names = sorted(self.profile.events)
            raise self.error(
                event_node,
                f"{path}.emit",
                f"unknown event {event!r}{_suggest(event, names)} in profile {self.profile.name}",
            )
        fake = bool(raw.get("fake", (False,))[0])
        data_node = raw["data"][1] if "data" in raw else None
        if spec is not None:
            if spec.data is None and (data_node is not None or fake):
                node = data_node if data_node is not None else raw["fake"][1]
                raise self.error(node, f"{path}.data", f"{event} carries no data")
            if spec.data is not None and data_node is not None:
                self.check_data(data_node, f"{path}.data", spec.data, partial=fake)
            elif (
                spec.data is not None and not fake and any(not f.optional for f in spec.data.fields)
            ):
                raise self.error(
                    event_node, path, f"{event} needs `data` (or `fake: true` to fill it)"
                )
        data = raw["data"][0] if data_node is not None else None
        return EmitStep(event, data, fake, where)

    def check_data(self, node: yaml.Node, path: str, type_: Type, partial: bool) -> None:
        """Check event data against its schema with the profile's one walker
        (:func:`qmpsim.qmp.schema.problems`), reporting its first problem where it is."""
        value = self.constructor.construct_object(node, deep=True)
        found = list(itertools.islice(problems(type_, value, partial=partial), 64))
        if not found:
            return
        first = found[0]
        nodes = {p.lstrip("."): n for n, p in self.walk(node, "")}
        parent = first.path.rpartition(".")[0] if first.kind in ("missing", "unexpected") else ""
        at = nodes.get(first.path if first.kind != "missing" else parent, node)
        where = path + ("." if first.path and not first.path.startswith("[") else "") + first.path
        owner = type_at(type_, parent, value)
        label = f"`{path}.{parent}`" if parent else f"`{path}`"
        if isinstance(owner, Object) and not owner.name.isdigit():
            label = owner.name
        if first.kind == "missing":
            same = [
                p.name for p in found if p.kind == "missing" and p.path.rpartition(".")[0] == parent
            ]
            where = path + (f".{parent}" if parent else "")
            raise self.error(at, where, f"{label} is missing {', '.join(str(n) for n in same)}")
        if first.kind == "unexpected":
            names = member_names(owner, value_at(value, parent))
            key = first.name or ""
            mapping = nodes.get(parent)
            if isinstance(mapping, yaml.MappingNode):  # point at the key, not its value
                at = next((k for k, _ in mapping.value if k.value == key), at)
            raise self.error(
                at,
                where,
                f"{label} has no member {key!r}{_suggest(key, names)};"
                f" expected: {', '.join(names)}",
            )
        if first.kind == "value":
            enum = type_at(type_, first.path, value)
            values = enum.values if isinstance(enum, Enum) else ()
            raise self.error(
                at,
                where,
                f"unknown value {first.value!r}{_suggest(str(first.value), values)};"
                f" expected one of: {', '.join(values)}",
            )
        want = _WANT.get(first.expected, first.expected)
        raise self.error(at, where, f"expected {want}, found {_describe(at)}")

    def include(self, target: str, node: yaml.Node, path: str, where: Where) -> IncludeStep:
        if not self.includes:
            raise self.error(
                node,
                f"{path}.include",
                "include is refused here: it would read a file on the server's side; "
                "send the steps themselves",
            )
        resolved = (self.base / target).resolve()
        if resolved in self.stack:
            chain = " -> ".join(p.name for p in (*self.stack, resolved))
            raise self.error(node, f"{path}.include", f"include cycle: {chain}")
        try:
            text = resolved.read_text(encoding="utf-8")
        except OSError as exc:
            raise self.error(
                node,
                f"{path}.include",
                f"cannot read {target!r} ({exc.strerror}); paths are "
                "relative to the including file",
            ) from None
        sub = _Loader(str(resolved), (*self.stack, resolved))
        sub.profile = self.profile
        sub.vm = self.vm
        sub.budget = self.budget
        root = sub.compose(text)
        if root is None:
            return IncludeStep(target, (), where)
        top = sub.mapping(root, "", _TOP, heads=False)
        steps_node = top.get("steps", (None, None))[1]
        steps = sub.steps(steps_node, "steps") if steps_node is not None else ()
        return IncludeStep(target, steps, where)

    # causal order --------------------------------------------------------------------

    def check_causal(self, steps: Sequence[Step], state: _State, path: str) -> None:
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            if (
                state.exited is not None
                and state.strict
                and not isinstance(step, ReplyStep | OnStep)
            ):
                raise ScenarioError(
                    f"the VM has already exited (on line {state.exited.line}), so this step"
                    " can never run",
                    step.where.file,
                    step.where.line,
                    step.where.column,
                    here,
                )
            if isinstance(step, CauseStep):
                problem = self.causal(step, state)
                if problem and state.strict:
                    raise ScenarioError(
                        problem, step.where.file, step.where.line, step.where.column, here
                    )
            elif isinstance(step, RepeatStep):
                if step.count is None and not _takes_time(step.steps):
                    raise ScenarioError(
                        "a block repeated forever needs a `wait` (or an `until`) with a"
                        " duration, or it floods the client",
                        step.where.file,
                        step.where.line,
                        step.where.column,
                        here,
                    )
                before = state.copy()
                self.check_causal(step.steps, state, f"{here}.steps")
                # A block that changes the state (leaves a client connected…) fails on
                # its second round; one that does not can repeat forever.
                if step.count != 1 and state != before:
                    self.check_causal(step.steps, state, f"{here}.steps")
            elif isinstance(step, IncludeStep):
                self.check_causal(step.steps, state, f"{here}.include")
            elif isinstance(step, OnStep):
                self.check_causal(step.steps, state.copy(strict=False), f"{here}.steps")

    def causal(self, step: CauseStep, state: _State) -> str | None:
        # The rules are the machine's (vm.display, vm.machine): asked here along the
        # timeline, with the state this check tracks instead of a running VM.
        c = step.cause
        if isinstance(c, DisplayCause):
            key = display_key(c)
            problem = display_refusal(c, state.display.get(key))
            if problem is not None:
                if key not in state.display:
                    first = "vnc-connect" if key[0] == "vnc" else "spice-connect"
                    problem += f": it must connect ({first}) first"
                return problem
            after = display_after(c)
            if after is None:
                del state.display[key]
            else:
                state.display[key] = after
        elif m.cause_exits(c, watchdog=self.vm.watchdog, no_shutdown=self.vm.no_shutdown):
            state.exited = step.where
        return None


def _takes_time(steps: Sequence[Step]) -> bool:
    for step in steps:
        if (isinstance(step, WaitStep) and step.seconds > 0) or isinstance(step, UntilStep):
            return True
        if isinstance(step, RepeatStep | IncludeStep) and _takes_time(step.steps):
            return True
    return False


def loads_scenario(text: str, file: str | None = None) -> Scenario:
    """Load a scenario from YAML text; ``file`` names it in errors and anchors includes."""
    try:
        return _Loader(file, (Path(file).resolve(),) if file else ()).scenario(text)
    except RecursionError:
        raise ScenarioError("the document is nested too deeply", file) from None


def load_steps(
    steps: Any, scenario: Scenario, origin: str = "<control>", *, includes: bool = True
) -> tuple[Step, ...]:
    """Steps given as JSON data (a list of step mappings), validated against ``scenario``.

    ``includes=False`` refuses ``include:`` steps, for steps that come from a
    client, which must not make the server read its files.
    """
    loader = _Loader(scenario.source)
    loader.file = origin
    loader.includes = includes
    loader.profile = PROFILES[scenario.profile]
    loader.vm = scenario.vm
    try:
        root = loader.compose(json.dumps(steps))
        assert root is not None
        out = loader.steps(root, "steps")
        loader.check_causal(out, _State(strict=False), "steps")
    except RecursionError:
        raise ScenarioError("the steps are nested too deeply", origin) from None
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file (:class:`~qmpsim.errors.ScenarioError` otherwise)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read the file ({exc.strerror})", name) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"the file is not UTF-8 text ({exc.reason})", name) from None
    return loads_scenario(text, name)


def shipped_scenarios() -> list[Path]:
    """The scenario files shipped with qmpsim, sorted by name."""
    return sorted(SHIPPED_DIR.glob("*.yaml"))


# --- the machine a scenario runs on ------------------------------------------------


def vm_config(vm: VmSpec) -> m.VmConfig:
    """The machine's VM description for a scenario's ``vm`` section."""
    extra: dict[str, Any] = {}
    if vm.uuid is not None:
        extra["uuid"] = vm.uuid
    return m.VmConfig(
        name=vm.name,
        no_shutdown=vm.no_shutdown,
        initial_state=vm.initial_state,
        watchdog=vm.watchdog,
        disks=tuple(
            m.DiskConfig(
                name=d.name,
                node_name=d.node_name or "",
                file=d.file or "",
                format=d.format,
                on_read_error=d.on_read_error,
                on_write_error=d.on_write_error,
                thin=d.thin,
                media=d.media,
                data=d.data,
                backing=d.backing,
                virtual_size=m.DEFAULT_SIZE if d.size is None else d.size,
            )
            for d in vm.disks
        ),
        images=tuple(i.config() for i in vm.images),
        vnc=(
            m.VncConfig(vm.vnc.host, vm.vnc.port, vm.vnc.family, vm.vnc.auth)
            if vm.vnc is not None
            else None
        ),
        spice=(
            m.SpiceConfig(
                vm.spice.host, vm.spice.port, vm.spice.family, vm.spice.auth, vm.spice.tls
            )
            if vm.spice is not None
            else None
        ),
        cpus=vm.cpus,
        guest=None if vm.guest is None else vm.guest.config(),
        **extra,
    )


def build_machine(
    scenario: Scenario, seed: int | None = None, clock: m.Clock = time.time
) -> m.Machine:
    """A fresh machine for ``scenario`` (``seed`` overrides ``vm.seed``)."""
    seed = scenario.vm.seed if seed is None else seed
    return m.Machine(
        vm=vm_config(scenario.vm),
        profile=PROFILES[scenario.profile],
        clock=clock,
        seed=seed,
    )


# --- JSON Schema ----------------------------------------------------------------------


def _schema(kind: _Kind, doc: str = "") -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(kind, _Scalar):
        json_type = {"str": "string", "int": "integer", "number": "number", "bool": "boolean"}
        out = {"type": json_type[kind.type]}
        if kind.enum:
            out["enum"] = list(kind.enum)
        if kind.minimum is not None:
            out["minimum"] = kind.minimum
        if kind.pattern is not None:
            out["pattern"] = kind.pattern
    elif isinstance(kind, _Duration):
        out = {"$ref": "#/$defs/duration"}
    elif isinstance(kind, _Size):
        out = {"$ref": "#/$defs/size"}
    elif isinstance(kind, _Json):
        out = {"type": "object"} if kind.object_only else {}
    elif isinstance(kind, _Count):
        out = {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"enum": ["once", kind.word]},
            ]
        }
    elif isinstance(kind, _Obj):
        out = _object_schema(kind.keys)
    elif isinstance(kind, _List):
        out = {"type": "array", "items": _schema(kind.item)}
    elif isinstance(kind, _Steps):
        out = {"$ref": "#/$defs/steps"}
    else:
        out = {"type": "object", "additionalProperties": {"$ref": "#/$defs/steps"}}
    if doc:
        out["description"] = doc
    return out


def _object_schema(keys: Sequence[_Key], head: dict[str, Any] | None = None) -> dict[str, Any]:
    props = {k.name: _schema(k.kind, k.doc) for k in keys}
    if head:
        props.update(head)
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    required = [*(head or {}), *(k.name for k in keys if k.required)]
    if required:
        out["required"] = required
    return out


def scenario_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the scenario format, from the loader's own grammar."""
    variants: list[dict[str, Any]] = []
    for kind, (keys, _, doc) in _CAUSES.items():
        variants.append(_object_schema(keys, {"cause": {"const": kind, "description": doc}}))
    for kind, (fkeys, doc) in _FAULTS.items():
        variants.append(_object_schema(fkeys, {"fault": {"const": kind, "description": doc}}))
    for head, keys in _STEP_KEYS.items():
        head_kind, doc = _HEADS[head]
        variants.append(_object_schema(keys, {head: _schema(head_kind, doc)}))
    top = _schema(_TOP)
    top.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://qmpsim.invalid/scenario.schema.json",
            "title": "qmpsim scenario",
            "$defs": {
                "duration": {
                    "description": "Seconds, or a string such as 500ms, 2s, 1.5m, 1h.",
                    "anyOf": [
                        {"type": "number", "minimum": 0},
                        {"type": "string", "pattern": _DURATION.pattern},
                    ],
                },
                "size": {
                    "description": "Bytes, or a string such as 512K, 64M, 16G (powers of 1024).",
                    "anyOf": [
                        {"type": "integer", "minimum": 0},
                        {"type": "string", "pattern": _SIZE.pattern},
                    ],
                },
                "step": {"oneOf": variants},
                "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
            },
        }
    )
    return top


# --- the timeline a person can read (`qmpsim show`) --------------------------------------


def _step_text(step: Step) -> str:
    if isinstance(step, CauseStep):
        args = {k: v for k, v in vars(step.cause).items() if v not in (None, False)}
        return " ".join([f"cause {step.kind}", *(f"{k}={_word(v)}" for k, v in args.items())])
    if isinstance(step, EmitStep):
        return f"emit {step.event}" + (" (fake data)" if step.fake else "")
    if isinstance(step, WaitStep):
        return f"wait {step.seconds:g}s"
    if isinstance(step, UntilStep):
        cond = f" {json.dumps(step.arguments)}" if step.arguments else ""
        limit = f", at most {step.timeout:g}s" if step.timeout is not None else ""
        return f"until the client sends {step.command}{cond}{limit}"
    if isinstance(step, ReplyStep):
        what = (
            f"error {step.error_class}" if step.error_class else f"return {json.dumps(step.result)}"
        )
        return f"reply to {step.command} with {what} ({_times(step.times)})"
    if isinstance(step, OnStep):
        return f"on {step.command} ({_times(step.times)}):"
    if isinstance(step, RepeatStep):
        return "repeat forever:" if step.count is None else f"repeat {step.count} times:"
    if isinstance(step, IncludeStep):
        return f"include {step.path}:"
    extra: dict[str, Any] = {"chunk": step.chunk} if step.kind == "split" else {}
    if step.kind == "delayed-reply":
        extra = {"command": step.command, "delay": f"{step.delay:g}s"}
    return " ".join([f"fault {step.kind}", *(f"{k}={v}" for k, v in extra.items())])


def _word(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _times(times: int | None) -> str:
    return "always" if times is None else "once" if times == 1 else f"{times} times"


class _Show:
    def __init__(self, scenario: Scenario) -> None:
        self.clock = m.ManualClock(0.0)
        self.machine = build_machine(scenario, clock=self.clock)
        self.lines: list[str] = []
        self.start = 0.0

    def events(self, events: Sequence[m.Event]) -> str:
        return ", ".join(e.name + _detail(e) for e in events)

    def line(self, depth: int, text: str, events: str = "", live: bool = True) -> None:
        stamp = f"{self.start:8.3f}s" if live else " " * 9
        row = f"{stamp}  {'  ' * depth}{text}"
        self.lines.append(f"{row:<60} -> {events}" if events else row)

    def run(self, steps: Sequence[Step], depth: int, live: bool) -> None:
        for step in steps:
            text = _step_text(step)
            self.start = self.clock.now
            if not live:
                self.line(depth, text, live=False)
                if isinstance(step, OnStep | RepeatStep | IncludeStep):
                    self.run(step.steps, depth + 1, live=False)
                continue
            if isinstance(step, CauseStep):
                problem = self.machine.cause_error(step.cause)
                if problem:
                    self.line(depth, text, f"nothing: {problem}")
                else:
                    self.line(depth, text, self.events(self.machine.cause(step.cause)))
            elif isinstance(step, EmitStep):
                self.line(depth, text, step.event)
            elif isinstance(step, WaitStep):
                self.clock.advance(step.seconds)
                due = self.events(self.machine.poll())
                self.line(depth, text, f"{due} (while waiting)" if due else "")
            elif isinstance(step, UntilStep):
                args = step.arguments or {}
                spec = self.machine.profile.commands.get(step.command)
                if spec is not None and next(iter(problems(spec.arguments, args)), None):
                    # the step matches on part of the arguments: what the command does
                    # depends on the rest, which only the client's request will say
                    self.line(depth, text, "when it does: what its arguments say")
                    continue
                out = self.machine.execute(step.command, args)
                shown = self.events([*out.events, *self.machine.poll()])
                self.line(depth, text, f"when it does: {shown}" if shown else "")
            elif isinstance(step, OnStep):
                self.line(depth, text)
                self.run(step.steps, depth + 1, live=False)
            elif isinstance(step, RepeatStep):
                self.line(depth, text)
                self.run(step.steps, depth + 1, live=True)
                if step.count != 1:
                    self.line(depth + 1, "(and so on)", live=False)
            elif isinstance(step, IncludeStep):
                self.line(depth, text)
                self.run(step.steps, depth + 1, live=True)
            else:
                self.line(depth, text)


def _size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        scale = 1024 ** ("KMGT".index(unit) + 1)
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _detail(e: m.Event) -> str:
    """What a person wants to see of an event beside its name."""
    d = e.data or {}
    if e.name == "JOB_STATUS_CHANGE":
        return f" ({d['id']}: {d['status']})"
    if e.name == "BLOCK_JOB_ERROR":
        return f" ({d['device']}: {d['operation']}, {d['action']})"
    if e.name.startswith("BLOCK_JOB_"):
        if "error" in d:
            return f" ({d['device']}: {d['error']})"
        if "len" in d:
            return f" ({d['device']} at {_size(d['offset'])} of {_size(d['len'])})"
        return f" ({d.get('id', d.get('device'))})"
    if e.name == "DEVICE_TRAY_MOVED":
        return f" ({d['device'] or d['id']} {'open' if d['tray-open'] else 'closed'})"
    if "action" in d:
        return f" ({d['action']})"
    if e.name == "RTC_CHANGE":
        return f" ({d['offset']:+d}s)"
    return ""


def _disk_text(d: Disk) -> str:
    text = f"disk {d.name}"
    if d.media == "cdrom":
        text += " cdrom" + ("" if d.file else " (empty)")
    else:
        text += f" rerror={d.on_read_error} werror={d.on_write_error}"
    if d.size is not None:
        text += f" {_size(d.size)}"
    if d.data is not None:
        text += f" ({_size(d.data)} of data)"
    if d.backing:
        text += f" on {d.backing}"
    return text + (" thin" if d.thin else "")


def show_timeline(scenario: Scenario) -> str:
    """The scenario as a person reads it: each step and the events the VM answers with.

    ``until`` steps assume the client sends the command; ``on`` handlers and
    actions are listed without their effects (they depend on the client);
    repeated blocks are played once.
    """
    vm = scenario.vm
    head = [f"{scenario.name}: {scenario.description}".rstrip(": ")]
    clock = (
        "starts when the first client has negotiated"
        if scenario.clock == "first-client"
        else "starts with the server, like QEMU"
    )
    head.append(f"profile {scenario.profile}; clock {scenario.clock} ({clock})")
    parts = [f"VM {vm.name or '(unnamed)'}, {vm.initial_state}"]
    parts += [_disk_text(d) for d in vm.disks]
    if vm.watchdog:
        parts.append(f"watchdog {vm.watchdog}")
    if vm.no_shutdown:
        parts.append("-no-shutdown")
    if vm.vnc:
        parts.append(f"VNC {vm.vnc.host}:{vm.vnc.port} auth {vm.vnc.auth}")
    if vm.spice:
        parts.append(f"SPICE {vm.spice.host}:{vm.spice.port}{' tls' if vm.spice.tls else ''}")
    if vm.cpus:
        parts.append(f"pc, {vm.cpus} vCPU{'s' if vm.cpus > 1 else ''}")
    if vm.guest:
        g = vm.guest
        parts.append(f"guest: power button {g.powerdown}, unplug {g.unplug}, tray {g.tray}")
    head.append("; ".join(parts))
    show = _Show(scenario)
    show.run(scenario.steps, 0, live=True)
    body = show.lines or ["(no steps: an idle VM that answers commands)"]
    tail: list[str] = []
    for name, block in scenario.actions.items():
        tail.append(f"action {name}:")
        sub = _Show(scenario)
        sub.run(block, 1, live=False)
        tail += sub.lines
    return "\n".join([*head, "", *body, *(["", *tail] if tail else [])]) + "\n"


# --- what the command line prints ----------------------------------------------------------


def validate_files(paths: Sequence[str], out: TextIO) -> int:
    """Check scenario files: one line each; the exit status (0: all valid, 1: some are not)."""
    failures = 0
    for path in paths:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            failures += 1
            print(exc, file=out)
        else:
            print(f"{path}: ok ({scenario.name}, {len(scenario.steps)} steps)", file=out)
    return 1 if failures else 0


def list_shipped(*, paths: bool = False) -> str:
    """The shipped scenarios, one line each: name and description (``paths``: its file)."""
    rows = []
    for path in shipped_scenarios():
        if paths:
            rows.append((path.stem, str(path)))
            continue
        try:
            rows.append((path.stem, load_scenario(path).description))
        except ScenarioError as exc:
            rows.append((path.stem, f"(broken: {exc})"))
    width = max((len(name) for name, _ in rows), default=0)
    return "".join(f"{name:<{width}}  {text}\n" for name, text in rows)


def load_named(name: str) -> Scenario:
    """The scenario a command line names: a file, or a shipped scenario (did-you-mean if not)."""
    path = resolve(name)
    if not path.exists() and "/" not in name and not name.endswith((".yaml", ".yml")):
        raise unknown_scenario(name)
    return load_scenario(path)


def unknown_scenario(name: str) -> ScenarioError:
    """The error for a name that is neither a file nor a shipped scenario."""
    known = [p.stem for p in shipped_scenarios()]
    hint = _suggest(name, known)
    return ScenarioError(
        f"no such file or shipped scenario{hint} (shipped: {', '.join(known)})", name
    )


def resolve(name: str) -> Path:
    """A scenario argument: a file path, or the name of a shipped scenario."""
    path = Path(name)
    shipped = SHIPPED_DIR / f"{name}.yaml"
    if not path.exists() and "/" not in name and shipped.exists():
        return shipped
    return path
