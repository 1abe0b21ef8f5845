"""The steps of a scenario's timeline: frozen values, each knowing where it was written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from qmpsim.vm import machine as m

__all__ = [
    "CauseStep",
    "EmitStep",
    "FaultStep",
    "IncludeStep",
    "OnStep",
    "RepeatStep",
    "ReplyStep",
    "Step",
    "UntilStep",
    "WaitStep",
    "Where",
]


@dataclass(frozen=True)
class Where:
    """Where a step was written: file (``None`` for a string), 1-based line and column."""

    file: str | None
    line: int
    column: int = 1


@dataclass(frozen=True)
class CauseStep:
    """Make something happen the way QEMU would; the machine emits the events."""

    kind: str
    cause: m.Cause
    where: Where


@dataclass(frozen=True)
class EmitStep:
    """Emit one event with explicit data (validated) and/or data filled by Faker."""

    event: str
    data: Mapping[str, Any] | None
    fake: bool
    where: Where


@dataclass(frozen=True)
class WaitStep:
    """Let ``seconds`` of (scaled, possibly virtual) time pass."""

    seconds: float
    where: Where


@dataclass(frozen=True)
class UntilStep:
    """Wait until a client sends ``command`` (with ``arguments``, as
    :func:`~qmpsim.qmp.transcript.arguments_match` matches them)."""

    command: str
    arguments: Mapping[str, Any] | None
    timeout: float | None
    where: Where


@dataclass(frozen=True)
class ReplyStep:
    """Override the reply to ``command``: a canned ``result`` or an ``error``."""

    command: str
    result: Any
    error_class: str | None
    error_desc: str | None
    times: int | None  # None: always
    where: Where


@dataclass(frozen=True)
class OnStep:
    """Whenever a client sends ``command`` (matching ``arguments``, as ``until`` does), run
    ``steps``."""

    command: str
    arguments: Mapping[str, Any] | None
    steps: tuple[Step, ...]
    times: int | None  # None: always
    where: Where


@dataclass(frozen=True)
class RepeatStep:
    """Run ``steps`` ``count`` times (``None``: forever)."""

    count: int | None
    steps: tuple[Step, ...]
    where: Where


@dataclass(frozen=True)
class IncludeStep:
    """The timeline of another scenario file, run in place."""

    path: str
    steps: tuple[Step, ...]
    where: Where


@dataclass(frozen=True)
class FaultStep:
    """Misbehave on the wire to test a client's robustness."""

    kind: str
    text: str | None
    command: str | None
    chunk: int
    delay: float
    where: Where


Step: TypeAlias = (
    CauseStep | EmitStep | WaitStep | UntilStep | ReplyStep | OnStep | RepeatStep | IncludeStep
) | FaultStep
