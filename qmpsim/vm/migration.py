"""Live migration: QEMU's precopy and postcopy state machine on the virtual clock.

``migrate`` checks its URI as the profile's QEMU does, then goes through
``setup`` (before the reply) and ``active`` (after it, with the first
MIGRATION_PASS).  RAM is sent in rounds at ``max-bandwidth`` bytes per second:
a zero page costs 9 bytes on the wire, a page with data 4,104.  While a round
is sent the guest dirties memory at the rate :class:`GuestDirtiesMemory` sets;
each new round starts with a dirty-bitmap sync (MIGRATION_PASS, ``dirty-sync-count``).
When what the next round would send fits in ``max-bandwidth × downtime-limit``
the source stops (STOP, run state ``finish-migrate``), waits in
``pre-switchover`` for ``migrate-continue`` when that capability is on, sends
the rest (a last MIGRATION_PASS) and completes: run state ``postmigrate``.  A
guest that dirties memory faster than the bandwidth never gets there, until
``migrate-set-parameters max-bandwidth`` raises it.  MIGRATION and
MIGRATION_PASS go out only with the ``events`` capability, as in QEMU.

With the ``postcopy-ram`` capability, ``migrate-start-postcopy`` hands the VM over
before its RAM is all sent: the source stops (STOP, ``postcopy-active``, a last
MIGRATION_PASS), the destination runs, and the source sends the rest at
``max-postcopy-bandwidth`` until ``completed`` (``postmigrate``).  A connection lost
then (``migrate-pause``, a destination that goes away) leaves both sides
``postcopy-paused`` rather than ``failed``: neither can go back, so they wait for
``migrate-recover`` on the destination and ``migrate`` ``resume: true`` on the
source (``postcopy-recover``, 9.1's ``postcopy-recover-setup``), then go on.

The destination's side is :mod:`qmpsim.vm.migration_incoming`.  Where the host
has a network (:mod:`qmpsim.runtime.migration_link`) the
:attr:`Migration.connect` and :attr:`Migration.listen` hooks make both ends real
sockets; without one, any destination accepts the stream.

What a guestless ``-M pc`` reaches — the events and their order, the run
states, ``query-migrate``'s members per status, the refusals and their texts —
is compared with QEMU 7.2 and 10.0 in ``tests/test_diff_migration.py`` (postcopy
between two real QEMUs in ``tests/test_diff_postcopy.py``); the dirty rate and
convergence are modelled from ``migration/migration.c`` and ``migration/ram.c``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .component import on_cause, on_command
from .fds import DescriptorChannel, Descriptors
from .migration_incoming import (
    ALIVE,
    POSTCOPY_STATES,
    RECOVER_SETUP,
    Incoming,
    IncomingCompleted,
    IncomingConnected,
    IncomingFailed,
    IncomingPostcopy,
    Listen,
    only,
)
from .migration_uri import PARSE_BEFORE_SETUP, Bad, channel_uri, parse
from .values import CommandError, Event, Outcome

__all__ = [
    "Channel",
    "Connect",
    "GuestDirtiesMemory",
    "IncomingCompleted",
    "IncomingConnected",
    "IncomingFailed",
    "IncomingPostcopy",
    "Listen",
    "Migration",
    "MigrationTargetLost",
]

PAGE = 4096
ZERO_PAGE_COST = 9
"""A zero page on the wire: its 8-byte header and the byte it is filled with."""
PAGE_COST = PAGE + 8
SETUP_SECONDS = 0.002
"""From ``migrate`` to ``active`` (QEMU: 1 to 20 ms for a small VM)."""
BUFFER_DELAY = 0.1
"""How often QEMU measures the bandwidth, which sets the threshold of completion."""
CANCEL_SECONDS = 0.005
"""From ``cancelling`` to ``cancelled``: the migration thread noticing."""
DEVICE_STATE = 92
"""Bytes of device state and stream markers a small ``pc`` adds (QEMU 7.2)."""
FIRMWARE_RAM = {"pc": 532480}
"""RAM blocks besides ``-m`` that a machine migrates (``-M pc -nodefaults``: the BIOS,
option ROM and ACPI tables), by machine type."""
# pages holding data in a guestless pc: SeaBIOS's once it ran, the ROMs' before
_FIRMWARE_PAGES = {True: 111, False: 49}

_RUNNING = ("setup", "active", "pre-switchover", "device", "cancelling", *POSTCOPY_STATES)
"""``migration_is_running()``: states in which a new migration is refused."""
POSTCOPY_RATE = 1 << 30
"""What ``max-postcopy-bandwidth`` 0 (no limit) sends at: a local link's speed."""
_DEVICE_BEFORE_POSTCOPY = (9, 0, 0)
"""From QEMU 9.0 postcopy stops the VM and goes through ``device`` before
``postcopy-active`` (7.2: ``postcopy-active``, then STOP)."""
_DOWNTIME_IN_POSTCOPY = (8, 1, 0)
"""From QEMU 8.1 ``query-migrate`` shows ``downtime`` during postcopy (7.2:
``expected-downtime``)."""
_ERROR_ANY_STATE = (8, 2, 0)
"""From QEMU 8.2 ``query-migrate`` shows the error in any state (``postcopy-paused``),
and ``migrate-pause`` leaves one (7.2: only a failed migration's)."""
_NO_CANCEL_IN_POSTCOPY = (9, 2, 0)
"""From QEMU 9.2 ``migrate_cancel`` refuses a migration in postcopy (7.2 cancels it)."""
MOST_AHEAD = 8
"""The most events a migration of a guest that dirties no memory says without another
command: PASS, active, PASS, STOP, device, PASS and completed (postcopy: STOP, device,
PASS, postcopy-active, completed; a cancel: cancelled, RESUME)."""
_UNBOUNDED = 1 << 30
_PAUSED_BY_USER = "Postcopy migration is paused by the user"
_CHANNEL_ERROR = "Channel error: Input/output error"


@dataclass(frozen=True)
class GuestDirtiesMemory:
    """The guest writes ``rate`` bytes of its RAM per second (0: idle), which a
    live migration must send again."""

    rate: int


@dataclass(frozen=True)
class MigrationTargetLost:
    """The migration's destination went away (it closed the connection, crashed,
    the network dropped): the migration fails with ``error`` (default: QEMU's text
    for a write on a connection the peer closed)."""

    error: str | None = None


class Channel(Protocol):
    """An outgoing migration's connection, where the host has a network (a linked
    simulator): the stream's end is written, or the connection dropped."""

    def finish(self) -> None:
        """The source completed: write the end-of-stream marker and close."""

    # optional: ``postcopy()``, the source switched to postcopy (say so in the stream)

    def abort(self) -> None:
        """The source failed or was cancelled: close without the marker."""


Connect = Callable[[str, str], "str | Channel | None"]
"""How the host reaches a destination: ``(transport, address)`` to ``None`` (a
simulated destination accepts), a :class:`Channel` (a real connection), or QEMU's
text for why not (``Failed to connect to …``), which fails the migration after
``migrate`` has returned."""


def reachable(transport: str, address: str) -> str | Channel | None:
    """The default destination: whatever the URI names accepts the stream (a
    descriptor is closed when the migration ends)."""
    return DescriptorChannel.open(int(address)) if transport == "fd" else None


class Migration(Incoming):
    """The VM's outgoing migration: capabilities, parameters, one migration at a time."""

    connect: Connect = staticmethod(reachable)
    """Set by whoever gives the VM a network (a linked simulator, a test)."""

    def reset(self) -> None:
        profile = self.host.profile
        caps = profile.recorded_reply("query-migrate-capabilities", {}, kvm=False, machine="pc")
        self.caps: dict[str, bool] = {
            c["capability"]: bool(c["state"]) for c in (caps or {}).get("return", [])
        }
        params = profile.recorded_reply("query-migrate-parameters", {}, kvm=False, machine="pc")
        self.params: dict[str, Any] = dict((params or {}).get("return", {}))
        self.params.setdefault("max-bandwidth", 128 << 20)
        self.params.setdefault("downtime-limit", 300)
        self.dirty_rate = 0
        self.status = "none"
        self.error: str | None = None
        self.pass_ = 0
        self._step: str | None = None
        self._due: float | None = None
        self._at: float | None = None
        if getattr(self, "channel", None) is not None:
            self._hang_up(finished=False)  # a reset VM's migration is gone
        self.channel: Channel | None = None
        self.start_postcopy = False
        self._clear_counters()
        self.reset_incoming()

    def _clear_counters(self) -> None:
        now = self._now()
        self.start = now
        self.setup_ms = 0
        self.downtime_ms = 0
        self.stopped_at = now
        self.ended_at = now
        self.active_at = now
        self.was_running = False
        # counters as floats (a share of a round is sent at a time), reported rounded
        self.transferred = 0.0
        self.precopy = 0.0
        self.downtime_bytes = 0.0
        self.normal = 0.0
        self.duplicate = 0.0
        self.round_pages = 0.0  # pages still to send this round
        self.round_normal = 0.0  # of which hold data
        self.dirty = 0.0  # pages dirtied since the round began
        self.since = now
        self.postcopy_bytes = 0.0
        self.requests = 0.0  # pages the destination asked for (it faulted on them)
        self.postcopy = False  # whether this migration switched to postcopy
        self.expected_at_switch = 0

    # --- helpers ----------------------------------------------------------------------

    def _now(self) -> float:
        """The virtual time: the due time of the step being played, else the clock's."""
        return self.host.clock() if self._at is None else self._at

    def _events_on(self) -> bool:
        return self.caps.get("events", False)

    def _set(self, status: str) -> list[Event]:
        self.status = status
        if not self._events_on():
            return []
        return [self.host.event("MIGRATION", {"status": status})]

    def _sync(self) -> list[Event]:
        """A dirty-bitmap sync: a new pass."""
        self.pass_ += 1
        if not self._events_on():
            return []
        return [self.host.event("MIGRATION_PASS", {"pass": self.pass_})]

    @property
    def bandwidth(self) -> int:
        return max(int(self.params.get("max-bandwidth", 128 << 20)), 1)

    @property
    def ram_pages(self) -> int:
        vm = self.host.vm
        extra = FIRMWARE_RAM.get(vm.machine or "", 0)
        return (int(vm.memory) + extra) // PAGE

    def _schedule(self, step: str | None, seconds: float = 0.0) -> None:
        self._step = step
        self._due = None if step is None else self._now() + seconds

    @property
    def rate(self) -> int:
        """Bytes per second now: ``max-bandwidth``, or in postcopy ``max-postcopy-bandwidth``."""
        if not self.postcopy:
            return self.bandwidth
        return max(int(self.params.get("max-postcopy-bandwidth", 0)), 0) or POSTCOPY_RATE

    def _round_seconds(self) -> float:
        zero = self.round_pages - self.round_normal
        return (self.round_normal * PAGE_COST + zero * ZERO_PAGE_COST) / self.rate

    def _sending(self) -> bool:
        """Whether RAM goes out now: a precopy round, or postcopy with its connection."""
        if self._step == "round":
            return self.status in ("active", "cancelling")
        return self._step == "postcopy round" and self.status == "postcopy-active"

    def _advance(self) -> None:
        """Send what the time since the last look allowed; the guest dirties meanwhile."""
        now = self._now()
        elapsed = max(0.0, now - self.since)
        self.since = now
        if not self._sending():
            return
        total = self._round_seconds()
        if self.postcopy and self.dirty_rate:
            # the guest, running on the destination, faults on pages not there yet
            left = self.round_pages / max(self.ram_pages, 1)
            self.requests += elapsed * self.dirty_rate / PAGE * left
        elif self.dirty_rate:
            limit = self._guest_pages()
            self.dirty = min(float(limit), self.dirty + elapsed * self.dirty_rate / PAGE)
        # the last microsecond of a round counts as sent: clock floats are not exact
        share = 1.0 if total - elapsed < 1e-6 else elapsed / total
        self._send(self.round_pages * share, self.round_normal * share)

    def _send(self, pages: float, normal: float) -> None:
        zero = pages - normal
        sent = normal * PAGE_COST + zero * ZERO_PAGE_COST
        self.round_pages -= pages
        self.round_normal -= normal
        self.normal += normal
        self.duplicate += zero
        self.transferred += sent
        if self.postcopy:
            self.postcopy_bytes += sent
        elif self.host.running:
            self.precopy += sent
        else:
            self.downtime_bytes += sent

    def _guest_pages(self) -> int:
        """The pages a guest can dirty: all of its RAM."""
        return int(self.host.vm.memory) // PAGE

    # --- migrate ----------------------------------------------------------------------

    @on_command("migrate")
    def migrate(self, args: Mapping[str, Any]) -> Outcome:
        uri = args.get("uri")
        if uri is None:
            uri = channel_uri(args.get("channels") or [])
        if args.get("resume"):
            return self._resume(str(uri))
        refused = self.refusal()
        if refused is not None:
            return Outcome(CommandError("GenericError", refused))
        early = self.host.profile.version >= PARSE_BEFORE_SETUP
        parsed = parse(str(uri), self.host.profile.version)
        if not isinstance(parsed, Bad) and parsed[0] == "fd":
            # monitor_get_fd(): the named descriptor leaves the monitor's table
            taken = self.host.part(Descriptors).take(parsed[1])
            parsed = Bad(taken, early=False) if isinstance(taken, str) else ("fd", str(taken))
        if isinstance(parsed, Bad) and (early and parsed.early):
            return Outcome(CommandError("GenericError", parsed.text))
        self._clear_counters()
        self.error = None
        self.pass_ = 0
        self.start_postcopy = False
        events = self._set("setup")
        if isinstance(parsed, Bad):
            if parsed.describe:
                self.error = parsed.text
            events += self._set("failed")
            return Outcome(CommandError("GenericError", parsed.text), tuple(events))
        transport, address = parsed
        reached = self.connect(transport, address)
        if isinstance(reached, str):
            self.error = reached
            self._schedule("failed")
        elif reached is not None:
            self.channel = reached
            self._schedule("active", SETUP_SECONDS)
        elif transport == "exec" and not address.strip():
            self._schedule("broken setup", SETUP_SECONDS)
        else:
            self._schedule("active", SETUP_SECONDS)
        return Outcome({}, tuple(events))

    def refusal(self) -> str | None:
        """Why ``migrate`` is refused now (``migrate_prepare()``'s checks, in its order)."""
        if self.status in _RUNNING:
            return "There's a migration process in progress"
        if self.host.status == "inmigrate":
            return "Guest is waiting for an incoming migration"
        if self.host.status == "postmigrate":
            return "Can't migrate the vm that was paused due to previous migration"
        return None

    # --- the migration thread ---------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self._step is None:
            return None
        if self._sending() and self.status != "cancelling":
            return self.since + self._round_seconds()
        if self._step in ("round", "postcopy round"):
            return None  # cancelling, or postcopy waiting for its connection
        return self._due

    def under_way(self) -> bool:
        """Whether an outgoing migration runs (``migration_is_running()``)."""
        return self.status in _RUNNING

    def events_ahead(self) -> int:
        """At most how many events the migration under way still says if nothing else is
        done: a few, for a guest that does not dirty memory (setup to completed, a
        switch to postcopy, a cancel); many more for one that does, which may never
        converge."""
        if self.next_deadline() is None:
            return 0  # idle, or waiting for a command (migrate-continue, a resume)
        if self.dirty_rate and self.status in ("setup", "active"):
            return _UNBOUNDED
        return MOST_AHEAD

    def poll(self) -> list[Event]:
        out: list[Event] = []
        for _ in range(1000):  # each step moves on; a bound against a model mistake
            due = self.next_deadline()
            if due is None or due > self.host.clock() or self._step is None:
                return out
            # a step happens at its own time, however late the machine is polled
            self._at = due
            try:
                out += _STEPS[self._step](self)  # each step says what comes next
            finally:
                self._at = None
        return out

    def _activate(self) -> list[Event]:
        now = self._now()
        self.setup_ms = round((now - self.start) * 1000)
        self.was_running = self.host.running
        normal = _FIRMWARE_PAGES[self.was_running]
        if self.host.vm.guest is not None:
            normal += self._guest_pages() // 4  # what a booted guest holds
        self.round_pages = float(self.ram_pages)
        self.round_normal = float(min(normal, self.ram_pages))
        self.since = self.active_at = now
        events = self._sync() + self._set("active")
        self._step = "round"
        if self.start_postcopy:  # asked for in setup: the first iteration switches
            self._schedule("postcopy")
        return events

    def _round_done(self) -> list[Event]:
        """Every page of the bitmap sent: ``migration_iteration_run()`` decides."""
        self._advance()
        self._send(self.round_pages, self.round_normal)  # the round is over
        if self._now() - self.active_at < BUFFER_DELAY:
            # the bandwidth is not measured yet (no threshold): the bitmap, not synced
            # since the start, says nothing is pending, and the migration completes
            return self._switchover()
        events = self._sync()
        dirty = float(int(self.dirty))
        self.dirty = 0.0
        self.round_pages = self.round_normal = dirty
        threshold = self.bandwidth * int(self.params.get("downtime-limit", 300)) / 1000
        if dirty * PAGE < threshold:
            return events + self._switchover()
        self._step = "round"
        return events

    def _switchover(self) -> list[Event]:
        """``migration_completion()``: stop the VM, maybe wait, send the rest."""
        dirty = float(int(self.dirty))
        self.dirty = 0.0
        self.round_pages = self.round_normal = self.round_pages + dirty
        self.stopped_at = self._now()
        events = self.host.stop("finish-migrate")
        self.host.status = "finish-migrate"
        if self.caps.get("pause-before-switchover", False):
            events += self._set("pre-switchover")
            self._step = None  # migrate-continue moves on
            return events
        if self.host.profile.version >= (9, 0, 0):
            events += self._set("device")
        return events + self._final_pass()

    def _final_pass(self) -> list[Event]:
        events = self._sync()
        seconds = self._round_seconds()
        self._send(self.round_pages, self.round_normal)
        self.transferred += DEVICE_STATE
        self._schedule("completed", seconds)
        return events

    def _completed(self) -> list[Event]:
        now = self._now()
        self.ended_at = now
        if not self.postcopy:  # postcopy's downtime ended when the destination ran
            self.downtime_ms = round((now - self.stopped_at) * 1000)
        self._schedule(None)
        self._hang_up(finished=True)
        events = self._set("completed")
        self.host.status = "postmigrate"
        return events

    def _failed(self) -> list[Event]:
        self.ended_at = self._now()
        return self._set("failed") + self._restart()

    def _broken_setup(self) -> list[Event]:
        """``exec:`` with no command: the shell exits and the first write fails."""
        self.error = (
            "ram_save_setup failed: Input/output error"
            if self.host.profile.version >= (9, 0, 0)
            else "Unable to write to command: Broken pipe"
        )
        return self._sync() + self._set("active") + self._failed()

    def _cancelled(self) -> list[Event]:
        self.ended_at = self._now()
        return self._set("cancelled") + self._restart()

    def _hang_up(self, *, finished: bool) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.finish() if finished else channel.abort()

    def _restart(self) -> list[Event]:
        """``migration_iteration_finish()``: a VM the migration stopped runs again."""
        self._step = None
        self._hang_up(finished=False)
        if self.host.status != "finish-migrate":
            return []
        if self.was_running and not self.postcopy:  # a handed-over VM stays stopped
            self.host.status = "running"
            return [self.host.event("RESUME")]
        self.host.status = "postmigrate"
        return []

    # --- commands during a migration ----------------------------------------------------

    @on_command("migrate_cancel")
    def migrate_cancel(self, _args: Mapping[str, Any]) -> Outcome:
        if self.status not in _RUNNING or self.status == "cancelling":
            return Outcome({})
        in_postcopy = self.status in POSTCOPY_STATES
        if in_postcopy and self.host.profile.version >= _NO_CANCEL_IN_POSTCOPY:
            return Outcome(
                CommandError("GenericError", "Postcopy migration in progress, cannot cancel.")
            )
        self._advance()
        events = self._set("cancelling")
        self._schedule("cancelled", CANCEL_SECONDS)
        return Outcome({}, tuple(events))

    @on_command("migrate-continue")
    def migrate_continue(self, args: Mapping[str, Any]) -> Outcome:
        if self.status != args.get("state"):
            return Outcome(
                CommandError("GenericError", f"Migration not in expected state: {self.status}")
            )
        if self.status == "pre-switchover":
            self._step = "continue"
            self._due = self._now()
        return Outcome({})

    def _continue(self) -> list[Event]:
        if self.postcopy:
            return self._hand_over()
        return self._set("device") + self._final_pass()

    @on_command("migrate-set-capabilities")
    def migrate_set_capabilities(self, args: Mapping[str, Any]) -> Outcome:
        if self.status in _RUNNING:
            return Outcome(CommandError("GenericError", "There's a migration process in progress"))
        for cap in args.get("capabilities", []):
            self.caps[str(cap["capability"])] = bool(cap["state"])
        return Outcome({})

    @on_command("query-migrate-capabilities")
    def query_migrate_capabilities(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome([{"capability": k, "state": v} for k, v in self.caps.items()])

    @on_command("migrate-set-parameters")
    def migrate_set_parameters(self, args: Mapping[str, Any]) -> Outcome:
        limit = args.get("downtime-limit")
        if limit is not None and not 0 <= int(limit) <= 2000000:
            return Outcome(
                CommandError(
                    "GenericError",
                    "Parameter 'downtime_limit' expects an integer in the range of 0 to"
                    " (2000 * 1000) ms",
                )
            )
        self._advance()  # what was sent at the old speed
        for key, value in args.items():
            self.params[key] = "" if value is None else value
        return Outcome({})

    @on_command("query-migrate-parameters")
    def query_migrate_parameters(self, _args: Mapping[str, Any]) -> Outcome:
        # members in the schema's order, QEMU's insertion order (the writer hashes them)
        return Outcome(only(self.fields(None, "query-migrate-parameters"), self.params))

    @on_command("migrate-start-postcopy")
    def migrate_start_postcopy(self, _args: Mapping[str, Any]) -> Outcome:
        if not self.caps.get("postcopy-ram", False):
            return Outcome(
                CommandError(
                    "GenericError",
                    "Enable postcopy with migrate_set_capability before the start of migration",
                )
            )
        if self.status == "none":
            return Outcome(
                CommandError(
                    "GenericError", "Postcopy must be started after migration has been started"
                )
            )
        # taken at the migration thread's next iteration; too late is not an error
        if not self.start_postcopy and self.status in ("setup", "active"):
            self.start_postcopy = True
            if self._step == "round":
                self._advance()
                self._schedule("postcopy")
        return Outcome({})

    @on_command("migrate-pause")
    def migrate_pause(self, _args: Mapping[str, Any]) -> Outcome:
        if self.status in ALIVE:
            # the source shuts its connection; the migration thread notices after the reply
            self._advance()
            if self.host.profile.version >= _ERROR_ANY_STATE:
                self.error = _PAUSED_BY_USER
            self._schedule("paused")
            return Outcome({})
        if self.incoming in ALIVE:
            return Outcome({}, tuple(self.pause_incoming()))
        states = "postcopy-active"
        if self.host.profile.version >= (8, 1, 0):
            states = "postcopy-active or postcopy-recover"
        return Outcome(
            CommandError(
                "GenericError", f"migrate-pause is currently only supported during {states} state"
            )
        )

    # --- postcopy -----------------------------------------------------------------------

    def _postcopy_start(self) -> list[Event]:
        """``postcopy_start()``: stop the VM, then hand it over with its device state; the
        RAM not sent yet follows."""
        self._advance()
        dirty = float(int(self.dirty))
        self.dirty = 0.0
        self.round_pages += dirty
        self.round_normal += dirty
        self.stopped_at = self._now()
        self.expected_at_switch = self._expected_downtime()
        self.postcopy = True
        events: list[Event] = []
        modern = self.host.profile.version >= _DEVICE_BEFORE_POSTCOPY
        pause = self.caps.get("pause-before-switchover", False)
        if not modern and not pause:
            events += self._set("postcopy-active")
        events += self.host.stop("finish-migrate")
        self.host.status = "finish-migrate"  # where the source stays until it completes
        if pause:
            events += self._set("pre-switchover")
            self._step = None  # migrate-continue moves on
            return events
        return events + self._hand_over()

    def _hand_over(self) -> list[Event]:
        """The last sync (the discard bitmap), the device state sent: the destination runs."""
        events: list[Event] = []
        if self.host.profile.version >= _DEVICE_BEFORE_POSTCOPY:
            events += self._set("device") + self._sync() + self._set("postcopy-active")
        else:
            if self.status != "postcopy-active":
                events += self._set("postcopy-active")
            events += self._sync()
        self.transferred += DEVICE_STATE
        self.postcopy_bytes += DEVICE_STATE
        self.requests += 1  # the destination's first fault, as it starts
        now = self._now()
        self.downtime_ms = round((now - self.stopped_at) * 1000) + 1
        self.since = now
        self._step = "postcopy round"
        start = getattr(self.channel, "postcopy", None)
        if start is not None:
            start()
        return events

    def _postcopy_done(self) -> list[Event]:
        """Every page sent: postcopy completes (the destination has run all along)."""
        self._advance()
        self._send(self.round_pages, self.round_normal)
        return self._completed()

    def _paused(self) -> list[Event]:
        """``postcopy_pause()``: the connection is gone; wait for a recovery."""
        self._hang_up(finished=False)
        self._step = "postcopy round"  # what goes on once recovered
        return self._set("postcopy-paused")

    def _resume(self, uri: str) -> Outcome:
        """``migrate`` ``resume: true``: reconnect a paused postcopy."""
        if self.status != "postcopy-paused":
            return Outcome(
                CommandError("GenericError", "Cannot resume if there is no paused migration")
            )
        if self.caps.get("release-ram", False):
            return Outcome(
                CommandError(
                    "GenericError",
                    "Postcopy recovery cannot work when release-ram capability is set",
                )
            )
        parsed = parse(uri, self.host.profile.version)
        if isinstance(parsed, Bad):
            return Outcome(CommandError("GenericError", parsed.text))
        events: list[Event] = []
        if self.host.profile.version >= RECOVER_SETUP:
            events += self._set("postcopy-recover-setup")
        reached = self.connect(*parsed)
        if isinstance(reached, str):
            self.error = reached
            self._schedule("unrecovered")
        else:
            self.channel = reached
            self._schedule("recover", SETUP_SECONDS)
        return Outcome({}, tuple(events))

    def _recover(self) -> list[Event]:
        """Both sides agreed on what is left (the destination's received bitmap): go on."""
        if self.host.profile.version >= _ERROR_ANY_STATE:
            self.error = None
        self.since = self._now()
        self._step = "postcopy round"
        return self._set("postcopy-recover") + self._set("postcopy-active")

    def _unrecovered(self) -> list[Event]:
        """The new connection could not be made: paused again (9.1 says so)."""
        self._step = "postcopy round"
        if self.status == "postcopy-recover-setup":
            return self._set("postcopy-paused")
        return []

    # --- query-migrate ----------------------------------------------------------------

    @on_command("query-migrate")
    def query_migrate(self, _args: Mapping[str, Any]) -> Outcome:
        self._advance()
        status = self.status
        if status == "none":
            return Outcome(self.incoming_info() if self.incoming != "none" else {})
        info: dict[str, Any] = {"status": status}
        if status == "setup":
            return Outcome(info)
        if status in ("failed", "cancelled"):
            if self.error is not None and status == "failed":
                info["error-desc"] = self.error
            return Outcome(info)
        now = self._now()
        info["ram"] = self._ram(now)
        version = self.host.profile.version
        if status == "completed":
            info["total-time"] = round((self.ended_at - self.start) * 1000)
        else:
            info["total-time"] = round((now - self.start) * 1000)
        if status == "completed" or (
            status in POSTCOPY_STATES and version >= _DOWNTIME_IN_POSTCOPY
        ):
            info["downtime"] = self.downtime_ms
        else:
            info["expected-downtime"] = self._expected_downtime()
        info["setup-time"] = self.setup_ms
        if self.error is not None and version >= _ERROR_ANY_STATE:
            info["error-desc"] = self.error
        return Outcome(only(self.fields(None), info))

    def _expected_downtime(self) -> int:
        if self.postcopy:
            return self.expected_at_switch  # precopy's last estimate: postcopy makes none
        limit = int(self.params.get("downtime-limit", 300))
        if self.pass_ <= 1:
            return limit
        # what is left to send, at the measured bandwidth
        return round((self.round_pages + self.dirty) * PAGE * 1000 / self.bandwidth)

    def _ram(self, now: float) -> dict[str, Any]:
        done = self.status == "completed"
        seconds = max((self.ended_at if done else now) - self.start, 1e-3)
        moving = self.status in ("active", *POSTCOPY_STATES)
        ram: dict[str, Any] = {
            "transferred": round(self.transferred),
            "remaining": 0 if done else round(self.round_pages + self.dirty) * PAGE,
            "total": self.ram_pages * PAGE,
            "duplicate": round(self.duplicate),
            "skipped": 0,
            "normal": round(self.normal),
            "normal-bytes": round(self.normal) * PAGE,
            "dirty-pages-rate": self.dirty_rate // PAGE if self.pass_ > 1 else 0,
            "mbps": self.transferred * 8 / 1e6 / seconds if moving or done else 0,
            "dirty-sync-count": self.pass_,
            "postcopy-requests": round(self.requests),
            "page-size": PAGE,
            "multifd-bytes": 0,
            "pages-per-second": round(self.rate / PAGE_COST) if moving else 0,
            "precopy-bytes": round(self.precopy),
            "downtime-bytes": round(self.downtime_bytes),
            "postcopy-bytes": round(self.postcopy_bytes),
            "dirty-sync-missed-zero-copy": 0,
        }
        return only(self.fields("ram"), ram)

    # --- causes ----------------------------------------------------------------------

    def cause_error(self, cause: Any) -> str | None:
        if isinstance(cause, MigrationTargetLost) and self.status not in _RUNNING:
            return f"no migration is under way (its status is {self.status})"
        if isinstance(cause, MigrationTargetLost) and self.status in (
            "postcopy-paused",
            "postcopy-recover-setup",
        ):
            return f"the destination is already gone (the migration is {self.status})"
        if isinstance(cause, GuestDirtiesMemory) and cause.rate < 0:
            return f"rate {cause.rate} is negative"
        return self.incoming_cause_error(cause)

    @on_cause(GuestDirtiesMemory)
    def guest_dirties_memory(self, c: GuestDirtiesMemory) -> list[Event]:
        self._advance()
        self.dirty_rate = c.rate
        return []

    @on_cause(MigrationTargetLost)
    def target_lost(self, c: MigrationTargetLost) -> list[Event]:
        self._advance()
        if self.status in ALIVE:
            # postcopy_pause(): the guest runs on the destination, so neither side fails
            self.error = c.error or _CHANNEL_ERROR
            return self._paused()
        self.error = c.error or "Unable to write to socket: Broken pipe"
        return self._failed()


# what the migration thread does next, by name (Migration._step)
_STEPS: dict[str, Callable[[Migration], list[Event]]] = {
    "active": Migration._activate,
    "round": Migration._round_done,
    "continue": Migration._continue,
    "completed": Migration._completed,
    "failed": Migration._failed,
    "broken setup": Migration._broken_setup,
    "cancelled": Migration._cancelled,
    "postcopy": Migration._postcopy_start,
    "postcopy round": Migration._postcopy_done,
    "paused": Migration._paused,
    "recover": Migration._recover,
    "unrecovered": Migration._unrecovered,
}
