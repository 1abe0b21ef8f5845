"""QEMU's command line, read into an :class:`Invocation`: what to serve and how.

Only the reading happens here (no sockets, no processes): monitors and their
character devices, daemonize and pidfile, and every option that describes the
VM, kept as written so :mod:`qmpsim.qemu.vmdesc` can build the VM from them.
Options qmpsim has no use for are accepted (and checked where QEMU checks them
early), so any launcher's command line starts.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qmpsim.vm.block_errors import DISK_POLICIES, READ_POLICIES
from qmpsim.vm.watchdog import WATCHDOG_ACTIONS

from .opts import (
    NOT_FOR_TARGET,
    SIZE_HINT,
    OptionError,
    Parsed,
    parse_bool,
    parse_keyval,
    parse_object,
    parse_size,
    split_argv,
)

__all__ = ["Chardev", "Invocation", "Monitor", "parse_command_line"]

_ACTIONS = {
    "watchdog": WATCHDOG_ACTIONS,
    "panic": ("pause", "shutdown", "exit-failure", "none"),
    "reboot": ("reset", "shutdown"),
    "shutdown": ("poweroff", "pause"),
}
# QemuOpts options whose parameters QEMU checks while it reads the command line.
_PARAMETERS = {
    "name": ("guest", "process", "debug-threads"),
    "action": tuple(_ACTIONS),
    "overcommit": ("mem-lock", "cpu-pm"),
    "rtc": ("base", "clock", "driftfix"),
    "msg": ("timestamp", "guest-name"),
    "sandbox": ("enable", "obsolete", "elevateprivileges", "spawn", "resourcecontrol"),
    "mon": ("chardev", "mode", "pretty", "id"),
}
_IMPLIED = {
    "name": "guest",
    "sandbox": "enable",
    "machine": "type",
    "M": "type",
    "accel": "accel",
    "device": "driver",
    "object": "qom-type",
    "audiodev": "driver",
    "netdev": "type",
    "display": "type",
    "chardev": "backend",
    "boot": "order",
    "vnc": "vnc",
    "spice": None,
    "m": "size",
    "smp": "cpus",
}
_DISPLAYS = (
    "default",
    "none",
    "gtk",
    "sdl",
    "egl-headless",
    "curses",
    "cocoa",
    "spice-app",
    "dbus",
)
_ACCELERATORS = ("kvm", "tcg", "xen", "qtest")
_SMP_KEYS = ("cpus", "maxcpus", "sockets", "dies", "clusters", "cores", "threads")
_CHARDEV_BACKENDS = (
    "socket",
    "pty",
    "file",
    "null",
    "stdio",
    "pipe",
    "udp",
    "serial",
    "tty",
    "parallel",
    "parport",
    "ringbuf",
    "memory",
    "msmouse",
    "wctablet",
    "braille",
    "testdev",
    "spicevmc",
    "spiceport",
    "vc",
    "qemu-vdagent",
    "dbus",
    "mux",
)


@dataclass(frozen=True)
class Chardev:
    """A character device: its id, backend and where it leads.

    For sockets: ``path`` (Unix) or ``host``/``port`` (TCP), or ``fd``, an
    inherited socket that already listens.
    """

    id: str
    backend: str
    path: str | None = None
    host: str | None = None
    port: str | None = None
    fd: int | None = None
    server: bool = False
    wait: bool = True
    location: str = field(default="", compare=False)
    """The option that made it, as written (QEMU's location for errors opening it)."""

    def filename(self, *, connected: bool, bound_path: str | None = None) -> str:
        """``query-chardev``'s ``filename`` for this device (``disconnected:`` prefix
        for a listening socket without its client)."""
        if self.backend == "socket":
            path = bound_path or self.path
            address = f"unix:{path}" if path is not None else f"tcp:{self.host}:{self.port}"
            text = address + (",server=on" if self.server else "")
            return text if connected or not self.server else f"disconnected:{text}"
        return self.backend


@dataclass(frozen=True)
class Monitor:
    """A monitor on chardev ``chardev``: ``control`` (QMP) or ``readline`` (HMP)."""

    chardev: str
    mode: str = "readline"
    pretty: bool = False


@dataclass(frozen=True)
class Invocation:
    """One QEMU command line, read: everything the drop-in needs to start."""

    prog: str = "qemu-system-x86_64"
    show_version: bool = False
    show_help: bool = False
    daemonize: bool = False
    pidfile: str | None = None
    chardevs: tuple[Chardev, ...] = ()
    monitors: tuple[Monitor, ...] = ()
    name: str | None = None
    uuid: str | None = None
    paused: bool = False
    incoming: str | None = None
    """``-incoming``: ``defer`` or the URI to wait for the migration's source on."""
    no_shutdown: bool = False
    no_reboot: bool = False
    actions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    accel: tuple[str, ...] = ()
    cpus: int | None = None
    topology: tuple[int, int, int] | None = None
    """``(sockets, cores, threads)`` when ``-smp`` gives any of them."""
    memory: int = 128 * 1024 * 1024
    drives: tuple[dict[str, Any], ...] = ()
    blockdevs: tuple[dict[str, Any], ...] = ()
    devices: tuple[dict[str, Any], ...] = ()
    vnc: dict[str, Any] | None = None
    spice: dict[str, Any] | None = None
    msg_timestamp: bool = False
    warnings: tuple[str, ...] = ()


_Handler = TypeVar("_Handler", bound=Callable[["_Reader", Parsed], None])

_OPTIONS: dict[str, Callable[[_Reader, Parsed], None]] = {}
"""Each option the drop-in reads, by QEMU's name for it, and the reader's method for it."""


def _option(*names: str) -> Callable[[_Handler], _Handler]:
    """Mark a method of :class:`_Reader` as the handler of the options ``names``."""

    def mark(handler: _Handler) -> _Handler:
        for name in names:
            _OPTIONS[name] = handler
        return handler

    return mark


class _Reader:
    """Reads options one by one into the fields of an :class:`Invocation`."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.values: dict[str, Any] = {}
        self.chardevs: list[Chardev] = []
        self.monitors: list[Monitor] = []
        self.drives: list[dict[str, Any]] = []
        self.blockdevs: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        self.actions: dict[str, str] = {}
        self.warnings: list[str] = []
        self.compat_monitors = 0
        self.accels: list[str] = []

    def keyval(self, opt: Parsed, *, json: bool = False) -> dict[str, Any]:
        assert opt.arg is not None
        implied = _IMPLIED.get(opt.name)
        warnings: list[str] = []
        try:
            value = parse_object(opt.arg, implied, json=json, warnings=warnings)
        finally:
            self.warnings += [f"{opt.location}: {w}" for w in warnings]
        allowed = _PARAMETERS.get(opt.name)
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise OptionError(f"Invalid parameter '{key}'")
        return value

    def read(self, opt: Parsed) -> None:
        if opt.name in NOT_FOR_TARGET:
            raise OptionError("Option not supported for this target")
        handler = _OPTIONS.get(opt.name)
        if handler is not None:
            handler(self, opt)

    # --- flags ---------------------------------------------------------------

    @_option("version")
    def _opt_version(self, _opt: Parsed) -> None:
        self.values.setdefault("show_version", True)

    @_option("h", "help")
    def _opt_h(self, _opt: Parsed) -> None:
        self.values.setdefault("show_help", True)

    @_option("daemonize")
    def _opt_daemonize(self, _opt: Parsed) -> None:
        self.values["daemonize"] = True

    @_option("S")
    def _opt_S(self, _opt: Parsed) -> None:
        self.values["paused"] = True

    @_option("no-shutdown")
    def _opt_no_shutdown(self, _opt: Parsed) -> None:
        self.actions["shutdown"] = "pause"

    @_option("no-reboot")
    def _opt_no_reboot(self, _opt: Parsed) -> None:
        self.actions["reboot"] = "shutdown"

    @_option("enable-kvm")
    def _opt_enable_kvm(self, _opt: Parsed) -> None:
        self.values["accel"] = ("kvm",)

    # --- process -------------------------------------------------------------

    @_option("incoming")
    def _opt_incoming(self, opt: Parsed) -> None:
        self.values["incoming"] = opt.arg

    @_option("pidfile")
    def _opt_pidfile(self, opt: Parsed) -> None:
        self.values["pidfile"] = opt.arg

    @_option("msg")
    def _opt_msg(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        if "timestamp" in value:
            self.values["msg_timestamp"] = parse_bool("timestamp", value["timestamp"])
        if "guest-name" in value:
            parse_bool("guest-name", value["guest-name"])

    @_option("sandbox")
    def _opt_sandbox(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        if "enable" in value:
            parse_bool("enable", value["enable"])

    @_option("overcommit")
    def _opt_overcommit(self, opt: Parsed) -> None:
        for key, raw in self.keyval(opt).items():
            parse_bool(key, raw)

    @_option("rtc")
    def _opt_rtc(self, opt: Parsed) -> None:
        base = self.keyval(opt).get("base")
        date = r"\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\d)?"
        if base not in (None, "utc", "localtime") and not re.fullmatch(date, str(base)):
            raise OptionError(
                "invalid datetime format\nvalid formats: '2006-06-17T16:01:21' or '2006-06-17'",
                located=False,
            )

    # --- identity ------------------------------------------------------------

    @_option("name")
    def _opt_name(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        if "debug-threads" in value:
            parse_bool("debug-threads", value["debug-threads"])
        if "guest" in value:
            self.values["name"] = value["guest"]

    @_option("uuid")
    def _opt_uuid(self, opt: Parsed) -> None:
        assert opt.arg is not None
        try:
            if len(opt.arg) != 36:
                raise ValueError(opt.arg)
            self.values["uuid"] = str(uuidlib.UUID(opt.arg))
        except ValueError:
            raise OptionError("failed to parse UUID string: wrong format") from None

    # --- actions -------------------------------------------------------------

    def _set_action(self, key: str, value: str) -> None:
        if value not in _ACTIONS[key]:
            raise OptionError(f"Parameter '{key}' does not accept value '{value}'")
        self.actions[key] = value

    @_option("watchdog-action")
    def _opt_watchdog_action(self, opt: Parsed) -> None:
        assert opt.arg is not None
        self._set_action("watchdog", opt.arg)

    @_option("action")
    def _opt_action(self, opt: Parsed) -> None:
        for key, value in self.keyval(opt).items():
            self._set_action(key, value)

    # --- machine -------------------------------------------------------------

    @_option("machine", "M")
    def _opt_machine(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        machine = self.values.setdefault("machine", {})
        machine.update(value)
        if "accel" in value:
            accels = tuple(str(value["accel"]).split(":"))
            for accel in accels:
                if accel not in _ACCELERATORS:
                    raise OptionError(f"invalid accelerator {accel}", located=False)
            self.values["accel"] = accels

    @_option("accel")
    def _opt_accel(self, opt: Parsed) -> None:
        accel = str(self.keyval(opt).get("accel", ""))
        if accel not in _ACCELERATORS:
            raise OptionError(f"invalid accelerator {accel}")
        # several -accel options: QEMU tries them in order
        self.accels.append(accel)

    @_option("m")
    def _opt_m(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        raw = value.get("size")
        if raw is None:
            return
        size = parse_size(str(raw), default_suffix="m")
        if size is None:
            raise OptionError(
                f"Parameter 'size' expects a non-negative number below 2^64\n{SIZE_HINT}"
            )
        self.values["memory"] = size

    @_option("smp")
    def _opt_smp(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        numbers: dict[str, int] = {}
        for key, raw in value.items():
            if key not in _SMP_KEYS:
                raise OptionError(f"Parameter 'smp.{key}' is unexpected", located=False)
            if not str(raw).isdigit():
                raise OptionError(f"Parameter 'smp.{key}' expects integer", located=False)
            numbers[key] = int(raw)
        cpus = numbers.get("cpus")
        if cpus is None:
            cpus = 1
            for key in ("sockets", "dies", "clusters", "cores", "threads"):
                cpus *= numbers.get(key, 1)
        maxcpus = numbers.get("maxcpus", cpus)
        if maxcpus < cpus:
            raise OptionError(
                "Invalid CPU topology: maxcpus must be equal to or greater than smp: sockets (1) "
                f"* dies (1) * cores (1) * threads (1) == maxcpus ({maxcpus}) < smp_cpus ({cpus})",
                located=False,
            )
        self.values["cpus"] = cpus
        if any(key in numbers for key in ("sockets", "cores", "threads")):
            threads = numbers.get("threads", 1)
            cores = numbers.get("cores", 1)
            sockets = numbers.get("sockets", max(1, maxcpus // (cores * threads)))
            self.values["topology"] = (sockets, cores, threads)

    # --- character devices and monitors --------------------------------------

    def _chardev(self, opt: Parsed, value: dict[str, Any], ident: str) -> Chardev:
        backend = str(value.get("backend", ""))
        if backend not in _CHARDEV_BACKENDS:
            raise OptionError(f"'{backend}' is not a valid char driver name")
        fd = value.get("fd")
        if fd is not None and not str(fd).isdigit():
            raise OptionError(f"Parameter 'fd' expects a number, not '{fd}'")
        server = parse_bool("server", value.get("server", "off"))
        wait = parse_bool("wait", value.get("wait", "on"))
        return Chardev(
            location=opt.location,
            id=ident,
            backend=backend,
            path=value.get("path"),
            host=value.get("host"),
            port=value.get("port"),
            fd=None if fd is None else int(fd),
            server=server,
            wait=wait,
        )

    @_option("chardev")
    def _opt_chardev(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        if "id" not in value:
            raise OptionError("chardev: no id specified")
        self.chardevs.append(self._chardev(opt, value, str(value["id"])))

    @_option("mon")
    def _opt_mon(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        mode = value.get("mode", "readline")
        if mode not in ("readline", "control"):
            raise OptionError(f"Parameter 'mode' does not accept value '{mode}'")
        chardev = value.get("chardev")
        if chardev is None:
            raise OptionError("-mon: chardev is required", located=False)
        if not any(c.id == chardev for c in self.chardevs):
            raise OptionError(f'chardev "{chardev}" not found')
        pretty = parse_bool("pretty", value.get("pretty", "off"))
        self.monitors.append(Monitor(str(chardev), str(mode), pretty))

    def _compat_monitor(self, opt: Parsed, mode: str, *, pretty: bool = False) -> None:
        assert opt.arg is not None
        if opt.arg == "none":
            return
        ident = f"compat_monitor{self.compat_monitors}"
        self.compat_monitors += 1
        self.chardevs.append(self._legacy_chardev(opt, ident))
        self.monitors.append(Monitor(ident, mode, pretty))

    def _legacy_chardev(self, opt: Parsed, ident: str) -> Chardev:
        """``unix:PATH,server=on,wait=off``, ``tcp:HOST:PORT,…``, ``stdio``…: QEMU's
        qemu_chr_parse_compat()."""
        text = str(opt.arg)
        kind, _, rest = text.partition(":")
        address, _, options = rest.partition(",")
        value = dict(parse_keyval(options)) if options else {}
        if kind == "unix" and rest:
            value |= {"backend": "socket", "path": address}
        elif kind == "tcp" and rest:
            host, _, port = address.rpartition(":")
            value |= {"backend": "socket", "host": host, "port": port}
        elif text in ("stdio", "null", "pty", "vc") or kind in ("file", "pipe"):
            value = {"backend": kind} | ({"path": rest} if rest else {})
        else:
            raise OptionError(
                f"'{text}' is not a valid char driver", also=(f"parse error: {text}",)
            )
        return self._chardev(opt, value, ident)

    @_option("qmp")
    def _opt_qmp(self, opt: Parsed) -> None:
        self._compat_monitor(opt, "control")

    @_option("qmp-pretty")
    def _opt_qmp_pretty(self, opt: Parsed) -> None:
        self._compat_monitor(opt, "control", pretty=True)

    @_option("monitor")
    def _opt_monitor(self, opt: Parsed) -> None:
        self._compat_monitor(opt, "readline")

    # --- devices ---------------------------------------------------------------

    @_option("device")
    def _opt_device(self, opt: Parsed) -> None:
        value = self.keyval(opt, json=True)
        if not isinstance(value.get("driver"), str):
            raise OptionError("Parameter 'driver' is missing")
        self.devices.append(value)

    @_option("blockdev")
    def _opt_blockdev(self, opt: Parsed) -> None:
        value = _nest(self.keyval(opt, json=True))
        driver = value.get("driver")
        if driver is None:
            raise OptionError("Parameter 'driver' is missing")
        if not isinstance(driver, str):
            raise OptionError("Invalid parameter type for 'driver', expected: string")
        self.blockdevs.append(value)

    @_option("drive")
    def _opt_drive(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        if "file" not in value and "driver" not in value:
            raise OptionError("Must specify either driver or file")
        interface = value.get("if", "ide")
        if interface not in ("ide", "scsi", "floppy", "pflash", "mtd", "sd", "virtio", "none"):
            raise OptionError(f"unsupported bus type '{interface}'")
        # a read cannot run out of space: QEMU refuses rerror=enospc
        for key, what, allowed in (
            ("werror", "write", DISK_POLICIES),
            ("rerror", "read", READ_POLICIES),
        ):
            action = value.get(key)
            if action is not None and action not in allowed:
                raise OptionError(f"'{action}' invalid {what} error action")
        self.drives.append(value)

    def _legacy_drive(self, opt: Parsed, **extra: str) -> None:
        assert opt.arg is not None
        self.drives.append({"file": opt.arg, **extra})

    @_option("hda")
    def _opt_hda(self, opt: Parsed) -> None:
        self._legacy_drive(opt, index="0", media="disk")

    @_option("hdb")
    def _opt_hdb(self, opt: Parsed) -> None:
        self._legacy_drive(opt, index="1", media="disk")

    @_option("hdc")
    def _opt_hdc(self, opt: Parsed) -> None:
        self._legacy_drive(opt, index="2", media="disk")

    @_option("hdd")
    def _opt_hdd(self, opt: Parsed) -> None:
        self._legacy_drive(opt, index="3", media="disk")

    @_option("cdrom")
    def _opt_cdrom(self, opt: Parsed) -> None:
        self._legacy_drive(opt, index="2", media="cdrom")

    @_option("vnc")
    def _opt_vnc(self, opt: Parsed) -> None:
        value = self.keyval(opt)
        display = str(value.get("vnc", ""))
        if display == "none":
            return
        host, sep, number = display.rpartition(":")
        if not sep:
            raise OptionError("vnc port cannot be empty" if display else "Invalid parameter 'vnc'")
        if not number:
            raise OptionError("vnc port cannot be empty")
        if not number.isdigit():
            raise OptionError(f"can't convert to a number: {number}")
        value["host"] = host
        value["display"] = int(number)
        self.values["vnc"] = value

    @_option("display")
    def _opt_display(self, opt: Parsed) -> None:
        value = self.keyval(opt, json=True)
        kind = value.get("type")
        if kind not in _DISPLAYS:
            raise OptionError(f"Parameter 'type' does not accept value '{kind}'")
        for key in value:
            if key not in ("type", "full-screen", "window-close", "show-cursor", "gl"):
                raise OptionError(f"Parameter '{key}' is unexpected")

    @_option("object")
    def _opt_object(self, opt: Parsed) -> None:
        value = self.keyval(opt, json=True)
        if "qom-type" not in value:
            raise OptionError("Parameter 'qom-type' is missing")
        if "id" not in value:
            raise OptionError("Parameter 'id' is missing")

    @_option("spice")
    def _opt_spice(self, opt: Parsed) -> None:
        self.values["spice"] = self.keyval(opt)

    def finish(self) -> Invocation:
        v = self.values
        return Invocation(
            prog=self.prog,
            show_version=v.get("show_version", False),
            show_help=v.get("show_help", False),
            daemonize=v.get("daemonize", False),
            pidfile=v.get("pidfile"),
            chardevs=tuple(self.chardevs),
            monitors=tuple(self.monitors),
            name=v.get("name"),
            uuid=v.get("uuid"),
            paused=v.get("paused", False),
            incoming=v.get("incoming"),
            no_shutdown=self.actions.get("shutdown") == "pause",
            no_reboot=self.actions.get("reboot") == "shutdown",
            actions=dict(self.actions),
            machine=v.get("machine", {}),
            accel=tuple(self.accels) or v.get("accel", ()),
            cpus=v.get("cpus"),
            topology=v.get("topology"),
            memory=v.get("memory", 128 * 1024 * 1024),
            drives=tuple(self.drives),
            blockdevs=tuple(self.blockdevs),
            devices=tuple(self.devices),
            vnc=v.get("vnc"),
            spice=v.get("spice"),
            msg_timestamp=v.get("msg_timestamp", False),
            warnings=tuple(self.warnings),
        )


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``file.driver=file`` → ``{"file": {"driver": "file"}}`` (keyval's dotted keys)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def parse_command_line(argv: list[str], prog: str = "qemu-system-x86_64") -> Invocation:
    """Read QEMU's arguments (without the program name) as QEMU 7.2 does.

    Raises :class:`~qmpsim.qemu.opts.OptionError` with QEMU's message for a command
    line QEMU refuses; its ``location`` attribute is the option as written (or
    ``None`` when QEMU prints none).
    """
    options = list(split_argv(argv))
    reader = _Reader(prog)
    # -version and -help act before anything else is read, wherever they are.
    for opt in options:
        if opt.name in ("version", "h", "help"):
            reader.read(opt)
    if reader.values:
        return reader.finish()
    for opt in options:
        try:
            reader.read(opt)
        except OptionError as exc:
            if exc.located:
                exc.location = opt.location
            exc.warnings = tuple(reader.warnings)
            raise
    return reader.finish()
