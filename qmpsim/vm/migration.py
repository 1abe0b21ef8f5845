"""Live migration: QEMU's precopy and postcopy state machine on the virtual clock.

One component, :class:`Migration`, answers every migration command; it is built in
layers, each a module a reader can hold in mind:

* :mod:`qmpsim.vm.migration_states`: QEMU's statuses and ``migration.c``'s moves between
  them, the one table both the model and the conformance checker follow;
* :mod:`qmpsim.vm.migration_incoming`: the destination's side (``-incoming``,
  ``migrate-incoming``, ``migrate-recover``);
* :mod:`qmpsim.vm.migration_ram`: the RAM sent on the virtual clock, the guest
  dirtying it meanwhile, ``query-migrate``'s ``ram`` counters;
* :mod:`qmpsim.vm.migration_outgoing`: the source: ``migrate``, precopy's rounds and
  switchover, ``migrate_cancel``, ``migrate-continue``;
* :mod:`qmpsim.vm.migration_postcopy`: the switch to postcopy, ``migrate-pause`` and
  the recovery of a paused postcopy;
* this module: the capabilities and parameters, ``query-migrate``, the causes
  (:class:`GuestDirtiesMemory`, :class:`MigrationTargetLost`) and the migration
  thread's steps (:data:`STEPS`), played at their virtual time by :meth:`Migration.poll`.

MIGRATION and MIGRATION_PASS go out only with the ``events`` capability, as in QEMU.
URIs are read by :mod:`qmpsim.vm.migration_uri`.  Where the host has a network
(:mod:`qmpsim.runtime.migration_link`) the :attr:`Migration.connect` and
:attr:`Migration.listen` hooks make both ends real sockets; without one, any
destination accepts the stream.

What a guestless ``-M pc`` reaches — the events and their order, the run
states, ``query-migrate``'s members per status, the refusals and their texts —
is compared with QEMU 7.2 and 10.0 in ``tests/test_diff_migration.py`` (postcopy
between two real QEMUs in ``tests/test_diff_postcopy.py``); the dirty rate and
convergence are modelled from ``migration/migration.c`` and ``migration/ram.c``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .component import on_cause, on_command
from .migration_incoming import (
    IncomingCompleted,
    IncomingConnected,
    IncomingFailed,
    IncomingPostcopy,
    Listen,
    only,
)
from .migration_outgoing import MOST_AHEAD, Channel, Connect
from .migration_postcopy import ERROR_ANY_STATE, Postcopy
from .migration_ram import Step
from .migration_states import ALIVE, POSTCOPY_STATES, RUNNING, MigrationStatus
from .values import CommandError, Event, Outcome

__all__ = [
    "MOST_AHEAD",
    "STEPS",
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

_M = MigrationStatus

_DOWNTIME_IN_POSTCOPY = (8, 1, 0)
"""From QEMU 8.1 ``query-migrate`` shows ``downtime`` during postcopy (7.2:
``expected-downtime``)."""
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


class Migration(Postcopy):
    """The VM's migration component: both sides, one migration at a time."""

    def poll(self) -> list[Event]:
        """Play the migration thread's steps that are due, each at its own time."""
        out: list[Event] = []
        for _ in range(1000):  # each step moves on; a bound against a model mistake
            due = self.next_deadline()
            if due is None or due > self.host.clock() or self._step is None:
                return out
            # a step happens at its own time, however late the machine is polled
            self._at = due
            try:
                out += STEPS[self._step](self)  # each step says what comes next
            finally:
                self._at = None
        return out

    # --- capabilities and parameters --------------------------------------------------

    @on_command("migrate-set-capabilities")
    def migrate_set_capabilities(self, args: Mapping[str, Any]) -> Outcome:
        if self.status in RUNNING:
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

    # --- query-migrate ----------------------------------------------------------------

    @on_command("query-migrate")
    def query_migrate(self, _args: Mapping[str, Any]) -> Outcome:
        self._advance()
        status = self.status
        if status == _M.NONE:
            return Outcome(self.incoming_info() if self.incoming != _M.NONE else {})
        info: dict[str, Any] = {"status": str(status)}
        if status == _M.SETUP:
            return Outcome(info)
        if status in (_M.FAILED, _M.CANCELLED):
            if self.error is not None and status == _M.FAILED:
                info["error-desc"] = self.error
            return Outcome(info)
        now = self._now()
        info["ram"] = self._ram(now)
        version = self.host.profile.version
        if status == _M.COMPLETED:
            info["total-time"] = round((self.ended_at - self.start) * 1000)
        else:
            info["total-time"] = round((now - self.start) * 1000)
        if status == _M.COMPLETED or (
            status in POSTCOPY_STATES and version >= _DOWNTIME_IN_POSTCOPY
        ):
            info["downtime"] = self.downtime_ms
        else:
            info["expected-downtime"] = self._expected_downtime()
        info["setup-time"] = self.setup_ms
        if self.error is not None and version >= ERROR_ANY_STATE:
            info["error-desc"] = self.error
        return Outcome(only(self.fields(None), info))

    # --- causes ----------------------------------------------------------------------

    def cause_error(self, cause: Any) -> str | None:
        if isinstance(cause, MigrationTargetLost) and self.status not in RUNNING:
            return f"no migration is under way (its status is {self.status})"
        if isinstance(cause, MigrationTargetLost) and self.status in (
            _M.POSTCOPY_PAUSED,
            _M.POSTCOPY_RECOVER_SETUP,
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


STEPS: Mapping[Step, Callable[[Migration], list[Event]]] = {
    Step.ACTIVE: Migration._activate,
    Step.ROUND: Migration._round_done,
    Step.CONTINUE: Migration._continue,
    Step.COMPLETED: Migration._completed,
    Step.FAILED: Migration._failed,
    Step.BROKEN_SETUP: Migration._broken_setup,
    Step.CANCELLED: Migration._cancelled,
    Step.POSTCOPY: Migration._postcopy_start,
    Step.POSTCOPY_ROUND: Migration._postcopy_done,
    Step.PAUSED: Migration._paused,
    Step.RECOVER: Migration._recover,
    Step.UNRECOVERED: Migration._unrecovered,
}
"""What each step of the migration thread does (``Migration._step``), each saying what
comes after it."""
