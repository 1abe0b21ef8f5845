"""The exception hierarchy of qmpsim (stdlib only, importable from anywhere)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass


class QmpSimError(Exception):
    """Root of every error qmpsim raises on purpose."""


class CatalogError(QmpSimError):
    """An event, reply or command that does not conform to the active profile."""


@dataclass
class ScenarioError(QmpSimError):
    """A scenario file that cannot be loaded: where it is wrong and what was expected."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.file or "<scenario>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        at = f" (at {self.path})" if self.path else ""
        return f"{where}: {self.message}{at}"


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a mistyped ``word``, or ``""``."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
