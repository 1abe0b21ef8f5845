"""What every ``qmpsim`` subcommand shares: the registry, exit statuses, usage errors,
and the options and simulators the serving commands have in common."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario


EXIT_OK = 0
EXIT_FAILURE = 1
"""The command ran but could not do its job (cannot listen, bad scenario…)."""
EXIT_USAGE = 2
"""Bad arguments (argparse's convention)."""

Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """One ``qmpsim NAME``: its help texts, its options and the function that runs it."""

    name: str
    help: str
    description: str
    epilog: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner


SUBCOMMANDS: dict[str, Subcommand] = {}
"""Every subcommand, by name, in the order they were registered."""


def subcommand(
    name: str,
    *,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    description: str | None = None,
    epilog: str = "",
) -> Callable[[Runner], Runner]:
    """Register the decorated function as ``qmpsim NAME``."""

    def register(run: Runner) -> Runner:
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        SUBCOMMANDS[name] = Subcommand(
            name, help, description or help[:1].upper() + help[1:] + ".", epilog, arguments, run
        )
        return run

    return register


class UsageError(Exception):
    """An argument that parsed but makes no sense; reported like argparse's own errors."""


# --- shared helpers -------------------------------------------------------------------


@dataclass(frozen=True)
class TcpAddress:
    """A ``HOST:PORT`` given on the command line."""

    host: str
    port: int


def parse_tcp(text: str) -> TcpAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (loopback); ``ArgumentTypeError`` otherwise."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: expected [IPV6]:PORT, e.g. [::1]:4444")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:4444 (PORT 0 picks a free one)"
            )
        if ":" in host:
            raise argparse.ArgumentTypeError(f"{text!r}: write IPv6 hosts in brackets: [::1]:4444")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 0 to 65535")
    return TcpAddress(host or "127.0.0.1", int(port))


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a subcommand listens: ``--unix PATH`` or ``--tcp HOST:PORT``, and
    ``--allow-remote``; :func:`check_listen` checks them."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix socket at PATH")
    where.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        type=parse_tcp,
        help="listen on TCP (loopback only unless --allow-remote; PORT 0 picks a free one)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --tcp host (the monitor has no authentication)",
    )


def check_listen(args: argparse.Namespace) -> None:
    """A :class:`UsageError` for a ``--tcp`` host off this machine without ``--allow-remote``."""
    from qmpsim.runtime.listen import is_loopback  # the runtime's rule, asked before it runs

    if args.tcp is not None and not args.allow_remote and not is_loopback(args.tcp.host):
        raise UsageError(
            f"--tcp {args.tcp.host}: not a loopback address; the monitor has no "
            "authentication, so add --allow-remote to expose it on purpose"
        )


def _profile_names() -> list[str]:
    from qmpsim.qmp.profiles import PROFILES  # stdlib only: cheap

    return list(PROFILES)  # oldest first


def _setup_logging(verbose: bool) -> None:
    from qmpsim.logs import stderr_handler

    root = logging.getLogger("qmpsim")
    root.handlers[:] = [stderr_handler(sys.stderr)]
    # -v: connections, scenario steps and every message (DEBUG, qmpsim.traffic).
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


def load_scenario_arg(path: str | None) -> Scenario | None:
    """The scenario named on the command line: a file, or a shipped scenario's name.

    ``None`` is an idle VM.  ``ScenarioError`` (from the scenario module) says
    where a file is wrong.
    """
    if path is None:
        return None
    from qmpsim.scenario.library import load_named

    return load_named(path)


SERVE_TRANSCRIPT_LIMIT = 10_000
"""Entries a long-running ``serve`` keeps in its transcript (the newest ones)."""


def make_simulator(
    scenario: Scenario | None,
    *,
    profile: str | None,
    multi_client: bool = False,
    max_input: int | None = None,
) -> Simulator:
    """A simulator for ``scenario`` (or an idle VM of ``profile``)."""
    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.server import Simulator

    transcript = Transcript(max_entries=SERVE_TRANSCRIPT_LIMIT)
    if scenario is None:
        from qmpsim.qmp.profiles import DEFAULT_PROFILE

        return Simulator(
            profile=profile or DEFAULT_PROFILE,
            multi_client=multi_client,
            max_input_buffer=max_input,
            transcript=transcript,
        )
    if profile is not None and profile != scenario.profile:
        raise UsageError(
            f"--profile {profile} contradicts the scenario, which is written for {scenario.profile}"
        )
    from qmpsim.scenario.dryrun import build_machine

    return Simulator(
        build_machine(scenario),
        multi_client=multi_client,
        max_input_buffer=max_input,
        transcript=transcript,
    )
