"""``qmpsim generate``: a seeded random walk's events as JSON lines."""

from __future__ import annotations

import argparse
import sys

from qmpsim.cli.common import (
    EXIT_OK,
    UsageError,
    _profile_names,
    subcommand,
)


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="the same seed, the same stream")
    parser.add_argument("--count", type=int, default=20, help="how many events (default: 20)")
    parser.add_argument(
        "--profile", choices=_profile_names(), default="qemu-7.2", help="default: qemu-7.2"
    )
    parser.add_argument(
        "--causes",
        metavar="NAME,...",
        help="only these causes and commands (e.g. disk-error,cont); default: all but the"
        " migration moves (migrate,migrate_cancel,migrate-start-postcopy,migrate-pause)",
    )


@subcommand(
    "generate",
    help="print a reproducible random event stream as JSON lines",
    description="Print a random event stream as JSON lines: a walk over a random VM's legal "
    "moves, so it obeys every rule of the profile; the same seed gives the same stream.",
    arguments=_generate_arguments,
)
def generate(args: argparse.Namespace) -> int:
    """``qmpsim generate``."""
    from qmpsim.testing.walk import generate_lines

    causes = args.causes.split(",") if args.causes else None
    try:
        lines = generate_lines(
            seed=args.seed, count=args.count, profile=args.profile, causes=causes
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # line by line as the walk goes: `qmpsim generate | head` stops it early
    for line in lines:
        sys.stdout.write(line)
    return EXIT_OK
