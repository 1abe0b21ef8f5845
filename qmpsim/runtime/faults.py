"""Fault injection: what a test makes the simulator do that QEMU would not on its own.

A :class:`Faults` holds what is armed for a simulator: a write split into small
pieces or coalesced with the next one, bytes written ahead of the next greeting,
replies overridden or delayed per command.  The simulator's public methods
(``split_next``, ``coalesce_next``, ``before_greeting``, ``override_reply``,
``delay_reply``) arm them; its connections take each when it applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = ["Delay", "Faults", "Override", "WriteFault"]


@dataclass(frozen=True, slots=True)
class WriteFault:
    """The next write goes out in pieces of ``size`` bytes (``split``), or together
    with the message after it (``coalesce``)."""

    kind: Literal["split", "coalesce"]
    size: int = 1


@dataclass(slots=True)
class Override:
    """A reply given instead of the machine's (a value, a ``CommandError``, an ``Outcome``)."""

    reply: Any
    once: bool


@dataclass(slots=True)
class Delay:
    """Seconds a command waits before it runs."""

    seconds: float
    once: bool


_Entry = TypeVar("_Entry", Override, Delay)


@dataclass(slots=True)
class Faults:
    """The faults armed for one simulator, until they are taken or cleared."""

    write: WriteFault | None = None
    """The next write's fault (to whichever client)."""
    before_greeting: list[bytes] = field(default_factory=list)
    """Bytes for the next client that connects, ahead of its greeting."""
    overrides: dict[str, list[Override]] = field(default_factory=dict)
    delays: dict[str, list[Delay]] = field(default_factory=dict)

    def clear(self) -> None:
        """Disarm everything."""
        self.write = None
        self.before_greeting.clear()
        self.overrides.clear()
        self.delays.clear()

    def split_next(self, size: int) -> None:
        """Arm: the next message goes out in writes of ``size`` bytes."""
        if size < 1:
            raise ValueError("split_next: size must be at least 1")
        self.write = WriteFault("split", size)

    def coalesce_next(self) -> None:
        """Arm: the next message goes out in one write with the message after it."""
        self.write = WriteFault("coalesce")

    def delay(self, command: str, seconds: float, once: bool) -> None:
        """Arm: ``command`` waits ``seconds`` before it runs."""
        if seconds < 0:
            raise ValueError("delay_reply: seconds must not be negative")
        self.delays.setdefault(command, []).append(Delay(seconds, once))

    def override(self, command: str, reply: Any, once: bool) -> None:
        """Arm: ``command`` is answered with ``reply`` instead of running."""
        self.overrides.setdefault(command, []).append(Override(reply, once))

    def take_write(self) -> WriteFault | None:
        """The next write's fault, if one is armed (it applies once)."""
        fault, self.write = self.write, None
        return fault

    def take_greeting_prefix(self) -> list[bytes]:
        """What goes ahead of a new client's greeting (once)."""
        early, self.before_greeting = self.before_greeting, []
        return early

    def take_delay(self, command: str) -> Delay | None:
        """The delay for ``command`` now, if one is armed (a ``once`` one is used up)."""
        return _take(self.delays, command)

    def take_override(self, command: str) -> Override | None:
        """The override for ``command`` now, if one is armed (a ``once`` one is used up)."""
        return _take(self.overrides, command)


def _take(table: Mapping[str, list[_Entry]], command: str) -> _Entry | None:
    entries = table.get(command)
    if not entries:
        return None
    first = entries[0]
    if first.once:
        entries.pop(0)
    return first
