"""The conformance checker: does a recorded QMP event stream obey a profile?

It reads JSON lines (raw server messages, transcript lines as
``qmpsim.qmp.transcript`` exports them, bare events, or the ``<--``/``-->`` debug log
of ``qemu.qmp``) and reports every violation of the profile with the line it was
found on and the name of the rule: schema, run-state changes, the causal rules
of the event specification and of QEMU, throttling and timestamp order.

The rules are those QEMU itself obeys, so a stream recorded from a real QEMU
passes.  Where the VM model states a rule as data, the checker asks it rather
than restating it: the run-state moves (:mod:`qmpsim.vm.runstate`, per QEMU
version), a job's moves (:data:`qmpsim.vm.jobs.JOB_MOVES`), a migration's
(:mod:`qmpsim.vm.migration_states`) and what each watchdog action leads to
(:data:`qmpsim.vm.watchdog.FOLLOWS`).  Two QEMU facts shape the rest:

* A throttled event (``RTC_CHANGE``, ``WATCHDOG`` in QEMU 7.2) that arrives less
  than a second after the previous one of its kind is held back and sent when
  the second is over, *with the timestamp it was created with*.  It can therefore
  appear after events with later timestamps, and after its own consequences
  (a delayed ``WATCHDOG`` of action ``reset`` after its ``RESET``).
* The sending times of two consecutive events of one throttled kind are at least
  the interval apart; the checker derives from the timestamps a lower bound of
  the time each event was sent and flags streams for which no sending schedule
  exists.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from qmpsim.qmp.profiles import DEFAULT_PROFILE, ProfileSpec, get_profile, validate_event
from qmpsim.vm import runstate
from qmpsim.vm.jobs import JOB_MOVES
from qmpsim.vm.migration_states import MIGRATING, MIGRATION_MOVES
from qmpsim.vm.runstate import RunState, Transitions
from qmpsim.vm.watchdog import FOLLOWS, WATCHDOG_ACTIONS, WatchdogAction

RULES: Mapping[str, str] = {
    "json": "every line holds a JSON value (or belongs to a qemu.qmp log record)",
    "message": "every JSON value is a QMP message: greeting, reply, event, command "
    "or transcript record",
    "schema": "every event validates against the profile's schema",
    "timestamp-order": "timestamps never go backwards (only a throttled event may carry an "
    "older timestamp than events sent before it)",
    "throttle": "throttled events of one kind are sent at most once per interval",
    "stop-while-stopped": "STOP only while the VM runs (from QEMU 9.0: or is suspended)",
    "resume-while-running": "RESUME only while the VM is stopped",
    "resume-needs-reset": "RESUME only from a run state QEMU's table lets the VM run from: "
    "after a SHUTDOWN that stopped the VM, a RESET first",
    "block-io-error-stop": "BLOCK_IO_ERROR with action 'stop' on a running VM is followed by STOP",
    "watchdog-action": "WATCHDOG reset/pause/shutdown is followed by RESET/STOP/POWERDOWN "
    "(qemu-0.14: SHUTDOWN)",
    "guest-panicked": "GUEST_PANICKED pause/poweroff stops the VM (and poweroff shuts it down)",
    "shutdown-stop": "after SHUTDOWN the VM either quits (end of stream) or stops (-no-shutdown)",
    "vnc-session": "VNC_INITIALIZED/VNC_DISCONNECTED only for a connected VNC client, "
    "VNC_CONNECTED only for a new one",
    "spice-session": "SPICE_INITIALIZED/SPICE_DISCONNECTED only for a connected SPICE channel, "
    "SPICE_CONNECTED only for a new one; a channel (connection, type, id) is up once at a time",
    "device-deleted": "DEVICE_DELETED of a device with an id names its path "
    "/machine/peripheral/ID; a virtio backend's DEVICE_DELETED comes right before its device's",
    "job-status": "a job's JOB_STATUS_CHANGE follows QEMU's job state machine: created first, "
    "then only the transitions job.c allows, nothing after null but a new job",
    "job-events": "BLOCK_JOB_READY right after the job turned ready, BLOCK_JOB_PENDING while "
    "it is pending, BLOCK_JOB_COMPLETED/CANCELLED while it is pending or aborting",
    "tray": "DEVICE_TRAY_MOVED of a device says the tray moved: open, closed, open…",
    "suspend": "WAKEUP only for a suspended VM (a SUSPEND with no RESET, SHUTDOWN or WAKEUP "
    "since), and no SUSPEND while it is suspended",
    "balloon-change": "BALLOON_CHANGE reports a positive whole number of 4 KiB pages",
    "migration-status": "MIGRATION follows QEMU's migration state machine: setup first, "
    "then only the transitions migration.c makes, a new migration only after one ended",
    "migration-pass": "MIGRATION_PASS counts a migration's passes 1, 2, 3… while it runs",
    "migration-stop": "a source's MIGRATION completed comes once the VM stopped (STOP)",
}

_US = 1_000_000
# QEMU times its throttle windows on the monotonic clock but stamps events with
# the wall clock; allow for the two drifting apart a little.
_THROTTLE_SLACK_US = 1_000
_LOG_RECORD = re.compile(r"(<--|-->) ?(?=[{\[])")


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


def check(
    lines: Iterable[str],
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    *,
    initial_status: str | None = None,
) -> list[Violation]:
    """Every violation of ``profile`` in a JSON-lines QMP log, ordered by line.

    ``initial_status`` is the VM's run state before the first line (``"running"``
    or ``"paused"``); by default it is unknown until a STOP, a RESUME or a
    ``query-status`` reply reveals it.  Transcript lines are checked per client.
    """
    spec = get_profile(profile) if isinstance(profile, str) else profile
    if initial_status not in (None, "running", "paused"):
        raise ValueError(
            f"initial_status must be 'running', 'paused' or None, not {initial_status!r}"
        )
    violations: list[Violation] = []
    checkers: dict[str, _StreamChecker] = {}
    for item in _read(lines):
        if isinstance(item, Violation):
            violations.append(item)
            continue
        checker = checkers.get(item.stream)
        if checker is None:
            start = None if initial_status is None else RunState(initial_status)
            checker = checkers[item.stream] = _StreamChecker(spec, start)
        violations += checker.feed(item)
    for checker in checkers.values():
        violations += checker.finish()
    violations.sort(key=lambda v: v.line)
    return violations


def check_events(
    events: Iterable[Mapping[str, Any]],
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    *,
    initial_status: str | None = None,
) -> list[Violation]:
    """:func:`check` over event messages already decoded; ``line`` is the 1-based index."""
    return check((json.dumps(dict(e)) for e in events), profile, initial_status=initial_status)


# --- reading --------------------------------------------------------------------


def _read(lines: Iterable[str]) -> Iterator[_Record | Violation]:
    decoder = json.JSONDecoder()
    lines = list(lines)
    # in a qemu.qmp debug log, lines that carry no message are the log's own
    log = any(_LOG_RECORD.search(text) for text in lines)
    i = 0
    while i < len(lines):
        number, text = i + 1, lines[i]
        i += 1
        stripped = text.strip()
        if not stripped:
            continue
        try:
            value = json.loads(stripped)
        except ValueError:
            pass
        else:
            yield from _classify(number, value)
            continue
        match = _LOG_RECORD.search(text)
        if match is None:
            if not log:
                yield Violation(number, "json", f"not JSON: {_clip(stripped)}")
            continue
        outgoing = match.group(1) == "<--"
        buffer = text[match.end() :]
        while True:
            try:
                value, _ = decoder.raw_decode(buffer.strip())
            except ValueError:
                # the record goes on over the next lines, until the next record
                if i == len(lines) or _LOG_RECORD.search(lines[i]):
                    yield Violation(number, "json", "log record ends before its JSON value")
                    break
                buffer += "\n" + lines[i]
                i += 1
                continue
            yield from _classify(number, value, default_outgoing=outgoing, stream="log")
            break


def _classify(
    line: int, value: Any, *, default_outgoing: bool = True, stream: str = ""
) -> Iterator[_Record | Violation]:
    if not isinstance(value, dict):
        yield Violation(line, "message", f"a QMP message is a JSON object, not {_clip(value)}")
        return
    if "dir" in value and "json" in value:
        direction = value.get("dir")
        messages = value.get("json")
        if direction not in ("in", "out") or not isinstance(messages, list):
            yield Violation(line, "message", "malformed transcript record")
            return
        client = value.get("client")
        for message in messages:
            if direction == "out":
                yield from _classify(line, message, stream=f"client {client}")
        return
    if "direction" in value and "message" in value:
        direction = str(value["direction"]).lower()
        outgoing = direction in ("out", "recv", "received", "server", "<--", "s2c")
        yield from _classify_message(line, value["message"], outgoing, stream)
        return
    yield from _classify_message(line, value, default_outgoing, stream)


def _classify_message(
    line: int, message: Any, outgoing: bool, stream: str
) -> Iterator[_Record | Violation]:
    if not isinstance(message, dict):
        yield Violation(line, "message", f"a QMP message is a JSON object, not {_clip(message)}")
        return
    known = ("event", "return", "error", "QMP", "execute", "exec-oob")
    if not any(key in message for key in known):
        yield Violation(
            line, "message", f"neither an event, a reply nor a command: {_clip(message)}"
        )
        return
    if "execute" in message or "exec-oob" in message:
        outgoing = False
    yield _Record(line, stream, message, outgoing)


def _clip(value: Any, width: int = 80) -> str:
    """``value`` as quoted in a message: :func:`_printable`, at most ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value)
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = _shown(char)
        if used + len(piece) > width:
            while pieces and used + 3 > width:
                used -= len(pieces.pop())
            return "".join(pieces) + "..."
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


def _printable(text: str) -> str:
    """``text`` on one line, with what a terminal would act on escaped.

    Control characters, line separators and escape sequences are shown as in
    Python (``\\x1b``, ``\\u2028``): a log quoted back cannot garble a terminal.
    """
    return text if text.isprintable() else "".join(map(_shown, text))


def _shown(char: str) -> str:
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")


# --- checking -------------------------------------------------------------------


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


# where a reset leaves the run state alone (main_loop_should_exit())
_RESET_KEEPS = (RunState.RUNNING, RunState.INMIGRATE, RunState.FINISH_MIGRATE)


def _watchdog_follows(action: Any, *, modern: bool) -> tuple[str, ...]:
    """The events one of which must follow a WATCHDOG of ``action``: the one its action
    leads to (:data:`qmpsim.vm.watchdog.FOLLOWS`), or what QEMU may send instead."""
    follows = FOLLOWS.get(WatchdogAction(action)) if action in WATCHDOG_ACTIONS else None
    if follows == "RESET" and modern:
        return ("RESET", "SHUTDOWN")  # -no-reboot turns the reset into a shutdown
    if follows == "POWERDOWN" and not modern:
        # before QEMU 1.2 a power button press had no event: the guest's SHUTDOWN follows
        return ("SHUTDOWN", "POWERDOWN")
    # "poweroff" exits QEMU at once, like `quit`, with no further event
    return () if follows is None else (follows,)


_RuleFn = Callable[["_StreamChecker", int, Mapping[str, Any], "int | None"], None]
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
class _StreamChecker:
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

    migration: str | None = None  # the last MIGRATION status (None: none seen)
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

    @_on_event("DEVICE_DELETED")
    def _on_device_deleted(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        path, device = data.get("path"), data.get("device")
        if isinstance(device, str) and path != f"/machine/peripheral/{device}":
            self._report(
                line,
                "device-deleted",
                f"DEVICE_DELETED of device {device!r} names path {path!r},"
                f" not /machine/peripheral/{device}",
            )
        if device is None and isinstance(path, str) and path.endswith("/virtio-backend"):
            self.backend_gone = (line, path.removesuffix("/virtio-backend"))

    # -- block jobs and trays --

    @_on_event("JOB_STATUS_CHANGE")
    def _on_job_status_change(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        job, status = data.get("id"), data.get("status")
        if not isinstance(job, str) or not isinstance(status, str):
            return
        # a job met in the middle of its life starts wherever the stream finds it
        before = self.jobs.get(job, "undefined" if status == "created" else None)
        if before is not None and status not in JOB_MOVES.get(before, frozenset()):
            self._report(line, "job-status", f"job {job!r} went from {before} to {status}")
        self.jobs[job] = status

    def _job_event(self, line: int, job: Any, event: str, states: tuple[str, ...]) -> None:
        status = self.jobs.get(job) if isinstance(job, str) else None
        if status is not None and status not in states:
            self._report(
                line,
                "job-events",
                f"{event} for job {job!r} while it is {status}, not " + " or ".join(states),
            )

    @_on_event("BLOCK_JOB_READY")
    def _on_block_job_ready(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._job_event(line, data.get("device"), "BLOCK_JOB_READY", ("ready",))

    @_on_event("BLOCK_JOB_PENDING")
    def _on_block_job_pending(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._job_event(line, data.get("id"), "BLOCK_JOB_PENDING", ("pending",))

    @_on_event("BLOCK_JOB_COMPLETED")
    def _on_block_job_completed(
        self, line: int, data: Mapping[str, Any], _stamp: int | None
    ) -> None:
        self._job_event(line, data.get("device"), "BLOCK_JOB_COMPLETED", ("pending", "aborting"))

    @_on_event("BLOCK_JOB_CANCELLED")
    def _on_block_job_cancelled(
        self, line: int, data: Mapping[str, Any], _stamp: int | None
    ) -> None:
        self._job_event(line, data.get("device"), "BLOCK_JOB_CANCELLED", ("pending", "aborting"))

    @_on_event("DEVICE_TRAY_MOVED")
    def _on_device_tray_moved(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        device = f"{data.get('device')}/{data.get('id')}"
        open_ = data.get("tray-open")
        if self.trays.get(device) == open_:
            where = "open" if open_ else "closed"
            self._report(line, "tray", f"the tray of {device} moved to {where}, where it was")
        if isinstance(open_, bool):
            self.trays[device] = open_

    # -- migration --

    @_on_event("MIGRATION")
    def _on_migration(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        status = data.get("status")
        if not isinstance(status, str):
            return
        before = self.migration
        if before == "postcopy-paused" and status == "setup":
            return  # migrate-recover before 9.1 announces a setup its state never enters
        # a migration met in the middle of its life starts wherever the stream finds it
        if before is not None and status not in MIGRATION_MOVES.get(before, frozenset()):
            self._report(line, "migration-status", f"migration went from {before} to {status}")
        if status == "setup" and before != "setup":
            self.passes = 0
        if status == "completed" and self.passes and self.status == RunState.RUNNING:
            self._report(line, "migration-stop", "the migration completed while the VM runs")
        self.migration = status

    @_on_event("MIGRATION_PASS")
    def _on_migration_pass(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        count = data.get("pass")
        if self.migration is not None and self.migration not in MIGRATING:
            self._report(line, "migration-pass", f"a pass while the migration is {self.migration}")
        elif isinstance(count, int) and self.migration is not None and count != self.passes + 1:
            self._report(line, "migration-pass", f"pass {count} after pass {self.passes}")
        if isinstance(count, int):
            self.passes = count

    @_on_event("STOP")
    def _on_stop(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        if self._stopped():
            self._report(line, "stop-while-stopped", "STOP while the VM is already stopped")
        # Which stopped state (paused, io-error, watchdog…) changes nothing the table says
        # of STOP, RESUME and RESET; shutdown does: only a reset leaves it.
        state = RunState.PAUSED if self.shutdown_line is None else RunState.SHUTDOWN
        self.shutdown_line = None
        self.status = state

    @_on_event("RESUME")
    def _on_resume(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        # from QEMU 9.0 a VM stopped while suspended resumes to suspended
        back = self.suspended and self.runstates.allows(RunState.PAUSED, RunState.SUSPENDED)
        target = RunState.SUSPENDED if back else RunState.RUNNING
        owed = [ob for ob in self.obligations if "STOP" in ob.kinds]
        if owed:
            self._report(
                line, owed[0].rule, f"RESUME before the STOP due since line {owed[0].line}"
            )
            self.obligations = [ob for ob in self.obligations if ob not in owed]
        elif self.status in (RunState.RUNNING, RunState.SUSPENDED):
            # cont leaves a suspended VM to system_wakeup: RESUME comes from a stopped one
            self._report(line, "resume-while-running", "RESUME while the VM is already running")
        elif self.status is not None and not self.runstates.allows(self.status, target):
            self._report(
                line,
                "resume-needs-reset",
                f"RESUME of a VM in {self.status}, which only a RESET leaves"
                + (" (a SHUTDOWN stopped it)" if self.status == RunState.SHUTDOWN else ""),
            )
        self._after_shutdown(line, "RESUME")
        self.status = target

    @_on_event("RESET")
    def _on_reset(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        self._after_shutdown(line, "RESET")
        # the main loop puts a VM that does not run in prelaunch after a reset (a
        # suspended one included, without a STOP)
        if self.status not in (None, *_RESET_KEEPS):
            self.status = RunState.PRELAUNCH
        self.suspended = False

    @_on_event("SUSPEND")
    def _on_suspend(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        if self.suspended:
            self._report(line, "suspend", "SUSPEND while the VM is already suspended")
        self.suspended = True
        if self.status == RunState.RUNNING:
            self.status = RunState.SUSPENDED

    @_on_event("WAKEUP")
    def _on_wakeup(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        if self.suspended is False:
            self._report(line, "suspend", "WAKEUP of a VM that is not suspended")
        self.suspended = False
        if self.status == RunState.SUSPENDED:
            self.status = RunState.RUNNING

    @_on_event("BALLOON_CHANGE")
    def _on_balloon_change(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        actual = data.get("actual")
        if isinstance(actual, int) and (actual <= 0 or actual % 4096):
            self._report(
                line, "balloon-change", f"BALLOON_CHANGE actual {actual} is not whole 4 KiB pages"
            )

    @_on_event("POWERDOWN")
    def _on_powerdown(self, line: int, _data: Mapping[str, Any], _stamp: int | None) -> None:
        self._after_shutdown(line, "POWERDOWN")

    @_on_event("SHUTDOWN")
    def _on_shutdown(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._after_shutdown(line, "SHUTDOWN")
        self.suspended = False
        # `quit` and host signals end the process whatever -no-shutdown says
        if not self._stopped() and data.get("reason") not in ("host-qmp-quit", "host-signal"):
            self.shutdown_line = line

    def _after_shutdown(self, line: int, name: str) -> None:
        if self.shutdown_line is not None:
            self._report(
                line,
                "shutdown-stop",
                f"{name} after the SHUTDOWN of line {self.shutdown_line}: the VM should have "
                "quit, or stopped first (-no-shutdown)",
            )
            self.shutdown_line = None

    @_on_event("BLOCK_IO_ERROR")
    def _on_block_io_error(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        if data.get("action") == "stop" and not self._stopped() and not self._owes_stop():
            self._owe(
                line,
                "block-io-error-stop",
                ("STOP",),
                "BLOCK_IO_ERROR with action 'stop' on a running VM must be followed by STOP",
            )

    @_on_event("WATCHDOG")
    def _on_watchdog(self, line: int, data: Mapping[str, Any], stamp: int | None) -> None:
        action = data.get("action")
        kinds = _watchdog_follows(action, modern=self._modern)
        earlier, self.since_watchdog = self.since_watchdog, []
        if not kinds or (kinds == ("STOP",) and self._stopped()):
            return
        # a held-back WATCHDOG comes after its own consequence
        for c in earlier:
            if not c.claimed and c.name in kinds and stamp is not None and c.stamp >= stamp:
                c.claimed = True
                return
        self._owe(
            line,
            "watchdog-action",
            kinds,
            f"WATCHDOG with action {action!r} must be followed by {' or '.join(kinds)}",
        )

    @_on_event("GUEST_PANICKED")
    def _on_guest_panicked(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        action = data.get("action")
        if action in ("pause", "poweroff") and not self._stopped():
            self._owe(
                line, "guest-panicked", ("STOP",), f"GUEST_PANICKED {action} must stop the VM"
            )
        if action == "poweroff":
            self._owe(
                line, "guest-panicked", ("SHUTDOWN",), "GUEST_PANICKED poweroff must shut down"
            )

    # -- remote displays --

    @_on_event("VNC_CONNECTED")
    def _on_vnc_connected(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._connected(line, self.vnc, "VNC", _peer(data, "service"))

    @_on_event("VNC_INITIALIZED")
    def _on_vnc_initialized(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._initialized(line, self.vnc, "VNC", _peer(data, "service"))

    @_on_event("VNC_DISCONNECTED")
    def _on_vnc_disconnected(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._disconnected(line, self.vnc, "VNC", _peer(data, "service"))

    @_on_event("SPICE_CONNECTED")
    def _on_spice_connected(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._connected(line, self.spice, "SPICE", _peer(data, "port"))

    @_on_event("SPICE_INITIALIZED")
    def _on_spice_initialized(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        key = _peer(data, "port")
        client = data.get("client")
        if isinstance(client, dict):
            channel = tuple(client.get(k) for k in ("connection-id", "channel-type", "channel-id"))
            holder = self.spice_channels.get(channel)
            if holder is not None and holder != key and holder in self.spice:
                self._report(
                    line,
                    "spice-session",
                    f"SPICE channel {channel[1]}/{channel[2]} of connection {channel[0]} is "
                    f"already up on {_who(holder)}",
                )
            self.spice_channels[channel] = key
        self._initialized(line, self.spice, "SPICE", key)

    @_on_event("SPICE_DISCONNECTED")
    def _on_spice_disconnected(
        self, line: int, data: Mapping[str, Any], _stamp: int | None
    ) -> None:
        self._disconnected(line, self.spice, "SPICE", _peer(data, "port"))

    # Sessions are keyed by the client's address; clients on a Unix socket all
    # share one empty address, so each key holds a list of sessions.

    def _connected(self, line: int, table: _Sessions, kind: str, key: _Peer) -> None:
        sessions = table.setdefault(key, [])
        if sessions and _is_inet(key):
            self._report(line, _rule(kind), f"{kind} client {_who(key)} is already connected")
        sessions.append(False)

    def _initialized(self, line: int, table: _Sessions, kind: str, key: _Peer) -> None:
        sessions = table.get(key)
        if not sessions:
            self._report(
                line, _rule(kind), f"{kind}_INITIALIZED for {_who(key)}, which is not connected"
            )
            table[key] = [True]
        elif all(sessions):
            self._report(line, _rule(kind), f"{kind} client {_who(key)} is already initialized")
        else:
            sessions[sessions.index(False)] = True

    def _disconnected(self, line: int, table: _Sessions, kind: str, key: _Peer) -> None:
        sessions = table.get(key)
        if not sessions:
            self._report(
                line, _rule(kind), f"{kind}_DISCONNECTED for {_who(key)}, which is not connected"
            )
            return
        sessions.pop()
        if not sessions:
            del table[key]


_Peer = tuple[str, str, str]  # family, host, port
_Sessions = dict[_Peer, list[bool]]  # one entry per open session: initialized yet?


def _rule(kind: str) -> str:
    return f"{kind.lower()}-session"


def _is_inet(key: _Peer) -> bool:
    return key[0] in ("ipv4", "ipv6")


def _stamp(value: Any) -> int | None:
    if not isinstance(value, dict):
        return None
    seconds, micro = value.get("seconds"), value.get("microseconds")
    if type(seconds) is not int or type(micro) is not int:
        return None
    return seconds * _US + micro


def _fmt(stamp: int) -> str:
    return f"{stamp // _US}.{stamp % _US:06d}"


def _peer(data: Mapping[str, Any], port_key: str) -> _Peer:
    client = data.get("client")
    if not isinstance(client, dict):
        return ("?", "?", "?")
    return (
        str(client.get("family", "?")),
        str(client.get("host", "?")),
        str(client.get(port_key, "?")),
    )


def _who(key: _Peer) -> str:
    family, host, port = key
    if family == "unix":
        return "on a Unix socket"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_files(
    paths: Sequence[str],
    profile: ProfileSpec | str,
    out: TextIO,
    *,
    initial_status: str | None = None,
) -> int:
    """Check each file (``-``: standard input) and print ``FILE:LINE: rule: message`` lines.

    Returns the exit status: 0 when every file conforms, 1 otherwise.
    """
    spec = get_profile(profile) if isinstance(profile, str) else profile
    failed = 0
    for path in paths:
        try:
            if path == "-":
                if isinstance(sys.stdin, io.TextIOWrapper):
                    # as for files: a stray byte is a line that is not JSON, not a crash
                    sys.stdin.reconfigure(encoding="utf-8", errors="replace")
                violations = check(sys.stdin, spec, initial_status=initial_status)
            else:
                with open(path, encoding="utf-8", errors="replace") as lines:
                    violations = check(lines, spec, initial_status=initial_status)
        except OSError as exc:
            failed += 1
            print(f"{path}: cannot read: {exc.strerror or exc}", file=out)
            continue
        for v in violations:
            # a message may name what the log holds (a client's host, an action)
            print(f"{path}:{v.line}: {v.rule}: {_printable(v.message)}", file=out)
        if violations:
            failed += 1
            print(f"{path}: {len(violations)} violation(s) of {spec.name}", file=out)
        else:
            print(f"{path}: conforms to {spec.name}", file=out)
    return 1 if failed else 0
