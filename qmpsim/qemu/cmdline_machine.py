"""The command line's machine, display and other options.

Flags (``-S``, ``-daemonize``…), the process (``-pidfile``, ``-incoming``, ``-msg``,
``-sandbox``, ``-rtc``…), identity (``-name``, ``-uuid``), actions, the machine
(``-machine``, ``-accel``, ``-m``, ``-smp``), displays (``-vnc``, ``-display``,
``-spice``) and ``-object``: each checked as QEMU checks it while it reads the
command line.
"""

from __future__ import annotations

import re
import uuid as uuidlib

from .cmdline_core import _ACTIONS, _option, _ReaderCore
from .opts import SIZE_HINT, OptionError, Parsed, parse_bool, parse_size

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


class _MachineOptions(_ReaderCore):
    """The handlers of the machine, display and other options."""

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

    # --- displays and objects ------------------------------------------------

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
