"""Live migration: QEMU's precopy state machine on the virtual clock, and the destination.

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

A VM started with ``-incoming`` (``VmConfig.incoming``) is a destination: it waits
in ``inmigrate`` for its source, listening where ``migrate-incoming`` (or its
command line) says, and runs once its state came (:class:`IncomingCompleted`).
Where the host has a network (:mod:`qmpsim.runtime.migration_link`) the
:attr:`Migration.connect` and :attr:`Migration.listen` hooks make both ends real
sockets; without one, any destination accepts the stream.

What a guestless ``-M pc`` reaches — the events and their order, the run
states, ``query-migrate``'s members per status, the refusals and their texts —
is compared with QEMU 7.2 and 10.0 in ``tests/test_diff_migration.py``; the
dirty rate and convergence are modelled from ``migration/migration.c`` and
``migration/ram.c``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .component import Component, on_cause, on_command
from .fds import DescriptorChannel, Descriptors
from .migration_uri import PARSE_BEFORE_SETUP, Bad, channel_uri, parse, socket_address
from .values import CommandError, Event, Outcome

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

_RUNNING = ("setup", "active", "pre-switchover", "device", "cancelling", "postcopy-active")
"""``migration_is_running()``: states in which a new migration is refused."""


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


@dataclass(frozen=True)
class IncomingConnected:
    """The source of an incoming migration connected and began to send (``active``)."""


@dataclass(frozen=True)
class IncomingCompleted:
    """The incoming stream ended with QEMU's end-of-stream marker: the VM's state is
    loaded; it runs (RESUME) unless it was started paused (``-S``) and not continued."""


@dataclass(frozen=True)
class IncomingFailed:
    """The incoming stream broke off (the source failed, was cancelled or went away):
    ``failed``, and QEMU, which cannot run a half-loaded VM, exits."""


class Channel(Protocol):
    """An outgoing migration's connection, where the host has a network (a linked
    simulator): the stream's end is written, or the connection dropped."""

    def finish(self) -> None:
        """The source completed: write the end-of-stream marker and close."""

    def abort(self) -> None:
        """The source failed or was cancelled: close without the marker."""


Connect = Callable[[str, str], "str | Channel | None"]
"""How the host reaches a destination: ``(transport, address)`` to ``None`` (a
simulated destination accepts), a :class:`Channel` (a real connection), or QEMU's
text for why not (``Failed to connect to …``), which fails the migration after
``migrate`` has returned."""

Listen = Callable[[str, str], "str | dict[str, Any] | None"]
"""How the host listens for an incoming migration: ``(transport, address)`` to the
``socket-address`` entry it listens on (``None``: the model makes it from the
address), or QEMU's text for why it cannot."""


def reachable(transport: str, address: str) -> str | Channel | None:
    """The default destination: whatever the URI names accepts the stream (a
    descriptor is closed when the migration ends)."""
    return DescriptorChannel.open(int(address)) if transport == "fd" else None


def listening(_transport: str, _address: str) -> str | dict[str, Any] | None:
    """The default listener: the address is the VM's."""
    return None


class Migration(Component):
    """The VM's outgoing migration: capabilities, parameters, one migration at a time."""

    connect: Connect = staticmethod(reachable)
    """Set by whoever gives the VM a network (a linked simulator, a test)."""
    listen: Listen = staticmethod(listening)
    """Likewise, for the destination's side."""

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
        self._clear_counters()
        # the destination's side (``-incoming``)
        self.incoming = "none"
        self.listening_on: list[dict[str, Any]] = []
        self.autostart = self.host.vm.initial_state == "running"
        self.incoming_uri: str | None = getattr(self.host.vm, "incoming", None)
        if self.incoming_uri is not None:
            self.host.status = "inmigrate"
            if self.incoming_uri != "defer":
                self._listen(self.incoming_uri)

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

    def _round_seconds(self) -> float:
        zero = self.round_pages - self.round_normal
        return (self.round_normal * PAGE_COST + zero * ZERO_PAGE_COST) / self.bandwidth

    def _advance(self) -> None:
        """Send what the time since the last look allowed; the guest dirties meanwhile."""
        now = self._now()
        elapsed = max(0.0, now - self.since)
        self.since = now
        if self.status not in ("active", "cancelling") or self._step != "round":
            return
        total = self._round_seconds()
        if self.dirty_rate:
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
        if self.host.running:
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
        refused = self._refusal()
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

    def _refusal(self) -> str | None:
        """``migrate_prepare()``'s checks, in its order."""
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
        if self._step == "round" and self.status == "active":
            return self.since + self._round_seconds()
        return self._due

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
        if self.was_running:
            self.host.status = "running"
            return [self.host.event("RESUME")]
        self.host.status = "postmigrate"
        return []

    # --- commands during a migration ----------------------------------------------------

    @on_command("migrate_cancel")
    def migrate_cancel(self, _args: Mapping[str, Any]) -> Outcome:
        if self.status not in _RUNNING or self.status == "cancelling":
            return Outcome({})
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
        return Outcome(_only(self._fields(None, "query-migrate-parameters"), self.params))

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
        return Outcome({})

    @on_command("migrate-pause")
    def migrate_pause(self, _args: Mapping[str, Any]) -> Outcome:
        states = "postcopy-active"
        if self.host.profile.version >= (8, 1, 0):
            states = "postcopy-active or postcopy-recover"
        return Outcome(
            CommandError(
                "GenericError", f"migrate-pause is currently only supported during {states} state"
            )
        )

    @on_command("migrate-recover")
    def migrate_recover(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome(
            CommandError("GenericError", "Migrate recover can only be run when postcopy is paused.")
        )

    # --- the destination's side ---------------------------------------------------------

    @on_command("migrate-incoming")
    def migrate_incoming(self, args: Mapping[str, Any]) -> Outcome:
        uri = args.get("uri")
        if uri is None:
            uri = channel_uri(args.get("channels") or [])
        if self.incoming_uri is None:
            return Outcome(
                CommandError("GenericError", "'-incoming' was not specified on the command line")
            )
        if self.incoming_uri != "defer" or self.incoming != "none":
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
        events = self._set_incoming("setup")
        problem = self._listen(str(uri))
        if problem is not None:
            self.incoming = "none"  # it may be tried again
            return Outcome(CommandError("GenericError", problem), tuple(events))
        return Outcome({}, tuple(events))

    def _listen(self, uri: str) -> str | None:
        """Listen on ``uri`` for the source; why not, in QEMU's words."""
        parsed = parse(uri, self.host.profile.version, incoming=True)
        if isinstance(parsed, Bad):
            return parsed.text
        transport, address = parsed
        where = self.listen(transport, address)
        if isinstance(where, str):
            return where
        self.incoming = "setup"
        if where is None:
            where = socket_address(transport, address)
        self.listening_on = [] if where is None else [where]
        return None

    def relisten(self) -> str | None:
        """Listen again on the command line's ``-incoming`` URI (a host that has just
        given the VM a network does this)."""
        if self.incoming_uri in (None, "defer") or self.incoming != "setup":
            return None
        return self._listen(str(self.incoming_uri))

    def _set_incoming(self, status: str) -> list[Event]:
        self.incoming = status
        if not self._events_on():
            return []
        return [self.host.event("MIGRATION", {"status": status})]

    def _incoming_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if self.incoming != "setup" or self.host.profile.version >= (8, 0, 0):
            info["status"] = self.incoming
        if self.incoming in ("setup", "active") and self.listening_on:
            info["socket-address"] = list(self.listening_on)
        return _only(self._fields(None), info)

    @on_cause(IncomingConnected)
    def incoming_connected(self, _c: IncomingConnected) -> list[Event]:
        return self._set_incoming("active")

    @on_cause(IncomingCompleted)
    def incoming_completed(self, _c: IncomingCompleted) -> list[Event]:
        events: list[Event] = []
        if self.autostart:
            self.host.status = "running"
            events.append(self.host.event("RESUME"))
        else:
            self.host.status = "paused"
        return events + self._set_incoming("completed")

    @on_cause(IncomingFailed)
    def incoming_failed(self, _c: IncomingFailed) -> list[Event]:
        events = self._set_incoming("failed")
        self.host.exited = True  # "load of migration failed": QEMU exits
        return events

    def hold(self, autostart: bool) -> None:
        """``cont`` (``stop``) on a VM waiting for its state: run (or not) once it came."""
        self.autostart = autostart

    # --- query-migrate ----------------------------------------------------------------

    @on_command("query-migrate")
    def query_migrate(self, _args: Mapping[str, Any]) -> Outcome:
        self._advance()
        status = self.status
        if status == "none":
            return Outcome(self._incoming_info() if self.incoming != "none" else {})
        info: dict[str, Any] = {"status": status}
        if status == "setup":
            return Outcome(info)
        if status in ("failed", "cancelled"):
            if self.error is not None and status == "failed":
                info["error-desc"] = self.error
            return Outcome(info)
        now = self._now()
        info["ram"] = self._ram(now)
        if status == "completed":
            info["total-time"] = round((self.ended_at - self.start) * 1000)
            info["downtime"] = self.downtime_ms
        else:
            info["total-time"] = round((now - self.start) * 1000)
            info["expected-downtime"] = self._expected_downtime()
        info["setup-time"] = self.setup_ms
        return Outcome(_only(self._fields(None), info))

    def _expected_downtime(self) -> int:
        limit = int(self.params.get("downtime-limit", 300))
        if self.pass_ <= 1:
            return limit
        # what is left to send, at the measured bandwidth
        return round((self.round_pages + self.dirty) * PAGE * 1000 / self.bandwidth)

    def _ram(self, now: float) -> dict[str, Any]:
        done = self.status == "completed"
        seconds = max((self.ended_at if done else now) - self.start, 1e-3)
        moving = self.status == "active"
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
            "postcopy-requests": 0,
            "page-size": PAGE,
            "multifd-bytes": 0,
            "pages-per-second": round(self.bandwidth / PAGE_COST) if moving else 0,
            "precopy-bytes": round(self.precopy),
            "downtime-bytes": round(self.downtime_bytes),
            "postcopy-bytes": 0,
            "dirty-sync-missed-zero-copy": 0,
        }
        return _only(self._fields("ram"), ram)

    def _fields(self, member: str | None, command: str = "query-migrate") -> tuple[str, ...]:
        """The members of ``command``'s answer (``MigrationInfo``, or its ``member``) in
        this QEMU, in order."""
        spec = self.host.profile.commands.get(command)
        kind: Any = spec.returns if spec is not None else None
        if member is not None and kind is not None:
            kind = next((f.type for f in kind.fields if f.name == member), None)
        return tuple(f.name for f in getattr(kind, "fields", ()))

    # --- causes ----------------------------------------------------------------------

    def cause_error(self, cause: Any) -> str | None:
        if isinstance(cause, MigrationTargetLost) and self.status not in _RUNNING:
            return f"no migration is under way (its status is {self.status})"
        if isinstance(cause, IncomingConnected) and self.incoming != "setup":
            return f"the VM does not wait for a source (incoming migration {self.incoming})"
        if isinstance(cause, IncomingCompleted | IncomingFailed) and self.incoming != "active":
            return f"no incoming migration is under way (it is {self.incoming})"
        if isinstance(cause, GuestDirtiesMemory) and cause.rate < 0:
            return f"rate {cause.rate} is negative"
        return None

    @on_cause(GuestDirtiesMemory)
    def guest_dirties_memory(self, c: GuestDirtiesMemory) -> list[Event]:
        self._advance()
        self.dirty_rate = c.rate
        return []

    @on_cause(MigrationTargetLost)
    def target_lost(self, c: MigrationTargetLost) -> list[Event]:
        self._advance()
        self.error = c.error or "Unable to write to socket: Broken pipe"
        return self._failed()


def _only(names: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` in QEMU's member order, without members this version lacks."""
    if not names:
        return values
    return {n: values[n] for n in names if n in values}


# what the migration thread does next, by name (Migration._step)
_STEPS: dict[str, Callable[[Migration], list[Event]]] = {
    "active": Migration._activate,
    "round": Migration._round_done,
    "continue": Migration._continue,
    "completed": Migration._completed,
    "failed": Migration._failed,
    "broken setup": Migration._broken_setup,
    "cancelled": Migration._cancelled,
}
