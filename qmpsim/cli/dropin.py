"""``qmpsim qemu`` and ``qmpsim ctl``: the drop-in QEMU from the ``qmpsim`` command."""

from __future__ import annotations

import argparse
import json
import sys

from qmpsim.cli.common import EXIT_FAILURE, EXIT_OK, UsageError, subcommand

QEMU_EPILOG = """\
examples:
  qmpsim qemu -- -M pc -S -name guest=vm1 -qmp unix:/tmp/vm1.qmp,server=on,wait=off
      a paused simulated VM with a QMP monitor, as qemu-system-x86_64 would start it
  qmpsim qemu -- -version

It is the same program as the qmpsim-system-x86_64 command, which launchers such
as libvirt run as their <emulator>.  Settings per guest (profile, scenario) are
read from /etc/qmpsim/NAME.toml and /etc/qmpsim/default.toml (QMPSIM_CONFIG_DIR
replaces /etc/qmpsim); each VM serves a control socket, reached with `qmpsim ctl`.
See docs/libvirt.md."""


def _qemu_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="-- QEMU-ARGS", help="QEMU's command line"
    )


@subcommand(
    "qemu",
    help="run a simulated VM from QEMU's command line (the drop-in qemu-system-x86_64)",
    epilog=QEMU_EPILOG,
    arguments=_qemu_arguments,
)
def qemu(args: argparse.Namespace) -> int:
    """``qmpsim qemu -- ARGS``."""
    from qmpsim.qemu.main import run

    words: list[str] = list(args.args)
    if words[:1] == ["--"]:
        words = words[1:]
    return run(words)


CTL_EPILOG = """\
actions:
  cause KIND [KEY=VALUE…]   make something happen: disk-error, watchdog, vnc-connect, …
  emit EVENT [KEY=VALUE…]   send one event with this data
  run STEP…                 run scenario steps, each one YAML ('{wait: 1s}')
  trigger ACTION            run one of the scenario's named actions
  status                    the run state, the clients, the timeline
  transcript                the monitors' traffic, one JSON line per message
  reset                     a fresh VM; the scenario restarts

examples:
  qmpsim ctl vm1 cause disk-error device=virtio-disk0
  qmpsim ctl vm1 cause vnc-connect client=alice
  qmpsim ctl vm1 emit RTC_CHANGE offset=10 qom-path=/machine/unattached/device[9]
  qmpsim ctl --list

The VM is found by its guest name (-name guest=NAME) in the run directory:
QMPSIM_RUN_DIR, else /run/qmpsim, $XDG_RUNTIME_DIR/qmpsim or /tmp/qmpsim-UID.
exit status: 0 done, 1 the VM refused or cannot be reached, 2 bad arguments."""


def _ctl_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("guest", nargs="?", metavar="GUEST", help="the VM's guest name")
    parser.add_argument("action", nargs="?", metavar="ACTION", help="what to do (see below)")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="ARG", help="its arguments")
    parser.add_argument("--run-dir", metavar="DIR", help="where the control sockets are")
    parser.add_argument("--list", action="store_true", help="list the running VMs and exit")


@subcommand(
    "ctl",
    help="drive a running drop-in VM: causes, events, steps, its transcript",
    epilog=CTL_EPILOG,
    arguments=_ctl_arguments,
)
def ctl(args: argparse.Namespace) -> int:
    """``qmpsim ctl GUEST ACTION…``."""
    from qmpsim.qemu.ctl import CtlError, find_socket, guests, request_for, send

    if args.list:
        for name in guests(args.run_dir):
            print(name)
        return EXIT_OK
    if args.guest is None or args.action is None:
        raise UsageError("give a GUEST and an ACTION (or --list)")
    try:
        command, arguments = request_for(args.action, args.words)
    except CtlError as exc:
        raise UsageError(str(exc)) from None
    try:
        result = send(find_socket(args.guest, args.run_dir), command, arguments)
    except CtlError as exc:
        print(f"qmpsim ctl: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if command == "qmpsim-transcript":
        for entry in result:
            print(json.dumps(entry))
    elif result not in ({}, None):
        print(json.dumps(result, indent=2))
    return EXIT_OK
