"""The VM model: run state, devices, causal rules and what each command does.

The machine is sans-I/O and clock-driven: time comes from an injected clock and
randomness from an injected ``random.Random``.  It answers commands with an
:class:`Outcome` (the events the command caused, then the reply) and turns
*causes* (a disk error, a watchdog expiry, a VNC client arriving…) into the
conformant event sequence QEMU would emit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import DEFAULT_PROFILE, ProfileSpec, get_profile

Clock = Callable[[], float]
"""Seconds since the epoch, as a float (``time.time`` by default)."""


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
            msg["data"] = dict(self.data)
        return msg


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


# --- causes: things that happen to the VM, which the machine turns into events ---


@dataclass(frozen=True)
class DiskError:
    """A disk I/O error on ``device``; the disk's error policy decides the action."""

    device: str
    operation: str = "read"  # "read" | "write"
    nospace: bool = False


@dataclass(frozen=True)
class WatchdogExpired:
    """The watchdog timer expired; ``action`` overrides the VM's configured one."""

    action: str | None = None


@dataclass(frozen=True)
class RtcChange:
    """The guest wrote its RTC: ``offset`` seconds from host UTC."""

    offset: int


@dataclass(frozen=True)
class GuestShutdown:
    """The guest powered itself off (ACPI shutdown, halt)."""


@dataclass(frozen=True)
class GuestReset:
    """The guest rebooted itself."""


@dataclass(frozen=True)
class GuestPanic:
    """The guest kernel panicked (pvpanic)."""


@dataclass(frozen=True)
class VncConnect:
    """A VNC client called ``client`` (any stable label) opened a connection."""

    client: str


@dataclass(frozen=True)
class VncInitialize:
    """The VNC client ``client`` passed authentication; its session is active."""

    client: str


@dataclass(frozen=True)
class VncDisconnect:
    """The VNC client ``client`` went away."""

    client: str


@dataclass(frozen=True)
class SpiceConnect:
    """A SPICE channel of client ``client`` connected."""

    client: str
    channel_type: int = 1
    channel_id: int = 0


@dataclass(frozen=True)
class SpiceInitialize:
    """A SPICE channel of client ``client`` completed its handshake."""

    client: str
    channel_type: int = 1
    channel_id: int = 0


@dataclass(frozen=True)
class SpiceDisconnect:
    """A SPICE channel of client ``client`` went away."""

    client: str
    channel_type: int = 1
    channel_id: int = 0


Cause = (
    DiskError
    | WatchdogExpired
    | RtcChange
    | GuestShutdown
    | GuestReset
    | GuestPanic
    | VncConnect
    | VncInitialize
    | VncDisconnect
    | SpiceConnect
    | SpiceInitialize
    | SpiceDisconnect
)


@dataclass(frozen=True)
class VmConfig:
    """The VM description; defaults give an idle machine like ``qemu-system-x86_64 -M none``."""

    name: str | None = None
    no_shutdown: bool = False
    initial_state: str = "running"


@dataclass
class Machine:
    """One simulated VM."""

    vm: VmConfig = field(default_factory=VmConfig)
    profile: ProfileSpec = field(default_factory=lambda: get_profile(DEFAULT_PROFILE))
    clock: Clock = time.time
    status: str = "running"

    def __post_init__(self) -> None:
        self.status = self.vm.initial_state

    @property
    def running(self) -> bool:
        return self.status == "running"

    def _event(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        now = self.clock()
        seconds = int(now)
        return Event(name, data, seconds, int(round((now - seconds) * 1_000_000)) % 1_000_000)

    def cause(self, cause: Cause) -> list[Event]:
        """Apply a cause; the events it produces now, in order (throttled ones may come later)."""
        raise NotImplementedError

    def poll(self) -> list[Event]:
        """Events that became due by the clock's current time (throttled ones)."""
        return []

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to return, on the clock's scale."""
        return None

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """An explicit event, validated against the profile (``CatalogError`` otherwise)."""
        return self._event(name, data)

    def execute(self, command: str, arguments: Mapping[str, Any]) -> Outcome:
        """Run a command whose arguments the protocol has already validated."""
        handler = getattr(self, "_cmd_" + command.replace("-", "_"), None)
        if handler is None:
            return Outcome(CommandError("CommandNotFound", f"The command {command} has not been found"))
        result: Outcome = handler(arguments)
        return result

    def _cmd_query_status(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"status": self.status, "singlestep": False, "running": self.running})

    def _cmd_query_version(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome(self.profile.greeting()["QMP"]["version"])

    def _cmd_query_commands(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome([{"name": name} for name in self.profile.commands])

    def _cmd_stop(self, _args: Mapping[str, Any]) -> Outcome:
        if not self.running:
            return Outcome({})
        self.status = "paused"
        return Outcome({}, (self._event("STOP"),))

    def _cmd_cont(self, _args: Mapping[str, Any]) -> Outcome:
        if self.running:
            return Outcome({})
        self.status = "running"
        return Outcome({}, (self._event("RESUME"),))

    def _cmd_system_reset(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({}, (self._event("RESET", {"guest": False, "reason": "host-qmp-system-reset"}),))

    def _cmd_quit(self, _args: Mapping[str, Any]) -> Outcome:
        event = self._event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        return Outcome({}, (event,), close=True)
