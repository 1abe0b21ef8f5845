"""The conformance checker: does a recorded QMP event stream obey a profile?

It reads JSON lines (raw server messages, transcript lines as
``qmpsim.qmp.transcript`` exports them, bare events, or the ``<--``/``-->`` debug log
of ``qemu.qmp``) and reports every violation of the profile with the line it was
found on and the name of the rule: schema, run-state changes, the causal rules
of the event specification and of QEMU, throttling and timestamp order.

The rules are those QEMU itself obeys, so a stream recorded from a real QEMU
passes.  Where the VM model states a rule as data, the checker asks it rather
than restating it: the run-state moves (:mod:`qmpsim.vm.runstate`, per QEMU
version), a job's moves and block-job events (:mod:`qmpsim.vm.job_states`), a migration's
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
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from qmpsim.qmp.profiles import DEFAULT_PROFILE, ProfileSpec, get_profile
from qmpsim.vm.runstate import RunState

from .core import _EVENT_RULES as _EVENT_RULES  # the rules, by event (tests read it)
from .core import Violation, _Core
from .devices import _DeviceRules
from .displays import _DisplayRules
from .migration import _MigrationRules
from .power import _PowerRules
from .reading import _printable, _read

__all__ = ["RULES", "Violation", "check", "check_events", "check_files"]

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


@dataclass
class _StreamChecker(_PowerRules, _DeviceRules, _MigrationRules, _DisplayRules, _Core):
    """One stream's checker: the core and every area's rules."""


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
