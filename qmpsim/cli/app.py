"""The ``qmpsim`` command: the parser built from every registered subcommand, and
one exit policy for all of them.

Each subcommand lives in a module of its own (:mod:`~qmpsim.cli.serve`, …) and
registers itself with :func:`~qmpsim.cli.common.subcommand` when imported; its options
are declared by the function given as ``arguments``.  trio and the server are
imported inside the subcommands, so ``qmpsim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
import warnings

from qmpsim.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    SUBCOMMANDS,
    UsageError,
)

# --- main ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="qmpsim",
        description="A QEMU event simulator and QMP test double: a fake QMP monitor that "
        "speaks like QEMU 7.2 and plays scripted event sequences.",
        epilog="Run `qmpsim COMMAND --help` for each command's options and examples.",
    )
    from qmpsim import __version__

    parser.add_argument("--version", action="version", version=f"qmpsim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for sub in SUBCOMMANDS.values():
        child = commands.add_parser(
            sub.name,
            help=sub.help,
            description=textwrap.fill(sub.description, 79),  # the epilog stays as written
            epilog=sub.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.arguments(child)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qmpsim`` command; returns the exit status.

    One policy for every subcommand, whatever it runs on (trio or not): Ctrl-C
    stops quietly with status 130, output whose reader went away (``qmpsim
    generate | head``) stops quietly with 141, as a shell reports ``cat`` killed by
    SIGPIPE; a bad argument or input is one line on stderr (status 2, or 1).
    """
    who = "qmpsim"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        who = f"qmpsim {args.command}"
        return SUBCOMMANDS[args.command].run(args)
    except BaseException as exc:
        status = _exit_status(exc, who)
        if status is None:
            raise
        if status == EXIT_USAGE:
            raise SystemExit(status) from None  # as argparse's own errors do
        return status


EXIT_INTERRUPTED = 128 + 2
"""Ctrl-C (128 + SIGINT, what shells expect of an interrupted command)."""
EXIT_BROKEN_PIPE = 128 + 13
"""The reader of standard output went away (128 + SIGPIPE, as ``cat`` ends then)."""


def _exit_status(exc: BaseException, who: str) -> int | None:
    """The exit status for ``exc`` escaping a subcommand, after reporting it; ``None``: re-raise.

    trio wraps what its tasks raise in exception groups: their leaves decide.
    """
    from qmpsim.errors import QmpSimError

    leaves = _leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        # An interrupt can land between a task being scheduled and its first step; the
        # abandoned coroutine would complain on stderr when collected at exit.
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        return EXIT_INTERRUPTED
    if all(isinstance(leaf, BrokenPipeError) for leaf in leaves) and _stdout_gone():
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    if len(leaves) != 1:
        return None
    (leaf,) = leaves
    if isinstance(leaf, UsageError):
        print(f"{who}: error: {leaf}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(leaf, QmpSimError | OSError):
        print(f"{who}: {leaf}", file=sys.stderr)
        return EXIT_FAILURE
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone away."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a non-file, or closed
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poll.poll(0))


def _discard_stdout() -> None:
    # What is still buffered would fail again when Python flushes at exit, with a
    # complaint on stderr: send it nowhere instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# Each subcommand's module registers it with SUBCOMMANDS on import: imported in this
# order, the order `qmpsim --help` lists them in.
SUBCOMMAND_MODULES = (
    "serve",
    "demo",
    "scenarios",
    "commands",
    "check",
    "generate",
    "fleet",
    "dropin",
    "record",
)
for _module in SUBCOMMAND_MODULES:
    importlib.import_module(f"qmpsim.cli.{_module}")
