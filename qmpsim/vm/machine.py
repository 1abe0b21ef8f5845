"""The VM model's façade: one machine over its components, and what they share.

The machine is sans-I/O and clock-driven: time comes from an injected clock and
randomness from an injected ``random.Random``.  It answers commands with an
:class:`Outcome` (the events the command caused, then the reply) and turns
*causes* (a disk error, a watchdog expiry, a VNC client arriving…) into the
conformant event sequence QEMU would emit.  Events QEMU throttles, and events
that come after a reply, wait in the machine until :meth:`Machine.poll` hands
them out; :meth:`Machine.next_deadline` says when.

Every area of the VM is a component of :mod:`qmpsim.vm` (``Machine.COMPONENTS``):
run control and power (:mod:`~qmpsim.vm.power`), the watchdog, the RTC, the
monitor's own answers, displays, guest, devices, disks, jobs, balloon, suspend
and migration; one dispatch table routes every command and cause to its handler.
The machine keeps what they share: the run state (changed only as
:mod:`qmpsim.vm.runstate`'s table allows), the throttle, the timers, the clock and
the seeded generator.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from qmpsim.errors import CatalogError
from qmpsim.qmp.profiles import (
    DEFAULT_PROFILE,
    ProfileSpec,
    fit_event_data,
    get_profile,
    validate_event,
)
from qmpsim.vm.backends import Backends
from qmpsim.vm.balloon import Balloon, BalloonResized
from qmpsim.vm.block import BlockGraph, DiskError, DiskIo, DiskRepaired, TrayMoved
from qmpsim.vm.causes import GUEST_CAUSES, Cause
from qmpsim.vm.component import (
    Action,
    Component,
    Route,
    Timer,
    Timers,
    Unmet,
    dispatch_table,
)
from qmpsim.vm.description import ChardevConfig, DeviceConfig, VmConfig
from qmpsim.vm.devices import DeviceEjected, Devices, UnplugRefused
from qmpsim.vm.display import (
    Display,
    SpiceConfig,
    SpiceConnect,
    SpiceDisconnect,
    SpiceInitialize,
    VncConfig,
    VncConnect,
    VncDisconnect,
    VncInitialize,
)
from qmpsim.vm.fds import Descriptors
from qmpsim.vm.guest import Guest, GuestConfig
from qmpsim.vm.images import (
    DEFAULT_SIZE,
    DISK_FORMATS,
    ERROR_POLICIES,
    MEDIA,
    DiskConfig,
    ImageConfig,
)
from qmpsim.vm.job_kinds import JobStarts
from qmpsim.vm.jobs import JobError, Jobs
from qmpsim.vm.migration import (
    GuestDirtiesMemory,
    IncomingCompleted,
    IncomingConnected,
    IncomingFailed,
    IncomingPostcopy,
    Migration,
    MigrationTargetLost,
)
from qmpsim.vm.monitor import Monitor
from qmpsim.vm.power import (
    GuestCrashLoaded,
    GuestPanic,
    GuestPowerdown,
    GuestReset,
    GuestShutdown,
    HostSignal,
    Power,
)
from qmpsim.vm.replies import GENERATED, LOADS_MODULES, fit_reply, unmodelled_reply
from qmpsim.vm.rtc import RTC_PATHS, Rtc, RtcChange, rtc_path
from qmpsim.vm.runstate import INITIAL_STATES, RUN_STATES, RunState, rules
from qmpsim.vm.suspend import GuestSuspend, Suspend
from qmpsim.vm.throttle import Throttle
from qmpsim.vm.values import (
    Clock,
    CommandError,
    Event,
    MachineError,
    ManualClock,
    Outcome,
    UnmodelledCommand,
    virtual_clock,
)
from qmpsim.vm.watchdog import Watchdog, WatchdogAction, WatchdogExpired

__all__ = [  # the names other modules and users import from here
    "DEFAULT_SIZE",
    "DISK_FORMATS",
    "ERROR_POLICIES",
    "INITIAL_STATES",
    "MEDIA",
    "RTC_PATHS",
    "RUN_STATES",
    "Balloon",
    "BalloonResized",
    "Cause",
    "ChardevConfig",
    "Clock",
    "CommandError",
    "DeviceConfig",
    "DeviceEjected",
    "Devices",
    "DiskConfig",
    "DiskError",
    "DiskIo",
    "DiskRepaired",
    "Event",
    "GuestConfig",
    "GuestCrashLoaded",
    "GuestDirtiesMemory",
    "GuestPanic",
    "GuestPowerdown",
    "GuestReset",
    "GuestShutdown",
    "GuestSuspend",
    "HostSignal",
    "ImageConfig",
    "IncomingCompleted",
    "IncomingConnected",
    "IncomingFailed",
    "IncomingPostcopy",
    "JobError",
    "Jobs",
    "Machine",
    "MachineError",
    "ManualClock",
    "MigrationTargetLost",
    "Outcome",
    "RtcChange",
    "RunState",
    "SpiceConfig",
    "SpiceConnect",
    "SpiceDisconnect",
    "SpiceInitialize",
    "TrayMoved",
    "UnmodelledCommand",
    "UnplugRefused",
    "VmConfig",
    "VncConfig",
    "VncConnect",
    "VncDisconnect",
    "VncInitialize",
    "WatchdogAction",
    "WatchdogExpired",
    "modelled_commands",
    "rtc_path",
    "virtual_clock",
]

_C = TypeVar("_C", bound=Component)


# --- the machine -----------------------------------------------------------------


class _Generator:
    """The ``rng`` of a :class:`Machine`: the generator given, or one made from the
    machine's seed the first time it is read (a descriptor-typed dataclass field)."""

    def __get__(self, machine: Machine | None, owner: type | None = None) -> random.Random:
        if machine is None:
            return None  # type: ignore[return-value]  # the field's default: none given
        made: random.Random | None = machine.__dict__["_rng"]
        if made is None:
            made = machine.__dict__["_rng"] = random.Random(machine.seed or 0)
        return made

    def __set__(self, machine: Machine, value: random.Random | None) -> None:
        machine.__dict__["_rng"] = value


@dataclass
class Machine:
    """One simulated VM: a façade over its components (:mod:`qmpsim.vm.component`).

    Its run state (:attr:`status`) starts as ``vm.initial_state`` and is the
    model's to change: it is not a constructor argument.
    """

    COMPONENTS: ClassVar[tuple[type[Component], ...]] = (
        Power,
        Watchdog,
        Rtc,
        Monitor,
        Display,
        Guest,
        Backends,
        Devices,
        BlockGraph,
        Jobs,
        JobStarts,
        Balloon,
        Suspend,
        Migration,
        Descriptors,
    )
    """The parts every machine is built of; each declares its commands and causes."""

    vm: VmConfig = field(default_factory=VmConfig)
    profile: ProfileSpec = field(default_factory=lambda: get_profile(DEFAULT_PROFILE))
    clock: Clock = time.time
    rng: _Generator = _Generator()
    """The generator of what QEMU picks at random (client ports, connection ids);
    when none is given, one made from ``seed`` when the machine first draws."""
    seed: int | None = None
    """The seed of the generator when none is given (0 by default); a reset makes
    it again rather than rewinding a copy (a fleet holds thousands of machines)."""
    strict_commands: bool = False
    """Refuse (:class:`UnmodelledCommand`) a command whose reply would be generated."""

    def __post_init__(self) -> None:
        # A generator given is rewound from a copy of its start (a copy, not
        # getstate(): the state tuple holds 625 Python ints, ~23 KB, ten times the
        # generator's own ~2.5 KB); one made from the seed is simply made again.
        given = self.__dict__["_rng"]
        self._rng_start = None if given is None or self.seed is not None else copy.copy(given)
        self._commands, self._causes = _routes(type(self))
        self._parts: dict[type[Component], Component] = {k: k(self) for k in self.COMPONENTS}
        self._timers = Timers()
        self._throttle = Throttle(self)
        self.reset()

    def reset(self) -> None:
        """Back to the VM as described: initial run state, no clients, nothing pending.

        The random generator rewinds too, so a reset machine repeats its values.
        """
        if self._rng_start is None:
            self.__dict__["_rng"] = None  # made from the seed again when needed
        else:
            self.rng.setstate(self._rng_start.getstate())
        # the VM as described starts where it says (QEMU gets there from prelaunch)
        self._booting = True
        self._status = RunState(self.vm.initial_state)
        self.exited = False
        self._modules_loaded = False
        self._throttle.clear()
        self._timers.clear()
        for part in self._parts.values():
            part.reset()
        self._booting = False

    @property
    def status(self) -> RunState:
        """The run state, as ``query-status`` reports it."""
        return self._status

    @status.setter
    def status(self, state: str) -> None:
        # runstate_set(): a move QEMU's table forbids is a defect of the model
        if self._booting:
            self._status = RunState(state)
        else:
            self._status = rules(self.profile).change(self._status, state)

    @property
    def running(self) -> bool:
        """Whether the guest's vCPUs run (``query-status``'s ``running``)."""
        return self._status == RunState.RUNNING

    # --- events ---------------------------------------------------------------

    def _now(self) -> tuple[int, int]:
        now = self.clock()
        seconds = int(now)
        micro = round((now - seconds) * 1_000_000)
        if micro >= 1_000_000:
            seconds, micro = seconds + 1, micro - 1_000_000
        return seconds, micro

    def event(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """An event stamped now and validated against the profile (``CatalogError`` otherwise)."""
        seconds, micro = self._now()
        event = Event(name, data, seconds, micro)
        problems = validate_event(self.profile, event.message())
        if problems and data is not None:
            # the model builds today's data; an older QEMU's event has fewer members
            event = Event(name, fit_event_data(self.profile, name, data), seconds, micro)
            problems = validate_event(self.profile, event.message())
        if problems:
            raise CatalogError(
                f"{name} does not conform to profile {self.profile.name}: " + "; ".join(problems)
            )
        return event

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """An explicit event, validated against the profile (``CatalogError`` otherwise).

        It bypasses the model: the run state does not change and nothing is throttled.
        """
        return self.event(name, data)

    def emit_raw(self, name: str, data: Any = None) -> Event:
        """An event exactly as given, not validated: for testing how clients take bad input."""
        seconds, micro = self._now()
        return Event(name, data, seconds, micro)

    def poll(self) -> list[Event]:
        """Events that became due by the clock's current time.

        These are throttled events whose window closed, and the outcome of requests
        the devices retry after ``cont`` (which may stop the VM again).
        """
        out: list[Event] = []
        for part in self._parts.values():
            out += part.poll()
        while not self.exited and (timer := self._timers.pop_due(self.clock())) is not None:
            out += timer.action()
        return out + self._throttle.poll()

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do, on the clock's scale."""
        deadlines: list[float | None] = [self._throttle.next_deadline()]
        deadlines += (part.next_deadline() for part in self._parts.values())
        if not self.exited:  # an exited VM runs nothing more
            deadlines.append(self._timers.next_deadline())
        return min((d for d in deadlines if d is not None), default=None)

    def pending_events(self) -> list[Event]:
        """Throttled events held back, oldest first, without releasing them."""
        return self._throttle.pending()

    # --- what components use (qmpsim.vm.component.Host) ---------------------------

    def send(self, event: Event) -> list[Event]:
        """``event`` through QEMU's per-event throttle: what goes out now."""
        return self._throttle.send(event)

    def stop(self, state: str) -> list[Event]:
        """``vm_stop(state)``: STOP when the vCPUs ran, and the new run state."""
        if not self.running:
            return []
        self.status = state
        return [self.event("STOP")]

    def shutdown(self, reason: str, *, guest: bool = True) -> list[Event]:
        """SHUTDOWN, then STOP under ``-no-shutdown`` or the VM's exit."""
        out = [self.event("SHUTDOWN", self.reset_data(guest, reason))]
        if self.vm.no_shutdown:
            out += self.stop(RunState.SHUTDOWN)
        else:
            self.exited = True
        return out

    def reset_data(self, guest: bool, reason: str) -> dict[str, Any] | None:
        """SHUTDOWN/RESET data for this profile (``None`` where QEMU sent none)."""
        return {"guest": guest, "reason": reason} if self.profile.run_states else None

    def after(self, seconds: float, action: Action) -> Timer:
        """Run ``action`` ``seconds`` from now on the clock, once (a reset drops it)."""
        return self._timers.add(self.clock() + seconds, action)

    def part(self, kind: type[_C]) -> _C:
        """This machine's component of class ``kind``."""
        found = self._parts[kind]
        assert isinstance(found, kind)
        return found

    # --- causes ---------------------------------------------------------------

    def cause_unmet(self, cause: Cause) -> Unmet | None:
        """What ``cause`` needs of the VM's hardware, or of the profile, and does not find
        (``None``: nothing): on the VM as described it never happens."""
        route = self._causes.get(type(cause))
        if route is None:
            return Unmet(f"{type(cause).__name__} is not a cause this machine knows")
        return None if route.part is None else self._parts[route.part].cause_unmet(cause)

    def cause_error(self, cause: Cause) -> str | None:
        """Why ``cause`` cannot happen now (``None``: it can)."""
        unmet = self.cause_unmet(cause)
        if unmet is not None:
            return unmet.text
        if self.exited:
            return "the VM has exited"
        if isinstance(cause, GUEST_CAUSES) and not self.running:
            return f"{type(cause).__name__} needs a running guest (the VM is {self.status})"
        route = self._causes[type(cause)]
        return None if route.part is None else self._parts[route.part].cause_error(cause)

    def order_error(self, cause: Cause) -> str | None:
        """Why ``cause`` cannot happen now, when no command a client may send changes
        that (a VNC client that is not connected): a scenario that has it here is in the
        wrong order.  ``None`` when it can happen, or only the client can tell."""
        route = self._causes.get(type(cause))
        part = None if route is None or route.part is None else self._parts[route.part]
        if part is None or not part.moved_by_causes_only or self.cause_unmet(cause):
            return None
        return part.cause_error(cause)

    def cause(self, cause: Cause) -> list[Event]:
        """Apply a cause; the events it produces now, in order (throttled ones may come later).

        A cause the VM cannot undergo now raises :class:`MachineError`.
        """
        problem = self.cause_error(cause)
        if problem is not None:
            raise MachineError(problem)
        out = self.poll()
        route = self._causes[type(cause)]
        events: list[Event] = route.handler(self._target(route), cause)
        return out + events

    def _target(self, route: Route) -> Any:
        return self if route.part is None else self._parts[route.part]

    # --- commands -------------------------------------------------------------

    def execute(self, command: str, arguments: Mapping[str, Any]) -> Outcome:
        """Run a command whose arguments the protocol has already validated."""
        if command not in self.profile.commands:
            return Outcome(
                CommandError("CommandNotFound", f"The command {command} has not been found")
            )
        if self.exited:
            raise MachineError(f"the VM has exited; it cannot run {command}")
        due = self.poll()
        route = self._commands.get(command)
        if route is None:
            result = self._unmodelled(command, arguments)
        else:
            result = route.handler(self._target(route), arguments)
            if not isinstance(result.reply, CommandError):
                seed = self._reply_seed()
                reply = fit_reply(self.profile, self.vm, command, result.reply, seed)
                if reply is not result.reply:
                    result = Outcome(reply, result.events, result.close)
        if due:
            result = Outcome(result.reply, (*due, *result.events), result.close)
        return result

    def _reply_seed(self) -> int:
        """The seed of generated replies: drawn once from the machine's unspent generator."""
        seed: int | None = self.__dict__.get("_seed_of_replies")
        if seed is None:
            start = self._rng_start
            unspent = random.Random(self.seed or 0) if start is None else copy.copy(start)
            seed = self.__dict__["_seed_of_replies"] = unspent.getrandbits(64)
        return seed

    def _unmodelled(self, command: str, arguments: Mapping[str, Any]) -> Outcome:
        """The answer to a command no component handles: see :mod:`qmpsim.vm.replies`."""
        source, reply = unmodelled_reply(
            self.profile,
            self.vm,
            command,
            arguments,
            self._reply_seed(),
            modules_loaded=self._modules_loaded,
        )
        # a module once loaded stays for the life of the process (system_reset included)
        self._modules_loaded = self._modules_loaded or command in LOADS_MODULES
        if self.strict_commands and source == GENERATED:
            raise UnmodelledCommand(command, self.profile.name)
        if "error" in reply:
            return Outcome(CommandError(reply["error"]["class"], reply["error"]["desc"]))
        return Outcome(reply["return"])


_ROUTES: dict[type, tuple[dict[str, Route], dict[type, Route]]] = {}


def _routes(kind: type[Machine]) -> tuple[dict[str, Route], dict[type, Route]]:
    """The dispatch tables of a machine class, built once per class."""
    tables = _ROUTES.get(kind)
    if tables is None:
        tables = _ROUTES[kind] = dispatch_table(kind, kind.COMPONENTS)
    return tables


def modelled_commands() -> frozenset[str]:
    """The commands the VM model answers itself (whether a profile has them or not)."""
    return frozenset(_routes(Machine)[0])
