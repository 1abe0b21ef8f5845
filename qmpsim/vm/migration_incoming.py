"""The destination's side of a live migration: ``-incoming``, ``migrate-incoming``, the
``inmigrate`` run state, and postcopy as the destination lives it.

A VM started with ``-incoming`` (``VmConfig.incoming``) waits in ``inmigrate`` for its
source, listening where ``migrate-incoming`` (or its command line) says, and runs once
its state came (:class:`IncomingCompleted`).  With postcopy the source hands the VM
over before its RAM has all come (:class:`IncomingPostcopy`): the destination says
``postcopy-active`` and runs at once (RESUME), fetching the rest as it goes; a stream
that breaks off then leaves it ``postcopy-paused`` — running, waiting for
``migrate-recover`` and a source that resumes — where a precopy destination would fail
and exit.  Watched on two real QEMUs 7.2 and 10.0 (see docs/migration.md).

:class:`Incoming` is the first layer of :class:`qmpsim.vm.migration.Migration`, the
one component that answers the migration commands: the capabilities are the same for
both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .component import Component, on_cause, on_command
from .fds import Descriptors
from .migration_states import ALIVE, POSTCOPY_STATES, MigrationStatus, move
from .migration_uri import PARSE_BEFORE_SETUP, Bad, channel_uri, parse, socket_address
from .values import CommandError, Event, Outcome

_M = MigrationStatus

RECOVER_SETUP = (9, 1, 0)
"""From QEMU 9.1 recovering goes through ``postcopy-recover-setup``, and ``migrate-recover``
no longer announces a MIGRATION ``setup`` it does not enter (7.2 does, 10.0 does not)."""


@dataclass(frozen=True)
class IncomingConnected:
    """The source of an incoming migration connected and began to send (``active``), or,
    in ``postcopy-paused``, a resuming source reconnected (``postcopy-recover``, then
    ``postcopy-active``)."""


@dataclass(frozen=True)
class IncomingPostcopy:
    """The source switched to postcopy (QEMU's ``POSTCOPY_LISTEN`` and ``POSTCOPY_RUN``
    commands in the stream): ``postcopy-active``, and the VM runs (RESUME) unless it was
    started paused (``-S``) and not continued."""


@dataclass(frozen=True)
class IncomingCompleted:
    """The incoming stream ended with QEMU's end-of-stream marker: the VM's state is
    loaded; it runs (RESUME) unless it was started paused (``-S``) and not continued (a
    postcopy destination already runs)."""


@dataclass(frozen=True)
class IncomingFailed:
    """The incoming stream broke off (the source failed, was cancelled or went away):
    ``failed``, and QEMU, which cannot run a half-loaded VM, exits; in postcopy the VM
    runs on, ``postcopy-paused``."""


Listen = Callable[[str, str], "str | dict[str, Any] | None"]
"""How the host listens for an incoming migration: ``(transport, address)`` to the
``socket-address`` entry it listens on (``None``: the model makes it from the
address), or QEMU's text for why it cannot."""


def listening(_transport: str, _address: str) -> str | dict[str, Any] | None:
    """The default listener: the address is the VM's."""
    return None


def only(names: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` in QEMU's member order, without members this version lacks."""
    if not names:
        return values
    return {n: values[n] for n in names if n in values}


class Incoming(Component):
    """The destination's side of the migration component."""

    listen: Listen = staticmethod(listening)
    """Set by whoever gives the VM a network (a linked simulator, a test)."""
    incoming_stop: Callable[[], None] | None = None
    """Shuts the connection a source migrates in on (set while a real one is open)."""
    caps: dict[str, bool]

    def reset_incoming(self) -> None:
        """Back to the VM as described: waiting in ``inmigrate`` when started with
        ``-incoming``."""
        self.incoming = _M.NONE
        self.listening_on: list[dict[str, Any]] = []
        self.autostart = self.host.vm.initial_state == "running"
        self.incoming_uri: str | None = getattr(self.host.vm, "incoming", None)
        if self.incoming_uri is not None:
            self.host.status = "inmigrate"
            if self.incoming_uri != "defer":
                self._listen(self.incoming_uri)

    def _events_on(self) -> bool:
        return self.caps.get("events", False)

    def fields(self, member: str | None, command: str = "query-migrate") -> tuple[str, ...]:
        """The members of ``command``'s answer (``MigrationInfo``, or its ``member``) in
        this QEMU, in order."""
        spec = self.host.profile.commands.get(command)
        kind: Any = spec.returns if spec is not None else None
        if member is not None and kind is not None:
            kind = next((f.type for f in kind.fields if f.name == member), None)
        return tuple(f.name for f in getattr(kind, "fields", ()))

    @on_command("migrate-incoming")
    def migrate_incoming(self, args: Mapping[str, Any]) -> Outcome:
        uri = args.get("uri")
        if uri is None:
            uri = channel_uri(args.get("channels") or [])
        if self.incoming_uri is None:
            return Outcome(
                CommandError("GenericError", "'-incoming' was not specified on the command line")
            )
        if self.incoming_uri != "defer" or self.incoming != _M.NONE:
            return Outcome(
                CommandError("GenericError", "The incoming migration has already been started")
            )
        if self.host.status != "inmigrate":
            return Outcome(
                CommandError("GenericError", "'-incoming' was not specified on the command line")
            )
        early = self.host.profile.version >= PARSE_BEFORE_SETUP
        parsed = parse(str(uri), self.host.profile.version, incoming=True)
        if isinstance(parsed, Bad) and early:
            return Outcome(CommandError("GenericError", parsed.text))
        events = self._set_incoming(_M.SETUP)
        problem = self._listen(str(uri))
        if problem is not None:
            # not a move: QEMU never entered the setup it announced, and it may be tried
            # again
            self.incoming = _M.NONE
            return Outcome(CommandError("GenericError", problem), tuple(events))
        return Outcome({}, tuple(events))

    @on_command("migrate-recover")
    def migrate_recover(self, args: Mapping[str, Any]) -> Outcome:
        """Listen anew for the source of a paused postcopy, which resumes with
        ``migrate`` ``resume: true``."""
        if self.incoming != _M.POSTCOPY_PAUSED:
            return Outcome(
                CommandError(
                    "GenericError", "Migrate recover can only be run when postcopy is paused."
                )
            )
        events: list[Event] = []
        if self.host.profile.version < RECOVER_SETUP and self._events_on():
            # qemu_start_incoming_migration() announced setup, whatever the state
            events.append(self.host.event("MIGRATION", {"status": str(_M.SETUP)}))
        problem = self._listen(str(args.get("uri", "")))
        if problem is not None:
            return Outcome(CommandError("GenericError", problem), tuple(events))
        return Outcome({}, tuple(events))

    def _listen(self, uri: str) -> str | None:
        """Listen on ``uri`` for the source; why not, in QEMU's words."""
        parsed = parse(uri, self.host.profile.version, incoming=True)
        if isinstance(parsed, Bad):
            return parsed.text
        transport, address = parsed
        if transport == "fd" and not address[:1].isdigit():
            # monitor_fd_param(): a name is taken from getfd's table (a number is the
            # process's own descriptor)
            taken = self.host.part(Descriptors).take(address)
            if isinstance(taken, str):
                return taken
            address = str(taken)
        where = self.listen(transport, address)
        if isinstance(where, str):
            return where
        if self.incoming == _M.NONE:  # -incoming on the command line: no event yet
            self._set_incoming(_M.SETUP, announce=False)
        if where is None:
            where = socket_address(transport, address)
        self.listening_on = [] if where is None else [where]
        return None

    def relisten(self) -> str | None:
        """Listen again on the command line's ``-incoming`` URI (a host that has just
        given the VM a network does this)."""
        if self.incoming_uri in (None, "defer") or self.incoming != _M.SETUP:
            return None
        return self._listen(str(self.incoming_uri))

    def _set_incoming(self, status: MigrationStatus, *, announce: bool = True) -> list[Event]:
        """The destination's status moves (only as ``MIGRATION_MOVES`` allows), said with
        a MIGRATION event when the ``events`` capability is on."""
        self.incoming = move(self.incoming, status)
        if not announce or not self._events_on():
            return []
        return [self.host.event("MIGRATION", {"status": str(status)})]

    def incoming_info(self) -> dict[str, Any]:
        """``query-migrate`` on the destination."""
        info: dict[str, Any] = {}
        if self.incoming != _M.SETUP or self.host.profile.version >= (8, 0, 0):
            info["status"] = str(self.incoming)
        if self.incoming in (_M.SETUP, _M.ACTIVE, *POSTCOPY_STATES) and self.listening_on:
            info["socket-address"] = list(self.listening_on)
        return only(self.fields(None), info)

    def pause_incoming(self) -> list[Event]:
        """``migrate-pause`` on a destination in postcopy: its end of the stream shut."""
        events = self._set_incoming(_M.POSTCOPY_PAUSED)
        if self.incoming_stop is not None:
            self.incoming_stop()
        return events

    @on_cause(IncomingConnected)
    def incoming_connected(self, _c: IncomingConnected) -> list[Event]:
        if self.incoming == _M.POSTCOPY_PAUSED:
            # the source resumed: both ends exchange the bitmap, then go on
            return self._set_incoming(_M.POSTCOPY_RECOVER) + self._set_incoming(_M.POSTCOPY_ACTIVE)
        return self._set_incoming(_M.ACTIVE)

    @on_cause(IncomingPostcopy)
    def incoming_postcopy(self, _c: IncomingPostcopy) -> list[Event]:
        return self._set_incoming(_M.POSTCOPY_ACTIVE) + self._start_guest()

    @on_cause(IncomingCompleted)
    def incoming_completed(self, _c: IncomingCompleted) -> list[Event]:
        events = [] if self.incoming == _M.POSTCOPY_ACTIVE else self._start_guest()
        return events + self._set_incoming(_M.COMPLETED)

    def _start_guest(self) -> list[Event]:
        if self.autostart:
            self.host.status = "running"
            return [self.host.event("RESUME")]
        self.host.status = "paused"
        return []

    @on_cause(IncomingFailed)
    def incoming_failed(self, _c: IncomingFailed) -> list[Event]:
        if self.incoming in ALIVE:
            return self._set_incoming(_M.POSTCOPY_PAUSED)  # the guest runs on
        events = self._set_incoming(_M.FAILED)
        self.host.exited = True  # "load of migration failed": QEMU exits
        return events

    def hold(self, autostart: bool) -> None:
        """``cont`` (``stop``) on a VM waiting for its state: run (or not) once it came."""
        self.autostart = autostart

    def incoming_cause_error(self, cause: Any) -> str | None:
        """Why one of the destination's causes cannot happen now."""
        if isinstance(cause, IncomingConnected) and self.incoming not in (
            _M.SETUP,
            _M.POSTCOPY_PAUSED,
        ):
            return f"the VM does not wait for a source (incoming migration {self.incoming})"
        if isinstance(cause, IncomingPostcopy) and self.incoming != _M.ACTIVE:
            return f"no incoming precopy is under way (it is {self.incoming})"
        if isinstance(cause, IncomingCompleted) and self.incoming not in (
            _M.ACTIVE,
            _M.POSTCOPY_ACTIVE,
        ):
            return f"no incoming migration is under way (it is {self.incoming})"
        if isinstance(cause, IncomingFailed) and self.incoming not in (_M.ACTIVE, *ALIVE):
            return f"no incoming migration is under way (it is {self.incoming})"
        return None
