"""The shipped scenario library and the helpers the command line uses to find, list and
validate scenario files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from qmpsim.errors import ScenarioError, suggest
from qmpsim.scenario.loader import load_scenario
from qmpsim.scenario.model import Scenario

if TYPE_CHECKING:
    pass


def _shipped_dir() -> Path:
    # Installed from a wheel the scenarios sit inside the package; in a source
    # tree (and an editable install) they are the top-level scenarios/ folder.
    here = Path(__file__).resolve().parent.parent
    installed = here / "scenarios"
    return installed if installed.is_dir() else here.parent / "scenarios"


SHIPPED_DIR = _shipped_dir()
"""Where the shipped scenario library lives."""


def shipped_scenarios() -> list[Path]:
    """The scenario files shipped with qmpsim, sorted by name."""
    return sorted(SHIPPED_DIR.glob("*.yaml"))


# --- what the command line prints ----------------------------------------------------------


def validate_files(paths: Sequence[str], out: TextIO) -> int:
    """Check scenario files: one line each; the exit status (0: all valid, 1: some are not)."""
    failures = 0
    for path in paths:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            failures += 1
            print(exc, file=out)
        else:
            print(f"{path}: ok ({scenario.name}, {len(scenario.steps)} steps)", file=out)
    return 1 if failures else 0


def list_shipped(*, paths: bool = False) -> str:
    """The shipped scenarios, one line each: name and description (``paths``: its file)."""
    rows = []
    for path in shipped_scenarios():
        if paths:
            rows.append((path.stem, str(path)))
            continue
        try:
            rows.append((path.stem, load_scenario(path).description))
        except ScenarioError as exc:
            rows.append((path.stem, f"(broken: {exc})"))
    width = max((len(name) for name, _ in rows), default=0)
    return "".join(f"{name:<{width}}  {text}\n" for name, text in rows)


def load_named(name: str) -> Scenario:
    """The scenario a command line names: a file, or a shipped scenario (did-you-mean if not)."""
    path = resolve(name)
    if not path.exists() and "/" not in name and not name.endswith((".yaml", ".yml")):
        raise unknown_scenario(name)
    return load_scenario(path)


def unknown_scenario(name: str) -> ScenarioError:
    """The error for a name that is neither a file nor a shipped scenario."""
    known = [p.stem for p in shipped_scenarios()]
    hint = suggest(name, known)
    return ScenarioError(
        f"no such file or shipped scenario{hint} (shipped: {', '.join(known)})", name
    )


def resolve(name: str) -> Path:
    """A scenario argument: a file path, or the name of a shipped scenario."""
    path = Path(name)
    shipped = SHIPPED_DIR / f"{name}.yaml"
    if not path.exists() and "/" not in name and shipped.exists():
        return shipped
    return path
