"""The values every part of the VM model speaks in: events, replies, errors, the clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import QmpSimError

Clock = Callable[[], float]
"""Seconds since the epoch, as a float (``time.time`` by default)."""


class MachineError(QmpSimError):
    """A cause the VM cannot undergo in its present state, or a VM description that is wrong."""


@dataclass(frozen=True)
class Event:
    """One event as it goes on the wire: name, optional data, timestamp."""

    name: str
    data: Mapping[str, Any] | None
    seconds: int
    microseconds: int

    def to_json(self) -> dict[str, Any]:
        """The message object, members in the order QEMU inserts them."""
        msg: dict[str, Any] = {
            "timestamp": {"seconds": self.seconds, "microseconds": self.microseconds},
            "event": self.name,
        }
        if self.data is not None:
            msg["data"] = _plain(self.data)
        return msg

    def message(self) -> Mapping[str, Any]:
        """:meth:`to_json` built once and shared (validated, then encoded): read it only."""
        cached: Mapping[str, Any] | None = self.__dict__.get("_message")
        if cached is None:
            cached = self.to_json()
            object.__setattr__(self, "_message", cached)  # a cache, not a field
        return cached

    @property
    def time(self) -> float:
        """The timestamp as float seconds."""
        return self.seconds + self.microseconds / 1_000_000


_SCALARS = frozenset((str, int, bool, float, type(None)))


def _plain(value: Any) -> Any:
    if type(value) is dict and _SCALARS.issuperset(map(type, value.values())):
        return dict(value)  # the common case, copied in C
    if isinstance(value, Mapping):
        return {k: v if type(v) in _SCALARS else _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _SCALARS else _plain(v) for v in value]
    return value


@dataclass(frozen=True)
class CommandError:
    """An error reply: QEMU's error class and human-readable text."""

    error_class: str
    desc: str


@dataclass(frozen=True)
class Outcome:
    """What a command produced: events first, then the reply; ``close`` ends the connection."""

    reply: Any | CommandError
    events: tuple[Event, ...] = ()
    close: bool = False


class UnmodelledCommand(MachineError):
    """A command neither modelled nor recorded, refused because the machine is strict."""

    def __init__(self, command: str, profile: str) -> None:
        super().__init__(
            f"{command} is neither modelled nor recorded for {profile}; its reply would be"
            " generated (strict_commands refuses that: override its reply instead)"
        )
        self.command = command


class ManualClock:
    """A deterministic clock: ``start`` plus the virtual time :meth:`advance` added."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (never backward)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back in time")
        self.now += seconds


def virtual_clock(start: float, elapsed: Callable[[], float]) -> Clock:
    """A clock reading ``start + elapsed()``; with ``trio.current_time`` under a ``MockClock``
    it gives reproducible timestamps."""
    return lambda: start + elapsed()
