"""``qmpsim list``, ``validate``, ``show`` and ``schema``: the scenario language's commands."""

from __future__ import annotations

import argparse
import json
import sys

from qmpsim.cli.common import (
    EXIT_OK,
    subcommand,
)

# --- qmpsim list / validate / show / schema (the scenario language) ---------------------------


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--paths", action="store_true", help="each scenario's file instead of its description"
    )


@subcommand("list", help="list the shipped scenarios", arguments=_list_arguments)
def list_scenarios(args: argparse.Namespace) -> int:
    """``qmpsim list``."""
    from qmpsim.scenario.library import list_shipped

    print(list_shipped(paths=args.paths), end="")
    return EXIT_OK


def _files_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="scenario files")


@subcommand(
    "validate",
    help="check scenario files",
    description="Check scenario files: one line per file, FILE:LINE:COLUMN: message for "
    "mistakes; exit status 1 when any file is wrong.",
    arguments=_files_arguments,
)
def validate(args: argparse.Namespace) -> int:
    """``qmpsim validate``."""
    from qmpsim.scenario.library import validate_files

    return validate_files(args.files, sys.stdout)


def _scenario_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", metavar="SCENARIO", help="a scenario file, or the name of a shipped one"
    )


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _scenario_argument(parser)
    parser.add_argument(
        "--yaml", action="store_true", help="print the scenario as YAML (includes inlined)"
    )


@subcommand(
    "show",
    help="print a scenario's timeline and the events it produces",
    arguments=_show_arguments,
)
def show(args: argparse.Namespace) -> int:
    """``qmpsim show``."""
    from qmpsim.scenario.dryrun import show_timeline
    from qmpsim.scenario.library import load_named

    scenario = load_named(args.scenario)
    print(scenario.to_yaml() if args.yaml else show_timeline(scenario), end="")
    return EXIT_OK


@subcommand("schema", help="print the JSON Schema of scenario files", arguments=lambda parser: None)
def schema(args: argparse.Namespace) -> int:
    """``qmpsim schema``."""
    from qmpsim.scenario.json_schema import scenario_schema

    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


# --- qmpsim commands (what a profile has, and who answers) -----------------------------------
