"""``qmpsim check``: recorded traffic checked against a profile's rules."""

from __future__ import annotations

import argparse
import sys

from qmpsim.cli.common import (
    _profile_names,
    subcommand,
)

CHECK_EPILOG = """\
examples:
  qmpsim check events.jsonl
      one event (or any QMP message) per line, as a client records them
  qmpsim check --profile qemu-0.14 transcript.jsonl
      a qmpsim transcript: each client's stream is checked on its own
  python my_client.py 2>&1 | qmpsim check -
      a qemu.qmp debug log (its "<--" records) read from standard input

Each violation is printed as FILE:LINE: RULE: message; the exit status is 1
when any file has one, so the command fits CI."""


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines logs of QMP traffic ('-': stdin)"
    )
    parser.add_argument(
        "--profile", choices=_profile_names(), default="qemu-7.2", help="default: qemu-7.2"
    )
    parser.add_argument(
        "--initial-status",
        choices=("running", "paused"),
        help="the VM's run state before the first line (default: unknown)",
    )


@subcommand(
    "check",
    help="check recorded QMP traffic against a profile's rules",
    description="Check JSON-lines logs of QMP traffic (events, raw server messages, qmpsim "
    "transcripts or qemu.qmp debug logs) against a profile: schemas, causal rules, sessions, "
    "throttling and timestamp order.",
    epilog=CHECK_EPILOG,
    arguments=_check_arguments,
)
def check(args: argparse.Namespace) -> int:
    """``qmpsim check``."""
    from qmpsim.testing.conformance import check_files

    return check_files(args.files, args.profile, sys.stdout, initial_status=args.initial_status)
