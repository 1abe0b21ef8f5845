"""The core of the command-line reader: what a read command line is, the option table.

:class:`Invocation` (with its :class:`Chardev` and :class:`Monitor`) is what
:mod:`qmpsim.qemu.cmdline` gives; :class:`_ReaderCore` holds what the options read
so far set, checks the parameters QEMU checks while it reads an option's
``key=value,…`` text (the syntax itself is :mod:`qmpsim.qemu.opts`'s), and
dispatches each option to its handler through the one table ``@_option`` fills.
The handlers are the mixins' methods: :mod:`qmpsim.qemu.cmdline_devices` (drives,
devices, chardevs, monitors) and :mod:`qmpsim.qemu.cmdline_machine` (machine,
display and the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qmpsim.vm.watchdog import WATCHDOG_ACTIONS

from .opts import NOT_FOR_TARGET, OptionError, Parsed, parse_object

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


# a handler: (reader, the option); the reader is a _ReaderCore of the class the
# method is defined on (a handler module's mixin)
_HandlerFn = Callable[..., None]
_Handler = TypeVar("_Handler", bound=_HandlerFn)

_OPTIONS: dict[str, _HandlerFn] = {}
"""Each option the drop-in reads, by QEMU's name for it, and the reader's method for it."""


def _option(*names: str) -> Callable[[_Handler], _Handler]:
    """Mark a method of a reader's mixin as the handler of the options ``names``."""

    def mark(handler: _Handler) -> _Handler:
        for name in names:
            _OPTIONS[name] = handler
        return handler

    return mark


class _ReaderCore:
    """The reader's state, the parameter check of an option's text and the dispatch of
    each option to its handler; ``finish`` makes the :class:`Invocation`."""

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
