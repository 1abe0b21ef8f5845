"""The command line's drives, devices, character devices and monitors.

``-chardev``, ``-mon`` and the legacy ``-qmp``/``-monitor`` (QEMU's
qemu_chr_parse_compat()), ``-device``, ``-blockdev``, ``-drive`` and the legacy
``-hda``…``-cdrom``: each checked as QEMU checks it while it reads the command line.
"""

from __future__ import annotations

from typing import Any

from qmpsim.vm.block_errors import DISK_POLICIES, READ_POLICIES

from .cmdline_core import Chardev, Monitor, _option, _ReaderCore
from .opts import OptionError, Parsed, parse_bool, parse_keyval

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


class _DeviceOptions(_ReaderCore):
    """The handlers of drives, devices, character devices and monitors."""

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
