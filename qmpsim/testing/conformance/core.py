"""The checker's core: one stream's state, its timestamps and throttling, and the
obligations rules leave (an event that must follow); the rules over each event
are the other modules' (``@_on_event``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qmpsim.qmp.profiles import ProfileSpec, validate_event
from qmpsim.vm import runstate
from qmpsim.vm.migration_states import MigrationStatus
from qmpsim.vm.runstate import RunState, Transitions

_US = 1_000_000
# QEMU times its throttle windows on the monotonic clock but stamps events with
# the wall clock; allow for the two drifting apart a little.
_THROTTLE_SLACK_US = 1_000


@dataclass(frozen=True)
class Violation:
    """One departure from the profile: where (1-based line), which rule, what happened."""

    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class _Record:
    line: int
    stream: str
    message: Any
    outgoing: bool  # from the server to the client


@dataclass
class _Obligation:
    line: int
    rule: str
    kinds: tuple[str, ...]  # any of these event names discharges it
    what: str


@dataclass
class _Consequence:
    name: str
    data: Any
    stamp: int
    claimed: bool = False


@dataclass
class _Throttled:
    line: int
    stamp: int
    sent_at_least: int


_Peer = tuple[str, str, str]  # family, host, port
_Sessions = dict[_Peer, list[bool]]  # one entry per open session: initialized yet?


# a rule: (checker, line, the event's data, its timestamp); the checker is a _Core
# of the class the method is defined on (a rule module's mixin)
_RuleFn = Callable[..., None]
_Rule = TypeVar("_Rule", bound=_RuleFn)

_EVENT_RULES: dict[str, _RuleFn] = {}
"""The checker's rule for each event that has one, by the event's name."""


def _on_event(event: str) -> Callable[[_Rule], _Rule]:
    """Mark a method of :class:`_StreamChecker` as the rule checked at each ``event``."""

    def mark(method: _Rule) -> _Rule:
        _EVENT_RULES[event] = method
        return method

    return mark


@dataclass
class _Core:
    profile: ProfileSpec
    # the run state, as QEMU's table (qmpsim.vm.runstate) moves it (None: unknown)
    status: RunState | None
    violations: list[Violation] = field(default_factory=list)
    obligations: list[_Obligation] = field(default_factory=list)
    since_watchdog: list[_Consequence] = field(default_factory=list)
    throttled: dict[str, _Throttled] = field(default_factory=dict)
    max_stamp: int | None = None
    max_stamp_line: int = 0
    floor: int | None = None  # lower bound of the wall clock when the last event was sent
    floor_line: int = 0
    shutdown_line: int | None = None  # a SHUTDOWN on a running VM, not yet followed by STOP
    vnc: _Sessions = field(default_factory=dict)
    spice: _Sessions = field(default_factory=dict)
    # (connection-id, channel-type, channel-id) -> the address of the session it is up on
    spice_channels: dict[tuple[Any, ...], _Peer] = field(default_factory=dict)
    # a virtio backend's DEVICE_DELETED: (its line, the device path whose event must follow)
    backend_gone: tuple[int, str] | None = None
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> its last status
    trays: dict[str, bool] = field(default_factory=dict)  # device -> tray open
    # whether the guest is suspended (None: unknown, the stream began half-way)
    suspended: bool | None = None

    def __post_init__(self) -> None:
        if self.status is not None:
            self.status = RunState(self.status)
            self.suspended = False
        self.runstates: Transitions = runstate.rules(self.profile)

    migration: MigrationStatus | None = None  # the last MIGRATION status (None: none seen)
    passes: int = 0  # the current migration's MIGRATION_PASS count

    # -- entry points --

    def feed(self, record: _Record) -> list[Violation]:
        self.violations = []
        message = record.message
        if not record.outgoing:
            return []
        if "event" in message:
            self._event(record.line, message)
        elif "return" in message:
            self._reply(message["return"])
        return self.violations

    def finish(self) -> list[Violation]:
        self.violations = []
        for ob in self.obligations:
            self._report(ob.line, ob.rule, f"{ob.what}, but the stream ends first")
        self.obligations = []
        self._device_follows("", {})
        return self.violations

    # -- helpers --

    def _report(self, line: int, rule: str, message: str) -> None:
        self.violations.append(Violation(line, rule, message))

    def _reply(self, value: Any) -> None:
        # a query-status reply reveals the run state
        running = value.get("running") if isinstance(value, dict) else None
        if isinstance(running, bool) and ("singlestep" in value or "status" in value):
            status = value.get("status")
            if status in runstate.RUN_STATES:
                self.status = RunState(status)
            else:  # before QEMU 1.0, only whether it runs
                self.status = RunState.RUNNING if running else RunState.PAUSED
            if "status" in value:
                self.suspended = status == RunState.SUSPENDED

    def _stopped(self) -> bool:
        """Whether the VM is known to be stopped: ``vm_stop()`` would send no STOP."""
        return self.status is not None and not self.runstates.live(self.status)

    @property
    def _modern(self) -> bool:
        return self.profile.version >= (1, 2, 0)

    # -- events --

    def _event(self, line: int, message: dict[str, Any]) -> None:
        problems = validate_event(self.profile, message)
        for problem in problems:
            self._report(line, "schema", problem)
        name = message.get("event")
        if not isinstance(name, str):
            return
        data = message.get("data")
        data = data if isinstance(data, dict) else {}
        stamp = _stamp(message.get("timestamp"))
        if stamp is not None:
            self._timestamps(line, name, stamp)
        self._discharge(name)
        self._device_follows(name, data)
        rule = _EVENT_RULES.get(name)
        if rule is not None:
            rule(self, line, data, stamp)
        if name in ("RESET", "POWERDOWN", "SHUTDOWN", "STOP") and stamp is not None:
            self.since_watchdog.append(_Consequence(name, data, stamp))

    def _timestamps(self, line: int, name: str, stamp: int) -> None:
        interval = self.profile.throttle.get(name)
        if interval is None:
            if self.max_stamp is not None and stamp < self.max_stamp:
                self._report(
                    line,
                    "timestamp-order",
                    f"{name} at {_fmt(stamp)} is earlier than the event of line "
                    f"{self.max_stamp_line} at {_fmt(self.max_stamp)}",
                )
            elif self.floor is not None and stamp < self.floor:
                self._report(
                    line,
                    "throttle",
                    f"{name} at {_fmt(stamp)} comes after the throttled event of line "
                    f"{self.floor_line}, which cannot have been sent before {_fmt(self.floor)}",
                )
            self._raise_floor(stamp, line)
        else:
            sent = stamp
            prev = self.throttled.get(name)
            if prev is not None:
                if stamp < prev.stamp:
                    self._report(
                        line,
                        "timestamp-order",
                        f"{name} at {_fmt(stamp)} is earlier than the {name} of line "
                        f"{prev.line} at {_fmt(prev.stamp)}",
                    )
                elif stamp + _THROTTLE_SLACK_US < prev.sent_at_least:
                    self._report(
                        line,
                        "throttle",
                        f"{name} at {_fmt(stamp)} was created before the {name} of line "
                        f"{prev.line} was sent (not before {_fmt(prev.sent_at_least)}), "
                        "so it should have replaced it",
                    )
                sent = max(sent, prev.sent_at_least + int(interval * _US) - _THROTTLE_SLACK_US)
            if self.floor is not None:
                sent = max(sent, self.floor)
            self.throttled[name] = _Throttled(line, stamp, sent)
            self._raise_floor(sent, line)
        if self.max_stamp is None or stamp >= self.max_stamp:
            self.max_stamp, self.max_stamp_line = stamp, line

    def _raise_floor(self, stamp: int, line: int) -> None:
        if self.floor is None or stamp > self.floor:
            self.floor, self.floor_line = stamp, line

    def _discharge(self, name: str) -> None:
        # QEMU coalesces pending stop requests: one STOP answers them all
        for ob in list(self.obligations):
            if name in ob.kinds:
                self.obligations.remove(ob)
                for c in self.since_watchdog:
                    if not c.claimed and c.name == name:
                        c.claimed = True
                        break
                if name != "STOP":
                    return

    def _owe(self, line: int, rule: str, kinds: tuple[str, ...], what: str) -> None:
        self.obligations.append(_Obligation(line, rule, kinds, what))

    def _owes_stop(self) -> bool:
        return any("STOP" in ob.kinds for ob in self.obligations)

    def _device_follows(self, name: str, data: Mapping[str, Any]) -> None:
        """After a virtio backend left, the next event is its device leaving."""
        if self.backend_gone is None:
            return
        line, path = self.backend_gone
        self.backend_gone = None
        if name != "DEVICE_DELETED" or data.get("path") != path:
            after = f"{name} comes" if name else "the stream ends"
            self._report(
                line, "device-deleted", f"the virtio backend of {path} left, but {after} first"
            )


def _stamp(value: Any) -> int | None:
    if not isinstance(value, dict):
        return None
    seconds, micro = value.get("seconds"), value.get("microseconds")
    if type(seconds) is not int or type(micro) is not int:
        return None
    return seconds * _US + micro


def _fmt(stamp: int) -> str:
    return f"{stamp // _US}.{stamp % _US:06d}"
