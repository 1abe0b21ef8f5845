"""A migration's source in postcopy: ``migrate-start-postcopy``, ``migrate-pause`` and
``migrate`` ``resume: true``.

With the ``postcopy-ram`` capability, ``migrate-start-postcopy`` hands the VM over
before its RAM is all sent: the source stops (STOP, ``postcopy-active``, a last
MIGRATION_PASS), the destination runs, and the source sends the rest at
``max-postcopy-bandwidth`` until ``completed`` (``postmigrate``).  A connection lost
then (``migrate-pause``, a destination that goes away) leaves both sides
``postcopy-paused`` rather than ``failed``: neither can go back, so they wait for
``migrate-recover`` on the destination and ``migrate`` ``resume: true`` on the source
(``postcopy-recover``, 9.1's ``postcopy-recover-setup``), then go on.  The
destination's side of this is :mod:`qmpsim.vm.migration_incoming`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .component import on_command
from .migration_incoming import RECOVER_SETUP
from .migration_outgoing import SETUP_SECONDS, Outgoing
from .migration_ram import DEVICE_STATE, Step
from .migration_states import ALIVE, MigrationStatus
from .migration_uri import Bad, parse
from .values import CommandError, Event, Outcome

_M = MigrationStatus

_DEVICE_BEFORE_POSTCOPY = (9, 0, 0)
"""From QEMU 9.0 postcopy stops the VM and goes through ``device`` before
``postcopy-active`` (7.2: ``postcopy-active``, then STOP)."""
ERROR_ANY_STATE = (8, 2, 0)
"""From QEMU 8.2 ``query-migrate`` shows the error in any state (``postcopy-paused``),
and ``migrate-pause`` leaves one (7.2: only a failed migration's)."""
_PAUSED_BY_USER = "Postcopy migration is paused by the user"


class Postcopy(Outgoing):
    """The source's postcopy: the switch, a pause, a recovery."""

    @on_command("migrate-start-postcopy")
    def migrate_start_postcopy(self, _args: Mapping[str, Any]) -> Outcome:
        if not self.caps.get("postcopy-ram", False):
            return Outcome(
                CommandError(
                    "GenericError",
                    "Enable postcopy with migrate_set_capability before the start of migration",
                )
            )
        if self.status == _M.NONE:
            return Outcome(
                CommandError(
                    "GenericError", "Postcopy must be started after migration has been started"
                )
            )
        # taken at the migration thread's next iteration; too late is not an error
        if not self.start_postcopy and self.status in (_M.SETUP, _M.ACTIVE):
            self.start_postcopy = True
            if self._step is Step.ROUND:
                self._advance()
                self._schedule(Step.POSTCOPY)
        return Outcome({})

    @on_command("migrate-pause")
    def migrate_pause(self, _args: Mapping[str, Any]) -> Outcome:
        if self.status in ALIVE:
            # the source shuts its connection; the migration thread notices after the reply
            self._advance()
            if self.host.profile.version >= ERROR_ANY_STATE:
                self.error = _PAUSED_BY_USER
            self._schedule(Step.PAUSED)
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
            events += self._set(_M.POSTCOPY_ACTIVE)
        events += self.host.stop("finish-migrate")
        self.host.status = "finish-migrate"  # where the source stays until it completes
        if pause:
            events += self._set(_M.PRE_SWITCHOVER)
            self._step = None  # migrate-continue moves on
            return events
        return events + self._hand_over()

    def _hand_over(self) -> list[Event]:
        """The last sync (the discard bitmap), the device state sent: the destination runs."""
        events: list[Event] = []
        if self.host.profile.version >= _DEVICE_BEFORE_POSTCOPY:
            events += self._set(_M.DEVICE) + self._sync() + self._set(_M.POSTCOPY_ACTIVE)
        else:
            if self.status != _M.POSTCOPY_ACTIVE:
                events += self._set(_M.POSTCOPY_ACTIVE)
            events += self._sync()
        self.transferred += DEVICE_STATE
        self.postcopy_bytes += DEVICE_STATE
        self.requests += 1  # the destination's first fault, as it starts
        now = self._now()
        self.downtime_ms = round((now - self.stopped_at) * 1000) + 1
        self.since = now
        self._step = Step.POSTCOPY_ROUND
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
        self._step = Step.POSTCOPY_ROUND  # what goes on once recovered
        return self._set(_M.POSTCOPY_PAUSED)

    def _resume(self, uri: str) -> Outcome:
        """``migrate`` ``resume: true``: reconnect a paused postcopy."""
        if self.status != _M.POSTCOPY_PAUSED:
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
            events += self._set(_M.POSTCOPY_RECOVER_SETUP)
        reached = self.connect(*parsed)
        if isinstance(reached, str):
            self.error = reached
            self._schedule(Step.UNRECOVERED)
        else:
            self.channel = reached
            self._schedule(Step.RECOVER, SETUP_SECONDS)
        return Outcome({}, tuple(events))

    def _recover(self) -> list[Event]:
        """Both sides agreed on what is left (the destination's received bitmap): go on."""
        if self.host.profile.version >= ERROR_ANY_STATE:
            self.error = None
        self.since = self._now()
        self._step = Step.POSTCOPY_ROUND
        return self._set(_M.POSTCOPY_RECOVER) + self._set(_M.POSTCOPY_ACTIVE)

    def _unrecovered(self) -> list[Event]:
        """The new connection could not be made: paused again (9.1 says so)."""
        self._step = Step.POSTCOPY_ROUND
        if self.status == _M.POSTCOPY_RECOVER_SETUP:
            return self._set(_M.POSTCOPY_PAUSED)
        return []

    def _continue(self) -> list[Event]:
        """After ``migrate-continue``: the switch to postcopy, or precopy's last pass."""
        if self.postcopy:
            return self._hand_over()
        return self._set(_M.DEVICE) + self._final_pass()
