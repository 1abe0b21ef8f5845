"""QEMU's option syntax: the option table, ``key=value`` lists and JSON arguments.

Three syntaxes reach QEMU's options: ``key=value,key2=value2`` (QemuOpts, with
``,,`` for a literal comma, an *implied* first key such as ``-m 64`` meaning
``size=64``, and short-form booleans ``foo``/``nofoo``), JSON objects for the
options QEMU 7.2 accepts them on (``-device {"driver": …}``), and plain strings.
Errors carry QEMU's own texts; :class:`OptionError` says whether QEMU prints them
after the option's location (``qemu-system-x86_64: -name x,y=1: Invalid
parameter 'y'``) or without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qmpsim.qmp.wire import JsonStreamer, ParseError

from ..errors import QmpSimError

__all__ = [
    "FLAGS",
    "JSON_OPTIONS",
    "NOT_FOR_TARGET",
    "WITH_ARGUMENT",
    "OptionError",
    "Parsed",
    "lookup",
    "parse_bool",
    "parse_keyval",
    "parse_object",
    "parse_size",
    "split_argv",
]


class OptionError(QmpSimError):
    """A command line QEMU refuses: its message, and whether QEMU prefixes the location."""

    def __init__(self, message: str, *, located: bool = True, also: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.located = located
        self.also = also
        """Further messages QEMU prints for the same mistake, each on a line of its own."""
        self.location: str | None = None
        """The option as written, when QEMU prints it before the message."""
        self.warnings: tuple[str, ...] = ()
        """Warnings QEMU printed before it refused (each ``LOCATION: warning: …``)."""

    def lines(self, prog: str) -> list[str]:
        """What QEMU prints on stderr: ``PROG: [LOCATION: ]MESSAGE`` for each message."""
        where = f"{self.location}: " if self.location else ""
        return [f"{prog}: {w}" for w in self.warnings] + [
            f"{prog}: {where}{message}" for message in (str(self), *self.also)
        ]


# QEMU 7.2's options for x86_64 (qemu-options.hx), by whether they take an argument.
_WITH_ARGUMENT = """
    accel acpitable action add-fd append audio audiodev bios blockdev boot cdrom chardev
    chroot compat cpu d D debugcon device dfilter display drive dtb dump-vmstate echr
    fda fdb fsdev fw_cfg g gdb global hda hdb hdc hdd icount incoming initrd iscsi k
    kernel L loadvm m M machine mem-path mon monitor msg mtdblock name net netdev nic
    numa object option-rom overcommit parallel pflash pidfile plugin prom-env qmp
    qmp-pretty qtest qtest-log readconfig rotate rtc runas sandbox sd seed
    semihosting-config serial set smbios smp spice tpmdev trace usbdevice uuid vga
    virtfs vnc watchdog-action xen-domid
"""
_FLAGS = """
    async-teardown audio-help daemonize enable-kvm enable-sync-profile full-screen h
    help mem-prealloc no-acpi no-fd-bootchk no-hpet no-reboot no-shutdown no-user-config
    nodefaults nographic old-param only-migratable portrait preconfig s S semihosting
    singlestep snapshot usb version win2k-hack xen-attach xen-domid-restrict
"""
WITH_ARGUMENT = frozenset(_WITH_ARGUMENT.split())
FLAGS = frozenset(_FLAGS.split())
NOT_FOR_TARGET = frozenset(
    (
        "g",
        "old-param",
        "prom-env",
        "semihosting",
        "semihosting-config",
        "xen-attach",
        "xen-domid",
        "xen-domid-restrict",
    )
)
"""Options QEMU knows but refuses on x86_64 (or without Xen): "Option not supported for
this target"."""

JSON_OPTIONS = frozenset(("device", "object", "blockdev", "audiodev", "netdev", "display"))
"""Options whose argument may be a JSON object (it starts with ``{``)."""


def lookup(arg: str) -> str | None:
    """The option name of ``-name``/``--name``; ``None`` when it is no option QEMU has."""
    name = arg[2:] if arg.startswith("--") else arg[1:]
    return name if name in WITH_ARGUMENT or name in FLAGS else None


@dataclass(frozen=True)
class Parsed:
    """One option as written: its name (without dashes) and argument (``None`` for flags)."""

    name: str
    arg: str | None

    @property
    def location(self) -> str:
        """QEMU's location prefix for errors about this option: ``-name ARG``."""
        return f"-{self.name}" if self.arg is None else f"-{self.name} {self.arg}"


def split_argv(argv: list[str]) -> Iterator[Parsed]:
    """QEMU's first pass: every option with its argument; disk images as ``hda``.

    An unknown option or a missing argument raises :class:`OptionError` at once,
    as QEMU checks the whole command line before it acts on any of it.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            yield Parsed("hda", arg)
            continue
        name = lookup(arg)
        if name is None:
            raise OptionError(f"{arg}: invalid option", located=False)
        if name in WITH_ARGUMENT:
            if i >= len(argv):
                raise OptionError(f"{arg}: requires an argument", located=False)
            yield Parsed(name, argv[i])
            i += 1
        else:
            yield Parsed(name, None)


# --- key=value lists ----------------------------------------------------------------


def _value(text: str, start: int) -> tuple[str, int]:
    """A value up to the next single comma (``,,`` is a literal comma); where it ended."""
    out: list[str] = []
    i = start
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text.startswith(",,", i):
                out.append(",")
                i += 2
                continue
            break
        out.append(ch)
        i += 1
    return "".join(out), i


def parse_keyval(
    text: str, implied: str | None = None, *, warnings: list[str] | None = None
) -> list[tuple[str, str]]:
    """``a=1,b=x,,y,flag,nofoo`` as QemuOpts reads it: ``(key, value)`` pairs in order.

    ``implied`` names the key of a first element written without ``=``. Short-form
    booleans become ``on``/``off``, with QEMU's deprecation warning added to
    ``warnings``.
    """
    pairs: list[tuple[str, str]] = []
    i = 0
    first = True
    while i < len(text):
        end = len(text)
        for stop in ("=", ","):
            at = text.find(stop, i)
            if at != -1:
                end = min(end, at)
        if end < len(text) and text[end] == "=":
            key = text[i:end]
            value, i = _value(text, end + 1)
        elif first and implied is not None:
            key = implied
            value, i = _value(text, i)
        else:
            key = text[i:end]
            i = end
            prefix = ""
            if key.startswith("no"):
                key, value, prefix = key[2:], "off", "no"
            else:
                value = "on"
            if key not in ("help", "?") and warnings is not None:
                warnings.append(
                    f"warning: short-form boolean option '{prefix}{key}' deprecated\n"
                    f"Please use {key}={value} instead"
                )
        pairs.append((key, value))
        first = False
        if i < len(text) and text[i] == ",":
            i += 1
    return pairs


def parse_object(
    text: str,
    implied: str | None = None,
    *,
    json: bool = True,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """An option's argument as an object: JSON when it starts with ``{`` (and ``json``),
    else ``key=value`` pairs with the last value of a repeated key winning."""
    if json and text.startswith("{"):
        streamer = JsonStreamer()
        values = streamer.feed(text.encode()) + streamer.flush()
        if len(values) > 1:
            raise OptionError("Expecting at most one JSON value")
        if not values:
            raise OptionError("Expecting a JSON value")
        (value,) = values
        if isinstance(value, ParseError):
            raise OptionError(value.message)
        if not isinstance(value, dict):
            raise OptionError("Expecting a JSON object")
        return value
    return dict(parse_keyval(text, implied, warnings=warnings))


# --- scalar values --------------------------------------------------------------------

_SUFFIXES = {"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively."
)


def parse_size(text: str, *, default_suffix: str = "") -> int | None:
    """A size with QEMU's suffixes (``64``, ``64M``, ``1.5G``); ``None`` when malformed."""
    body = text.strip()
    suffix = default_suffix
    if body and body[-1].lower() in _SUFFIXES and not body[-1].isdigit():
        suffix, body = body[-1].lower(), body[:-1]
    if not body or body[0] in "+-" or not all(c.isdigit() or c == "." for c in body):
        return None
    try:
        number = float(body) if "." in body else int(body)
    except ValueError:
        return None
    size = int(number * (1 << _SUFFIXES[suffix]))
    return size if size < 1 << 64 else None


def parse_bool(key: str, value: Any) -> bool:
    """``on``/``off`` (and QEMU's other spellings, or a JSON boolean) as a bool."""
    if isinstance(value, bool):
        return value
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise OptionError(f"Parameter '{key}' expects 'on' or 'off'")
