"""``qmpsim commands``: which commands a profile has, and how qmpsim answers each."""

from __future__ import annotations

import argparse
import sys

from qmpsim.cli.common import (
    EXIT_OK,
    _profile_names,
    subcommand,
)


def _commands_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", choices=_profile_names(), help="which QEMU (default: the default profile)"
    )
    parser.add_argument(
        "--events", action="store_true", help="list the profile's events instead of its commands"
    )


@subcommand(
    "commands",
    help="list a profile's commands and what answers each",
    description="List every command of a profile and the source of its replies: modelled "
    "(the VM model), recorded (the real QEMU's reply to the same request; '(by qemu-X.Y)' "
    "where only the nearest recorded version answered it) or generated (made from the "
    "return type; serve --strict-commands refuses those).",
    arguments=_commands_arguments,
)
def commands(args: argparse.Namespace) -> int:
    """``qmpsim commands``."""
    from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile

    profile = get_profile(args.profile or DEFAULT_PROFILE)
    if args.events:
        for name, event in profile.events.items():
            members = ", ".join(f.name for f in event.data.fields) if event.data else ""
            print(f"{name}  {members}".rstrip())
        print(f"# {profile.name}: {len(profile.events)} events", file=sys.stderr)
        return EXIT_OK
    from qmpsim.vm.machine import modelled_commands
    from qmpsim.vm.replies import RECORDED, source

    counts: dict[str, int] = {}
    width = max(len(name) for name in profile.commands)
    modelled_here = modelled_commands() | {"qmp_capabilities"}  # the protocol answers that one
    for name, spec in profile.commands.items():
        modelled = name in modelled_here
        kind = source(profile, name, modelled=modelled)
        counts[kind] = counts.get(kind, 0) + 1
        donors = {r.borrowed for r in profile.recorded.get(name, ())}
        note = f" (by {donors.pop()})" if kind == RECORDED and None not in donors else ""
        print(f"{name:<{width}}  {kind}{note}{'  oob' if spec.allow_oob else ''}")
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    print(f"# {profile.name}: {len(profile.commands)} commands ({summary})", file=sys.stderr)
    return EXIT_OK


# --- qmpsim check / generate (conformance and random streams) ------------------------------
