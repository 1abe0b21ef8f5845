"""The VM model: run state, devices, causal rules and what each command does.

The machine is sans-I/O and clock-driven: time comes from an injected clock and
randomness from an injected ``random.Random``.  It answers commands with an
:class:`Outcome` (the events the command caused, then the reply) and turns
*causes* (a disk error, a watchdog expiry, a VNC client arriving…) into the
conformant event sequence QEMU would emit.  Events QEMU throttles, and events
that come after a reply, wait in the machine until :meth:`Machine.poll` hands
them out; :meth:`Machine.next_deadline` says when.

The machine is a façade: run state and the watchdog are its own, each other
area (disks included) is a component of :mod:`qmpsim.vm` (``Machine.COMPONENTS``),
and one dispatch table routes every command and cause to its handler.
"""

from __future__ import annotations

import copy
import random
import re
import time
from collections.abc import Callable, Mapping
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
from qmpsim.vm.component import (
    Action,
    Component,
    Route,
    Timer,
    Timers,
    dispatch_table,
    on_cause,
    on_command,
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
    Migration,
    MigrationTargetLost,
)
from qmpsim.vm.replies import GENERATED, LOADS_MODULES, fit_reply, unmodelled_reply
from qmpsim.vm.suspend import GuestSuspend, Suspend
from qmpsim.vm.values import Clock, CommandError, Event, MachineError, Outcome

__all__ = [  # the names other modules and users import from here
    "DEFAULT_SIZE",
    "DISK_FORMATS",
    "ERROR_POLICIES",
    "MEDIA",
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
    "GuestDirtiesMemory",
    "GuestPanic",
    "GuestPowerdown",
    "GuestReset",
    "GuestShutdown",
    "GuestSuspend",
    "ImageConfig",
    "IncomingCompleted",
    "IncomingConnected",
    "IncomingFailed",
    "JobError",
    "Jobs",
    "Machine",
    "MachineError",
    "ManualClock",
    "MigrationTargetLost",
    "Outcome",
    "RtcChange",
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
    "WatchdogExpired",
    "cause_exits",
    "modelled_commands",
    "rtc_path",
    "virtual_clock",
]

_C = TypeVar("_C", bound=Component)

RUN_STATES = (
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
)
"""QEMU 7.2's ``RunState`` values, as ``query-status`` reports them."""

# runstate_needs_reset(): the states only system_reset leaves.  guest-panicked is not
# one of them: QEMU 7.2 resumes a panicked guest on `cont` (tests/test_diff_guest_devices.py).
_NEEDS_RESET = ("shutdown", "internal-error")


class UnmodelledCommand(MachineError):
    """A command neither modelled nor recorded, refused because the machine is strict."""

    def __init__(self, command: str, profile: str) -> None:
        super().__init__(
            f"{command} is neither modelled nor recorded for {profile}; its reply would be"
            " generated (strict_commands refuses that: override its reply instead)"
        )
        self.command = command


class ManualClock:
    """A deterministic clock: ``start`` plus the virtual time :meth:`advance` added."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (never backward)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back in time")
        self.now += seconds


def virtual_clock(start: float, elapsed: Callable[[], float]) -> Clock:
    """A clock reading ``start + elapsed()``; with ``trio.current_time`` under a ``MockClock``
    it gives reproducible timestamps."""
    return lambda: start + elapsed()


# --- causes: things that happen to the VM, which the machine turns into events ---


@dataclass(frozen=True)
class WatchdogExpired:
    """The watchdog timer expired; ``action`` overrides the VM's configured one."""

    action: str | None = None


@dataclass(frozen=True)
class RtcChange:
    """The guest wrote its RTC: ``offset`` seconds from host UTC."""

    offset: int


@dataclass(frozen=True)
class GuestShutdown:
    """The guest powered itself off (ACPI shutdown, halt)."""


@dataclass(frozen=True)
class GuestReset:
    """The guest rebooted itself."""


@dataclass(frozen=True)
class GuestPanic:
    """The guest kernel panicked (pvpanic)."""


@dataclass(frozen=True)
class GuestPowerdown:
    """An ACPI power button press reached the guest (what ``system_powerdown`` does)."""


@dataclass(frozen=True)
class HostSignal:
    """The host asked QEMU to terminate (SIGTERM, SIGINT or SIGHUP): SHUTDOWN
    ``{guest: false, reason: host-signal}``, then QEMU exits, even under ``-no-shutdown``."""


Cause = (
    DiskError
    | DiskRepaired
    | DiskIo
    | TrayMoved
    | JobError
    | WatchdogExpired
    | RtcChange
    | GuestShutdown
    | GuestReset
    | GuestPanic
    | GuestPowerdown
    | HostSignal
    | DeviceEjected
    | UnplugRefused
    | VncConnect
    | VncInitialize
    | VncDisconnect
    | SpiceConnect
    | SpiceInitialize
    | SpiceDisconnect
    | BalloonResized
    | GuestSuspend
    | GuestDirtiesMemory
    | MigrationTargetLost
    | IncomingConnected
    | IncomingCompleted
    | IncomingFailed
)


def cause_exits(cause: Cause, *, watchdog: str | None, no_shutdown: bool) -> bool:
    """Whether QEMU exits as ``cause`` happens to a running guest of a VM whose watchdog
    action is ``watchdog`` and that runs with (or without) ``-no-shutdown``.

    What the machine's handlers do, said once for whoever must know it before a VM
    runs (the scenario loader refuses steps after the exit); a test holds the two to
    the same answers.
    """
    if isinstance(cause, WatchdogExpired):
        return (cause.action or watchdog) == "poweroff"
    if isinstance(cause, HostSignal):
        return True  # qemu_system_killed(): whatever -no-shutdown says
    return isinstance(cause, GuestShutdown | GuestPanic) and not no_shutdown


RTC_PATHS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((8, 0, 0), "/machine/unattached/device[3]/rtc"),
    ((0, 0, 0), "/machine/unattached/device[9]"),
)
"""Where a ``pc``'s RTC sits in the QOM tree, from the QEMU version on: an ISA device
of its own (measured on 7.2.22), then a child of the PIIX south bridge (measured on
10.0.2).  The move came with QEMU 8.0's PIIX rework, by QEMU's history: the versions
between 7.2 and 10.0 are not measured."""


def rtc_path(profile: ProfileSpec) -> str:
    """The QOM path of a ``pc``'s RTC in ``profile``'s QEMU."""
    return next(path for since, path in RTC_PATHS if profile.version >= since)


# --- the machine -----------------------------------------------------------------


@dataclass
class _Window:
    """QEMU's per-event throttle state: when the window closes, and the one pending event."""

    closes: float
    pending: Event | None = None


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
    status: str = field(init=False, default="running")
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
        self.reset()

    def reset(self) -> None:
        """Back to the VM as described: initial run state, no clients, nothing pending.

        The random generator rewinds too, so a reset machine repeats its values.
        """
        if self._rng_start is None:
            self.__dict__["_rng"] = None  # made from the seed again when needed
        else:
            self.rng.setstate(self._rng_start.getstate())
        self.status = self.vm.initial_state
        self.exited = False
        self._modules_loaded = False
        self._windows: dict[str, _Window] = {}
        self._timers.clear()
        for part in self._parts.values():
            part.reset()

    @property
    def running(self) -> bool:
        """Whether the guest's vCPUs run (``query-status``'s ``running``)."""
        return self.status == "running"

    # --- events ---------------------------------------------------------------

    def _now(self) -> tuple[int, int]:
        now = self.clock()
        seconds = int(now)
        micro = round((now - seconds) * 1_000_000)
        if micro >= 1_000_000:
            seconds, micro = seconds + 1, micro - 1_000_000
        return seconds, micro

    def _event(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
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
        return self._event(name, data)

    def emit_raw(self, name: str, data: Any = None) -> Event:
        """An event exactly as given, not validated: for testing how clients take bad input."""
        seconds, micro = self._now()
        return Event(name, data, seconds, micro)

    def _send(self, event: Event) -> list[Event]:
        """Pass ``event`` through QEMU's throttle: the events that go out now."""
        rate = self.profile.throttle.get(event.name)
        if not rate:
            return [event]
        window = self._windows.get(event.name)
        if window is None:
            self._windows[event.name] = _Window(self.clock() + rate)
            return [event]
        window.pending = event
        return []

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
        now = self.clock()
        due = sorted((w.closes, name) for name, w in self._windows.items() if w.closes <= now)
        for _, name in due:
            window = self._windows[name]
            if window.pending is None:
                del self._windows[name]
            else:
                out.append(window.pending)
                window.pending = None
                window.closes = now + self.profile.throttle[name]
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do, on the clock's scale."""
        deadlines: list[float | None] = [w.closes for w in self._windows.values()]
        deadlines += (part.next_deadline() for part in self._parts.values())
        if not self.exited:  # an exited VM runs nothing more
            deadlines.append(self._timers.next_deadline())
        return min((d for d in deadlines if d is not None), default=None)

    def pending_events(self) -> list[Event]:
        """Throttled events held back, oldest first, without releasing them."""
        held = [w.pending for w in self._windows.values() if w.pending is not None]
        return sorted(held, key=lambda e: (e.seconds, e.microseconds))

    def _stop(self, state: str) -> list[Event]:
        """``vm_stop(state)``: a STOP event only when the guest was running."""
        if not self.running:
            return []
        self.status = state
        return [self._event("STOP")]

    def _reset_data(self, guest: bool, reason: str) -> dict[str, Any] | None:
        return {"guest": guest, "reason": reason} if self.profile.run_states else None

    # --- what components use (qmpsim.vm.component.Host) ---------------------------

    def event(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """An event stamped now and validated against the profile (``CatalogError`` otherwise)."""
        return self._event(name, data)

    def send(self, event: Event) -> list[Event]:
        """``event`` through QEMU's per-event throttle: what goes out now."""
        return self._send(event)

    def stop(self, state: str) -> list[Event]:
        """``vm_stop(state)``: STOP when the vCPUs ran, and the new run state."""
        return self._stop(state)

    def shutdown(self, reason: str, *, guest: bool = True) -> list[Event]:
        """SHUTDOWN, then STOP under ``-no-shutdown`` or the VM's exit."""
        out = [self._event("SHUTDOWN", self._reset_data(guest, reason))]
        if self.vm.no_shutdown:
            out += self._stop("shutdown")
        else:
            self.exited = True
        return out

    def reset_data(self, guest: bool, reason: str) -> dict[str, Any] | None:
        """SHUTDOWN/RESET data for this profile (``None`` where QEMU sent none)."""
        return self._reset_data(guest, reason)

    def after(self, seconds: float, action: Action) -> Timer:
        """Run ``action`` ``seconds`` from now on the clock, once (a reset drops it)."""
        return self._timers.add(self.clock() + seconds, action)

    def part(self, kind: type[_C]) -> _C:
        """This machine's component of class ``kind``."""
        found = self._parts[kind]
        assert isinstance(found, kind)
        return found

    # --- causes ---------------------------------------------------------------

    def cause_error(self, cause: Cause) -> str | None:
        """Why ``cause`` cannot happen now (``None``: it can)."""
        if self.exited:
            return "the VM has exited"
        guest = (
            DiskError,
            DiskIo,
            WatchdogExpired,
            RtcChange,
            GuestShutdown,
            GuestReset,
            GuestPanic,
            DeviceEjected,
            UnplugRefused,
        )
        if isinstance(cause, guest) and not self.running:
            return f"{type(cause).__name__} needs a running guest (the VM is {self.status})"
        if isinstance(cause, WatchdogExpired) and (cause.action or self.vm.watchdog) is None:
            return "the VM has no watchdog (VmConfig.watchdog) and the cause names no action"
        if isinstance(cause, GuestPanic) and "GUEST_PANICKED" not in self.profile.events:
            return f"profile {self.profile.name} has no guest panic notification"
        route = self._causes.get(type(cause))
        if route is None:
            return f"{type(cause).__name__} is not a cause this machine knows"
        if route.part is not None:
            return self._parts[route.part].cause_error(cause)
        return None

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

    @on_cause(WatchdogExpired)
    def _on_WatchdogExpired(self, c: WatchdogExpired) -> list[Event]:
        action = c.action or self.vm.watchdog
        assert action is not None
        out = self._send(self._event("WATCHDOG", {"action": action}))
        if action == "reset":
            out.append(self._event("RESET", self._reset_data(True, "guest-reset")))
            self.part(Guest).rebooted()
        elif action == "pause":
            out += self._stop("watchdog")
        elif action == "shutdown":
            out += self._power_button()
        elif action == "poweroff":
            self.exited = True
        return out

    @on_cause(RtcChange)
    def _on_RtcChange(self, c: RtcChange) -> list[Event]:
        data: dict[str, Any] = {"offset": c.offset}
        if self.profile.run_states:
            data["qom-path"] = self.vm.rtc_qom_path or rtc_path(self.profile)
        return self._send(self._event("RTC_CHANGE", data))

    @on_cause(GuestShutdown)
    def _on_GuestShutdown(self, _c: GuestShutdown) -> list[Event]:
        return self.shutdown("guest-shutdown")

    @on_cause(GuestReset)
    def _on_GuestReset(self, _c: GuestReset) -> list[Event]:
        self.part(Guest).rebooted()
        return [self._event("RESET", self._reset_data(True, "guest-reset"))]

    @on_cause(GuestPanic)
    def _on_GuestPanic(self, _c: GuestPanic) -> list[Event]:
        # qemu_system_guest_panicked() with the default -action panic=shutdown
        if self.vm.no_shutdown:
            return [
                self._event("GUEST_PANICKED", {"action": "pause"}),
                *self._stop("guest-panicked"),
            ]
        out = [self._event("GUEST_PANICKED", {"action": "poweroff"})]
        out += self._stop("guest-panicked")
        out.append(self._event("SHUTDOWN", self._reset_data(True, "guest-panic")))
        self.exited = True
        return out

    @on_cause(GuestPowerdown)
    def _on_GuestPowerdown(self, _c: GuestPowerdown) -> list[Event]:
        return self._power_button()

    def _power_button(self) -> list[Event]:
        """``qemu_system_powerdown``: POWERDOWN, and the guest decides what follows."""
        self.part(Guest).power_button()
        return [self._event("POWERDOWN")]

    @on_cause(HostSignal)
    def _on_HostSignal(self, _c: HostSignal) -> list[Event]:
        # qemu_system_killed() forces the poweroff action: no STOP, whatever -no-shutdown says
        self.exited = True
        return [self._event("SHUTDOWN", self._reset_data(False, "host-signal"))]

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

    @on_command("query-status")
    def _cmd_query_status(self, _args: Mapping[str, Any]) -> Outcome:
        reply: dict[str, Any] = {"running": self.running, "singlestep": False}
        if self.profile.run_states:
            reply["status"] = self.status
        return Outcome(reply)

    @on_command("query-version")
    def _cmd_query_version(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome(self.profile.greeting()["QMP"]["version"])

    @on_command("query-commands")
    def _cmd_query_commands(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome([{"name": name} for name in self.profile.commands])

    @on_command("query-name")
    def _cmd_query_name(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({} if self.vm.name is None else {"name": self.vm.name})

    @on_command("query-uuid")
    def _cmd_query_uuid(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"UUID": self.vm.uuid})

    @on_command("query-kvm")
    def _cmd_query_kvm(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"enabled": self.vm.kvm_enabled, "present": self.vm.kvm_present})

    @on_command("stop")
    def _cmd_stop(self, _args: Mapping[str, Any]) -> Outcome:
        suspended = self.part(Suspend).stop()
        if suspended is not None:  # what stop does to a suspended VM depends on the version
            return Outcome({}, tuple(suspended))
        if self.status == "inmigrate":  # the VM will not run once its state came
            self.part(Migration).hold(autostart=False)
            return Outcome({})
        return Outcome({}, tuple(self._stop("paused")))

    @on_command("cont")
    def _cmd_cont(self, _args: Mapping[str, Any]) -> Outcome:
        if self.profile.run_states and self.status in _NEEDS_RESET:
            return Outcome(
                CommandError("GenericError", "Resetting the Virtual Machine is required")
            )
        if self.status == "suspended":
            return Outcome({})  # qmp_cont() leaves a suspended VM to system_wakeup
        if self.status == "inmigrate":  # it runs once its state came
            self.part(Migration).hold(autostart=True)
            return Outcome({})
        self.part(BlockGraph).continued()
        if self.running:
            return Outcome({})
        self.status = self.part(Suspend).resumes_to()
        resume = self._event("RESUME")
        # the devices retry their failed requests once the VM runs again, after the reply
        self.part(BlockGraph).resumed()
        return Outcome({}, (resume,))

    @on_command("system_reset")
    def _cmd_system_reset(self, _args: Mapping[str, Any]) -> Outcome:
        event = self._event("RESET", self._reset_data(False, "host-qmp-system-reset"))
        self.part(Guest).rebooted()
        self.part(Suspend).rebooted()
        self.part(BlockGraph).requests_dropped()
        if self.profile.run_states and not self.running:
            self.status = "prelaunch"
        return Outcome({}, (event,))

    @on_command("system_powerdown")
    def _cmd_system_powerdown(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({}, tuple(self._power_button()))

    @on_command("quit")
    def _cmd_quit(self, _args: Mapping[str, Any]) -> Outcome:
        event = self._event("SHUTDOWN", self._reset_data(False, "host-qmp-quit"))
        self.exited = True
        return Outcome({}, (event,), close=True)

    @on_command("human-monitor-command")
    def _cmd_human_monitor_command(self, args: Mapping[str, Any]) -> Outcome:
        line = str(args.get("command-line", ""))
        cpu = args.get("cpu-index")
        if cpu is not None and not 0 <= cpu < self.vm.cpus:
            return Outcome(
                CommandError("GenericError", "Parameter 'cpu-index' expects a CPU number")
            )
        words = line.split()
        if not words:
            return Outcome("")
        if (
            words[0] in ("stop", "cont", "c", "system_reset", "system_powerdown")
            and len(words) == 1
        ):
            command = "cont" if words[0] == "c" else words[0]
            route = self._commands[command]
            outcome: Outcome = route.handler(self._target(route), {})
            if isinstance(outcome.reply, CommandError):
                return Outcome(f"Error: {outcome.reply.desc}\r\n", outcome.events)
            return Outcome("", outcome.events)
        what = " ".join(words[1:]) if words[0] == "info" and len(words) <= 2 else None
        info = self._hmp_info(what)
        if info is not None:
            return Outcome(info)
        match = re.match(r"\s*(info\s+\S+|\S+)", line)
        name = match.group(1) if match else line
        return Outcome(f"unknown command: '{name}'\r\n")

    def _hmp_info(self, what: str | None) -> str | None:
        if what == "":
            return "".join(f"info {name}  -- {text}\r\n" for name, text in _HMP_INFO.items())
        if what == "status":
            text = "VM status: " + ("running" if self.running else "paused")
            if self.profile.run_states and self.status not in ("running", "paused"):
                text += f" ({self.status})"
            return text + "\r\n"
        if what == "version":
            major, minor, micro = self.profile.version
            return f"{major}.{minor}.{micro}{self.profile.package}\r\n"
        if what == "name":
            return "" if self.vm.name is None else f"{self.vm.name}\r\n"
        if what == "uuid":
            return f"{self.vm.uuid}\r\n"
        if what == "kvm":
            state = "enabled" if self.vm.kvm_enabled else "disabled"
            return f"kvm support: {state}\r\n"
        return None


# the `info` subcommands qmpsim answers, with QEMU's help texts
_HMP_INFO = {
    "kvm": "show KVM information",
    "name": "show the current VM name",
    "status": "show the current VM status (running|paused)",
    "uuid": "show the current VM UUID",
    "version": "show the version of QEMU",
}


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
