"""The grammar of a scenario's ``vm`` section: the VM, its disks, images, display
servers and guest (read into a :class:`~qmpsim.vm.description.VmConfig` by
:mod:`qmpsim.scenario.vm_section`)."""

from __future__ import annotations

from qmpsim.scenario.grammar_kinds import (
    _BOOL,
    _FAMILY,
    _NAME,
    _PORT,
    _STR,
    _Duration,
    _Key,
    _List,
    _Obj,
    _Scalar,
    _Size,
)
from qmpsim.vm import machine as m
from qmpsim.vm.block_errors import READ_POLICIES, OnError
from qmpsim.vm.guest import BALLOON_POLICIES, POWERDOWN_POLICIES, TRAY_POLICIES, UNPLUG_POLICIES
from qmpsim.vm.watchdog import WATCHDOG_ACTIONS

# the closed sets are the VM model's (plain strings here: the JSON Schema and the
# error texts are made from them)
_READ_POLICY = _Scalar("str", enum=tuple(p.value for p in READ_POLICIES))
# werror's default first, as the grammar has always listed them
_WRITE_POLICY = _Scalar("str", enum=(OnError.ENOSPC.value, *_READ_POLICY.enum))
# a watchdog action, as `vm.watchdog` and the `watchdog` cause's `action` take it
_WATCHDOG_ACTION = _Scalar("str", enum=tuple(a.value for a in WATCHDOG_ACTIONS))

_DISK = _Obj(
    "disk",
    (
        _Key("name", _NAME, True, "The block device name, as in BLOCK_IO_ERROR's `device`."),
        _Key(
            "on_read_error",
            _READ_POLICY,
            doc="QEMU's `rerror`: what a read error does (default `report`).",
        ),
        _Key(
            "on_write_error",
            _WRITE_POLICY,
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
            _Scalar("str", enum=POWERDOWN_POLICIES),
            doc="What the ACPI power button does (default `shutdown`).",
        ),
        _Key("powerdown_delay", _Duration(), doc="How long the guest takes to shut down."),
        _Key(
            "unplug",
            _Scalar("str", enum=UNPLUG_POLICIES),
            doc="What a PCI unplug request (`device_del`) does (default `eject`).",
        ),
        _Key("unplug_delay", _Duration(), doc="How long the guest takes to answer it."),
        _Key("lock_tray", _BOOL, doc="Whether the guest locks CD-ROM trays (default true)."),
        _Key(
            "tray",
            _Scalar("str", enum=TRAY_POLICIES),
            doc="What an eject request on a locked tray does (default `open`).",
        ),
        _Key("tray_delay", _Duration(), doc="How long the guest takes to open it."),
        _Key(
            "balloon",
            _Scalar("str", enum=BALLOON_POLICIES),
            doc="What its balloon driver does with a new target (default `follow`; `ignore`: "
            "no driver).",
        ),
        _Key("balloon_delay", _Duration(), doc="How long the driver takes to start moving."),
        _Key("balloon_rate", _Size(), doc="Bytes a second the driver moves (default 1G)."),
    ),
)
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
            _WATCHDOG_ACTION,
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
