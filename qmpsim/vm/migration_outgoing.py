"""A migration's source: ``migrate``, QEMU's precopy state machine, ``migrate_cancel`` and
``migrate-continue``.

``migrate`` checks its URI as the profile's QEMU does, then goes through ``setup``
(before the reply) and ``active`` (after it, with the first MIGRATION_PASS).  Each new
round of RAM (:mod:`qmpsim.vm.migration_ram`) starts with a dirty-bitmap sync
(MIGRATION_PASS, ``dirty-sync-count``).  When what the next round would send fits in
``max-bandwidth × downtime-limit`` the source stops (STOP, run state
``finish-migrate``), waits in ``pre-switchover`` for ``migrate-continue`` when that
capability is on, sends the rest (a last MIGRATION_PASS) and completes: run state
``postmigrate``.  A guest that dirties memory faster than the bandwidth never gets
there, until ``migrate-set-parameters max-bandwidth`` raises it.

What the migration thread does next is a :class:`~qmpsim.vm.migration_ram.Step` due at
a virtual time (:data:`qmpsim.vm.migration.STEPS` plays it); the status changes only
through :meth:`Outgoing._set`, by the moves of :mod:`qmpsim.vm.migration_states`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .component import on_command
from .fds import DescriptorChannel, Descriptors
from .migration_ram import DEVICE_STATE, FIRMWARE_PAGES, PAGE, RamTransfer, Step
from .migration_states import POSTCOPY_STATES, RUNNING, MigrationStatus, move
from .migration_uri import PARSE_BEFORE_SETUP, Bad, channel_uri, parse
from .values import CommandError, Event, Outcome

_M = MigrationStatus

SETUP_SECONDS = 0.002
"""From ``migrate`` to ``active`` (QEMU: 1 to 20 ms for a small VM)."""
BUFFER_DELAY = 0.1
"""How often QEMU measures the bandwidth, which sets the threshold of completion."""
CANCEL_SECONDS = 0.005
"""From ``cancelling`` to ``cancelled``: the migration thread noticing."""
_NO_CANCEL_IN_POSTCOPY = (9, 2, 0)
"""From QEMU 9.2 ``migrate_cancel`` refuses a migration in postcopy (7.2 cancels it)."""
MOST_AHEAD = 8
"""The most events a migration of a guest that dirties no memory says without another
command: PASS, active, PASS, STOP, device, PASS and completed (postcopy: STOP, device,
PASS, postcopy-active, completed; a cancel: cancelled, RESUME)."""
_UNBOUNDED = 1 << 30


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


class Outgoing(RamTransfer):
    """The source's side of the migration component: capabilities, parameters, one
    migration at a time, precopy."""

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
        self.status = _M.NONE
        self.error: str | None = None
        self.pass_ = 0
        self._step: Step | None = None
        self._due: float | None = None
        self._at: float | None = None
        if getattr(self, "channel", None) is not None:
            self._hang_up(finished=False)  # a reset VM's migration is gone
        self.channel: Channel | None = None
        self.start_postcopy = False
        self._clear_counters()
        self.reset_incoming()

    def _set(self, status: MigrationStatus) -> list[Event]:
        """The one place the source's status moves (only as ``MIGRATION_MOVES`` allows),
        said with a MIGRATION event when the ``events`` capability is on."""
        self.status = move(self.status, status)
        if not self._events_on():
            return []
        return [self.host.event("MIGRATION", {"status": str(status)})]

    def _sync(self) -> list[Event]:
        """A dirty-bitmap sync: a new pass."""
        self.pass_ += 1
        if not self._events_on() or "MIGRATION_PASS" not in self.host.profile.events:
            return []  # QEMU 2.6 added the event
        return [self.host.event("MIGRATION_PASS", {"pass": self.pass_})]

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
        events = self._set(_M.SETUP)
        if isinstance(parsed, Bad):
            if parsed.describe:
                self.error = parsed.text
            events += self._set(_M.FAILED)
            return Outcome(CommandError("GenericError", parsed.text), tuple(events))
        transport, address = parsed
        reached = self.connect(transport, address)
        if isinstance(reached, str):
            self.error = reached
            self._schedule(Step.FAILED)
        elif reached is not None:
            self.channel = reached
            self._schedule(Step.ACTIVE, SETUP_SECONDS)
        elif transport == "exec" and not address.strip():
            self._schedule(Step.BROKEN_SETUP, SETUP_SECONDS)
        else:
            self._schedule(Step.ACTIVE, SETUP_SECONDS)
        return Outcome({}, tuple(events))

    def refusal(self) -> str | None:
        """Why ``migrate`` is refused now (``migrate_prepare()``'s checks, in its order)."""
        if self.status in RUNNING:
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
        if self._sending() and self.status != _M.CANCELLING:
            return self.since + self._round_seconds()
        if self._step in (Step.ROUND, Step.POSTCOPY_ROUND):
            return None  # cancelling, or postcopy waiting for its connection
        return self._due

    def under_way(self) -> bool:
        """Whether an outgoing migration runs (``migration_is_running()``)."""
        return self.status in RUNNING

    def events_ahead(self) -> int:
        """At most how many events the migration under way still says if nothing else is
        done: a few, for a guest that does not dirty memory (setup to completed, a
        switch to postcopy, a cancel); many more for one that does, which may never
        converge."""
        if self.next_deadline() is None:
            return 0  # idle, or waiting for a command (migrate-continue, a resume)
        if self.dirty_rate and self.status in (_M.SETUP, _M.ACTIVE):
            return _UNBOUNDED
        return MOST_AHEAD

    # --- its steps (what it does next: Migration.STEPS) --------------------------------

    def _activate(self) -> list[Event]:
        now = self._now()
        self.setup_ms = round((now - self.start) * 1000)
        self.was_running = self.host.running
        normal = FIRMWARE_PAGES[self.was_running]
        if self.host.vm.guest is not None:
            normal += self._guest_pages() // 4  # what a booted guest holds
        self.round_pages = float(self.ram_pages)
        self.round_normal = float(min(normal, self.ram_pages))
        self.since = self.active_at = now
        events = self._sync() + self._set(_M.ACTIVE)
        self._step = Step.ROUND
        if self.start_postcopy:  # asked for in setup: the first iteration switches
            self._schedule(Step.POSTCOPY)
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
        self._step = Step.ROUND
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
            events += self._set(_M.PRE_SWITCHOVER)
            self._step = None  # migrate-continue moves on
            return events
        if self.host.profile.version >= (9, 0, 0):
            events += self._set(_M.DEVICE)
        return events + self._final_pass()

    def _final_pass(self) -> list[Event]:
        events = self._sync()
        seconds = self._round_seconds()
        self._send(self.round_pages, self.round_normal)
        self.transferred += DEVICE_STATE
        self._schedule(Step.COMPLETED, seconds)
        return events

    def _completed(self) -> list[Event]:
        now = self._now()
        self.ended_at = now
        if not self.postcopy:  # postcopy's downtime ended when the destination ran
            self.downtime_ms = round((now - self.stopped_at) * 1000)
        self._schedule(None)
        self._hang_up(finished=True)
        events = self._set(_M.COMPLETED)
        self.host.status = "postmigrate"
        return events

    def _failed(self) -> list[Event]:
        self.ended_at = self._now()
        return self._set(_M.FAILED) + self._restart()

    def _broken_setup(self) -> list[Event]:
        """``exec:`` with no command: the shell exits and the first write fails."""
        self.error = (
            "ram_save_setup failed: Input/output error"
            if self.host.profile.version >= (9, 0, 0)
            else "Unable to write to command: Broken pipe"
        )
        return self._sync() + self._set(_M.ACTIVE) + self._failed()

    def _cancelled(self) -> list[Event]:
        self.ended_at = self._now()
        return self._set(_M.CANCELLED) + self._restart()

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
        if self.status not in RUNNING or self.status == _M.CANCELLING:
            return Outcome({})
        in_postcopy = self.status in POSTCOPY_STATES
        if in_postcopy and self.host.profile.version >= _NO_CANCEL_IN_POSTCOPY:
            return Outcome(
                CommandError("GenericError", "Postcopy migration in progress, cannot cancel.")
            )
        self._advance()
        events = self._set(_M.CANCELLING)
        self._schedule(Step.CANCELLED, CANCEL_SECONDS)
        return Outcome({}, tuple(events))

    @on_command("migrate-continue")
    def migrate_continue(self, args: Mapping[str, Any]) -> Outcome:
        if self.status != args.get("state"):
            return Outcome(
                CommandError("GenericError", f"Migration not in expected state: {self.status}")
            )
        if self.status == _M.PRE_SWITCHOVER:
            self._step = Step.CONTINUE
            self._due = self._now()
        return Outcome({})

    def _resume(self, uri: str) -> Outcome:
        """``migrate`` ``resume: true``: reconnect a paused postcopy
        (:mod:`qmpsim.vm.migration_postcopy`)."""
        raise NotImplementedError
