"""QEMU's command line, read into an :class:`Invocation`: what to serve and how.

Only the reading happens here (no sockets, no processes): monitors and their
character devices, daemonize and pidfile, and every option that describes the
VM, kept as written so :mod:`qmpsim.qemu.vmdesc` can build the VM from them.
Options qmpsim has no use for are accepted (and checked where QEMU checks them
early), so any launcher's command line starts.
"""

from __future__ import annotations

from .cmdline_core import Chardev, Invocation, Monitor
from .cmdline_devices import _DeviceOptions
from .cmdline_machine import _MachineOptions
from .opts import OptionError, split_argv

__all__ = ["Chardev", "Invocation", "Monitor", "parse_command_line"]


class _Reader(_MachineOptions, _DeviceOptions):
    """Reads options one by one into the fields of an :class:`Invocation`: every
    handler of :data:`~qmpsim.qemu.cmdline_core._OPTIONS` is one of its methods."""


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
