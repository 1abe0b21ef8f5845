"""The seeded walk over a VM's legal moves, behind ``qmpsim generate`` and ``serve --random``.

A walk builds a random VM, then alternates a wait with one legal move (a cause
such as a disk error or a VNC client arriving, or a monitor command such as
``stop``/``cont``), so every stream it emits obeys the causal rules and the
throttling of its profile.  Its decisions come from a :class:`Choices`: a seeded
``random.Random`` here, Hypothesis draws in :mod:`qmpsim.testing.strategies` (which builds
on this module).  Nothing here imports Hypothesis or pytest: a runtime install
runs it.

A walk costs the same at every step however long it has been going: a move
that would overshoot the requested size, or end the VM too early, is undone
from a saved copy of the machine's own state (a few small dicts), never of
what the walk has emitted.
"""

from __future__ import annotations

import copyreg
import dataclasses
import io
import json
import pickle
import random
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from qmpsim.errors import CatalogError
from qmpsim.qmp.profiles import DEFAULT_PROFILE, Enum, ProfileSpec, get_profile
from qmpsim.vm import machine as m
from qmpsim.vm.migration import MOST_AHEAD, Migration
from qmpsim.vm.suspend import Suspend

if TYPE_CHECKING:
    from qmpsim.scenario.model import Scenario

__all__ = [
    "CAUSES",
    "COMMANDS",
    "MIGRATION_COMMANDS",
    "Choices",
    "Seeded",
    "Walk",
    "generate",
    "generate_lines",
    "random_scenario",
    "stream",
]

COMMANDS: tuple[str, ...] = (
    "stop",
    "cont",
    "system_reset",
    "system_powerdown",
    "quit",
    "device_add",
    "device_del",
    "drive-mirror",
    "job-complete",
    "job-cancel",
    "balloon",
    "system_wakeup",
)
"""Monitor commands a stream may contain the effects of (a NIC's and a mirror's whole
life among them, a balloon target, a wake-up)."""

MIGRATION_COMMANDS: tuple[str, ...] = (
    "migrate",
    "migrate_cancel",
    "migrate-start-postcopy",
    "migrate-pause",
)
"""Migration moves, drawn only when asked for by name (``causes=``): a migration to a
simulated destination that completes, or is cancelled, or switches to postcopy, is
paused and resumed (``migrate`` ``resume: true``).  Not among the defaults, so that the
streams a seed gave before stay what they were."""

CAUSES: tuple[str, ...] = (
    "rtc-change",
    "guest-reset",
    "disk-error",
    "watchdog",
    "vnc-connect",
    "vnc-initialize",
    "vnc-disconnect",
    "spice-connect",
    "spice-initialize",
    "spice-disconnect",
    "guest-powerdown",
    "guest-shutdown",
    "guest-panic",
    "disk-io",
    "job-error",
    "guest-unplugs",
    "guest-balloon",
    "guest-suspend",
)
"""Causes, named as in scenario files."""

# The order in which a walk offers its moves: simple ones first, endings last.
_MOVE_ORDER = (
    "stop",
    "cont",
    "system_reset",
    "rtc-change",
    "guest-reset",
    "system_powerdown",
    *CAUSES[2:-3],
    "device_add",
    "device_del",
    "guest-unplugs",
    "drive-mirror",
    "job-complete",
    "job-cancel",
    "balloon",
    "guest-balloon",
    "guest-suspend",
    "system_wakeup",
    *MIGRATION_COMMANDS,
    "quit",
)
_START = 1_700_000_000.0
_SPICE_CHANNELS = (1, 2, 3, 4)  # main, display, inputs, cursor
_SPICE_CLIENT = "remote-viewer"
_GUEST: dict[str, m.Cause] = {
    "guest-reset": m.GuestReset(),
    "guest-powerdown": m.GuestPowerdown(),
    "guest-shutdown": m.GuestShutdown(),
    "guest-panic": m.GuestPanic(),
}
_VNC = ("vnc-connect", "vnc-initialize", "vnc-disconnect")
# moves that depend on the jobs running now, not on the VM's description alone
_JOBS = ("drive-mirror", "job-complete", "job-cancel", "job-error")
# moves that depend on the devices plugged now: a NIC plugged, its unplug asked for, the
# guest letting go of it (the walk's VMs have no guest OS of their own to do it)
_DEVICES = ("device_add", "device_del", "guest-unplugs")
# moves that need a balloon device: a new target, the guest reporting a size (in MiB)
_BALLOON = ("balloon", "guest-balloon")
MOVES: tuple[str, ...] = (*CAUSES, *COMMANDS, *MIGRATION_COMMANDS)
"""Every move a walk knows, by name (the migration moves only when named)."""
_MIGRATION = frozenset(MIGRATION_COMMANDS)
# where the walk's migrations go (a simulated destination: it accepts the stream), and the
# bandwidth of a slow one, which takes seconds: time for a cancel, a switch, a pause
_DESTINATION = "tcp:192.0.2.7:4444"
_SLOW = 50_000
_MIGRATABLE = ("running", "paused", "prelaunch")
_NIC = "virtio-net-pci"
_MiB = 1 << 20
_SPICE: dict[str, type[m.SpiceConnect | m.SpiceInitialize | m.SpiceDisconnect]] = {
    "spice-connect": m.SpiceConnect,
    "spice-initialize": m.SpiceInitialize,
    "spice-disconnect": m.SpiceDisconnect,
}
# what else happens while a migration is under way: nothing that changes the run state
# behind the migration's back (a guest suspending, shutting down or panicking there is a
# stream the checker's rules do not foresee), nor quit
_DURING_MIGRATION = frozenset(
    {"stop", "cont", "rtc-change", "disk-io", *_VNC, *_SPICE, *MIGRATION_COMMANDS}
)
_READ_POLICIES = ("report", "stop", "ignore")
_WRITE_POLICIES = ("enospc", "report", "stop", "ignore")
# A move emits at most this many events (a cont that retries two failing disks).
_MOST_PER_MOVE = 6
# The moves that may end the VM, which the walk can undo when that is too early.  Only
# these save the machine first (a step costs the same either way, but saving is most
# of a step's cost); another move that ended the VM would only end the stream early.
_MAY_END = frozenset(
    {"quit", "system_powerdown", "guest-powerdown", "guest-shutdown", "guest-panic", "watchdog"}
)

_T = TypeVar("_T")


# --- argument checking (ValueError; the strategies turn it into InvalidArgument) ----------


def check_profile(profile: object) -> ProfileSpec:
    """``profile`` as a :class:`ProfileSpec` (a name or a spec); ``ValueError`` otherwise."""
    if isinstance(profile, ProfileSpec):
        return profile
    if not isinstance(profile, str):
        raise ValueError(f"profile must be a profile name or a ProfileSpec, not {profile!r}")
    try:
        return get_profile(profile)
    except CatalogError as exc:
        raise ValueError(str(exc)) from None


def check_size(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an integer ``>= minimum``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_bounds(low_name: str, low: object, high_name: str, high: object) -> tuple[int, int]:
    """Two sizes, the second not below the first."""
    lo, hi = check_size(low_name, low), check_size(high_name, high)
    if hi < lo:
        raise ValueError(f"{high_name}={hi} is less than {low_name}={lo}")
    return lo, hi


def check_names(
    label: str,
    value: Collection[str] | None,
    known: Collection[str],
    default: Collection[str] | None = None,
) -> frozenset[str]:
    """The names chosen (``None``: ``default``, else all of ``known``); each must be known,
    at least one."""
    if value is None:
        return frozenset(known if default is None else default)
    if isinstance(value, str):
        raise ValueError(f"{label} must be a collection of names, not the string {value!r}")
    chosen = frozenset(value)
    unknown = sorted(n for n in chosen if n not in known)
    if unknown:
        raise ValueError(
            f"unknown {label}: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if not chosen:
        raise ValueError(f"{label} must name at least one")
    return chosen


def check_vm(vm: object) -> m.VmConfig | None:
    """``vm`` when it is a :class:`~qmpsim.vm.machine.VmConfig` or ``None``."""
    if vm is not None and not isinstance(vm, m.VmConfig):
        raise ValueError(f"vm must be a qmpsim.vm.machine.VmConfig, not {vm!r}")
    return vm


# --- where decisions come from ---------------------------------------------------------


class Choices:
    """The decisions of a walk: each one an integer in a closed range."""

    def integer(self, low: int, high: int) -> int:
        """An integer from ``low`` to ``high``, both included."""
        raise NotImplementedError

    def step(self, fn: Callable[[Choices], _T]) -> _T:
        """Run one step of a walk (Hypothesis sees it as one unit it can drop)."""
        return fn(self)

    def choice(self, options: Sequence[_T]) -> _T:
        """One of ``options``."""
        return options[self.integer(0, len(options) - 1)]

    def boolean(self) -> bool:
        """Yes or no."""
        return self.integer(0, 1) == 1

    def pick(self, options: list[_T], ok: Callable[[_T], bool]) -> _T | None:
        """Take out of ``options`` one of those that are ``ok``, each as likely (``None``: none).

        The options found not ``ok`` may be taken out too.
        """
        good = [o for o in options if ok(o)]
        if not good:
            options.clear()
            return None
        chosen = good.pop(self.integer(0, len(good) - 1))
        options[:] = good
        return chosen


class Seeded(Choices):
    """Decisions from a seeded ``random.Random``: the same seed, the same walk."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def pick(self, options: list[_T], ok: Callable[[_T], bool]) -> _T | None:
        # The same distribution as checking every option first, for the cost of
        # checking only those tried: try one at random until one is ok.
        while options:
            option = options.pop(self._rng.randint(0, len(options) - 1))
            if ok(option):
                return option
        return None


# --- VMs --------------------------------------------------------------------------


def _watchdog_actions(spec: ProfileSpec) -> tuple[str, ...]:
    watchdog = spec.events.get("WATCHDOG")
    if watchdog is None or watchdog.data is None:
        return ()
    member = watchdog.data.member("action")
    return member.type.values if member is not None and isinstance(member.type, Enum) else ()


def choose_vm(ch: Choices, spec: ProfileSpec) -> m.VmConfig:
    """A VM a scenario file can express: disks, VNC, SPICE, watchdog, -no-shutdown, and
    a PCI bus (a ``pc`` machine with one vCPU) or none."""
    disks = tuple(
        m.DiskConfig(
            name=f"virtio{i}",
            on_read_error=ch.choice(_READ_POLICIES),
            on_write_error=ch.choice(_WRITE_POLICIES),
            thin=True,  # the walk may run it out of space
        )
        for i in range(ch.integer(0, 2))
    )
    actions = _watchdog_actions(spec)
    watchdog = ch.integer(0, len(actions))
    return m.VmConfig(
        initial_state=ch.choice(("running", "paused", "prelaunch")),
        no_shutdown=ch.boolean(),
        watchdog=actions[watchdog - 1] if watchdog else None,
        disks=disks,
        vnc=m.VncConfig() if ch.boolean() else None,
        spice=m.SpiceConfig() if ch.boolean() else None,
        cpus=1 if ch.boolean() else 0,
    )


# --- walking the machine ----------------------------------------------------------


@dataclass(frozen=True)
class _Move:
    kind: str
    args: dict[str, Any]
    cause: m.Cause | None  # None: the monitor command named by kind


@dataclass
class _Saved:
    """What undoing one move restores."""

    machine: bytes  # the machine's own state, pickled
    now: float
    steps: int
    vnc_seen: int
    vnc_live: list[str]
    nics: int


# The machine's state is pickled to undo a move: several times cheaper than a deep
# copy.  What a move never replaces is kept by reference, wherever it sits (the
# machine's components point back to it): the machine itself, its profile, VM and
# clock (whose time is saved apart), its random generators (whose state is 625
# ints: an undone move leaves them advanced, which keeps the walk as reproducible),
# and the tables every machine of its kind shares.


def _kept(machine: m.Machine) -> dict[int, object]:
    kept: list[object] = [machine, machine.profile, machine.vm, machine.clock]
    kept += [v for v in vars(machine).values() if isinstance(v, random.Random)]
    return {id(obj): obj for obj in kept}


def _tables(machine: m.Machine) -> frozenset[str]:
    """The machine's attributes that every machine of its kind shares (dispatch tables)."""
    twin = type(machine)(vm=machine.vm, profile=machine.profile, clock=m.ManualClock())
    theirs = vars(twin)
    # (a value is only a table when it is not one of the interned atoms every machine
    # holds alike: a status string, a flag)
    atoms = (str, bytes, int, float, bool, tuple, type(None))
    return frozenset(
        k for k, v in vars(machine).items() if theirs.get(k) is v and not isinstance(v, atoms)
    )


def _kept_ref(key: int) -> object:
    """Stands for a kept object in a pickle; :class:`_MachineUnpickler` resolves it."""
    raise AssertionError("resolved by _MachineUnpickler")


class _MachinePickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, machine: m.Machine) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._kept = _kept(machine)
        # by type, so that every other object takes the pickler's fast path
        table = dict(copyreg.dispatch_table)
        table.update((type(obj), self._reduce) for obj in self._kept.values())
        self.dispatch_table = table

    def _reduce(self, obj: Any) -> Any:
        if id(obj) in self._kept:
            return _kept_ref, (id(obj),)
        return obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


class _MachineUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, machine: m.Machine) -> None:
        super().__init__(file)
        self._kept = _kept(machine)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "_kept_ref"):
            return self._kept.__getitem__
        return super().find_class(module, name)


@dataclass
class Walk:
    """A walk in progress: the machine, its clock, and what was done so far.

    ``count`` is the number of events emitted; ``steps`` the walk as scenario
    steps (``wait`` and ``cause``), kept when ``record`` is true.
    """

    machine: m.Machine
    clock: m.ManualClock
    allowed: frozenset[str]
    min_size: int
    max_size: int
    record: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    copies: int = 0
    """How many times the machine was copied (to undo a move): at most a few a step."""
    vnc_seen: int = 0
    vnc_live: list[str] = field(default_factory=list)
    nics: int = 0
    """How many NICs the walk plugged (each gets the next id)."""
    _fixed: dict[str, list[_Move]] = field(default_factory=dict, repr=False)
    _tables: frozenset[str] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        ch: Choices,
        profile: ProfileSpec,
        vm: m.VmConfig | None,
        min_size: int,
        max_size: int,
        allowed: frozenset[str],
        *,
        record: bool = True,
    ) -> tuple[Walk, int]:
        """A new walk on ``vm`` (drawn when ``None``) and the number of events it aims for."""
        config = choose_vm(ch, profile) if vm is None else vm
        clock = m.ManualClock(_START)
        rng = random.Random(ch.integer(0, 2**32 - 1))
        machine = m.Machine(vm=config, profile=profile, clock=clock, rng=rng)
        target = ch.integer(min_size, max_size)
        return cls(machine, clock, allowed, min_size, max_size, record), target

    def run(self, ch: Choices, target: int) -> Iterator[dict[str, Any]]:
        """Walk until ``target`` events (or the VM's end), yielding each event once it is final."""
        for _ in range(2 * self.max_size + 4):
            if self.count >= target or self.machine.exited:
                break
            yield from ch.step(self._step)
        # let held-back events go out when their throttle window closes
        while self.machine.pending_events():
            deadline = self.machine.next_deadline()
            assert deadline is not None
            self.clock.now = max(self.clock.now, deadline)
            out = [e.to_json() for e in self.machine.poll()]
            self.count += len(out)
            yield from out

    def _record(self, step: dict[str, Any]) -> None:
        if self.record:
            self.steps.append(step)

    def _step(self, ch: Choices) -> list[dict[str, Any]]:
        """One wait (in milliseconds), then one legal move that keeps the stream within bounds."""
        pause = ch.integer(1, 3000)
        self.clock.advance(pause / 1000)
        self._record({"wait": f"{pause}ms"})
        out = [e.to_json() for e in self.machine.poll()]
        moves = self.candidates()
        while (move := ch.pick(moves, self._legal)) is not None:
            emitted = self.count + len(out)
            held = self._held()
            # (a migration move may also start what the migration says later)
            most = _MOST_PER_MOVE + (MOST_AHEAD if move.kind in _MIGRATION else 0)
            careful = emitted + held + most > self.max_size or (
                emitted < self.min_size and move.kind in _MAY_END
            )
            saved = self._save() if careful else None
            new = self.apply(ch, move)
            total = emitted + len(new) + self._held()
            if saved is not None and (
                total > self.max_size or (self.machine.exited and total < self.min_size)
            ):
                self._restore(saved)
                continue
            out += [e.to_json() for e in new]
            break
        self.count += len(out)
        return out

    def _held(self) -> int:
        """Events already decided but not out yet: those a throttle holds back, and those
        a migration under way will say as its virtual time passes (the wait before the
        next move lets them out, so they count now against the walk's bound)."""
        return len(self.machine.pending_events()) + self.machine.part(Migration).events_ahead()

    def _save(self) -> _Saved:
        self.copies += 1
        if self._tables is None:
            self._tables = _tables(self.machine)
        state = {k: v for k, v in vars(self.machine).items() if k not in self._tables}
        buffer = io.BytesIO()
        _MachinePickler(buffer, self.machine).dump(state)
        return _Saved(
            buffer.getvalue(),
            self.clock.now,
            len(self.steps),
            self.vnc_seen,
            list(self.vnc_live),
            self.nics,
        )

    def _restore(self, saved: _Saved) -> None:
        state = _MachineUnpickler(io.BytesIO(saved.machine), self.machine).load()
        vars(self.machine).update(state)
        self.clock.now = saved.now
        del self.steps[saved.steps :]
        self.vnc_seen = saved.vnc_seen
        self.vnc_live = saved.vnc_live
        self.nics = saved.nics

    def candidates(self) -> list[_Move]:
        """The moves of the allowed kinds, in a fixed order, legal now or not."""
        if not self._fixed:
            # what the VM's description alone decides, once per walk
            self._fixed = {kind: self._moves(kind) for kind in _MOVE_ORDER}
        found: list[_Move] = []
        for kind in _MOVE_ORDER:
            if kind in self.allowed:
                if kind in _VNC:
                    found += self._vnc_moves(kind)
                elif kind in _JOBS:
                    found += self._job_moves(kind)
                elif kind in _DEVICES:
                    found += self._device_moves(kind)
                elif kind in _BALLOON:
                    found += self._balloon_moves(kind)
                elif kind in _MIGRATION:
                    found += self._migration_moves(kind)
                else:
                    found += self._fixed[kind]
        return found

    def moves(self) -> list[_Move]:
        """The legal moves now, in a fixed order."""
        return [move for move in self.candidates() if self._legal(move)]

    def _legal(self, move: _Move) -> bool:
        if move.kind not in _DURING_MIGRATION and self.machine.part(Migration).under_way():
            return False
        if move.cause is None:
            if move.kind == "system_wakeup":  # refused unless the guest sleeps: no event
                return self.machine.status == "suspended"
            if move.kind in _MIGRATION and move.kind in self.machine.profile.commands:
                return self._migration_legal(move)
            if self.machine.status == "finish-migrate":
                # the source stopped for its switchover: QEMU would hold a command until the
                # migration completes, and a cont in postcopy runs the VM in two places
                return False
            return move.kind in self.machine.profile.commands
        return self.machine.cause_error(move.cause) is None

    def _moves(self, kind: str) -> list[_Move]:
        vm = self.machine.vm
        options: list[_Move] = []
        if kind in COMMANDS and kind not in (*_JOBS, *_DEVICES, *_BALLOON, *_MIGRATION):
            options.append(_Move(kind, {}, None))
        elif kind == "guest-suspend":
            options.append(_Move(kind, {}, m.GuestSuspend()))
        elif kind == "disk-error":
            options += [_Move(kind, {"device": d.name}, m.DiskError(d.name)) for d in vm.disks]
        elif kind == "disk-io":
            options += [_Move(kind, {"device": d.name}, m.DiskIo(d.name)) for d in vm.disks]
        elif kind == "watchdog" and vm.watchdog is not None:
            options.append(_Move(kind, {}, m.WatchdogExpired()))
        elif kind == "rtc-change":
            options.append(_Move(kind, {"offset": 0}, m.RtcChange(0)))
        elif kind in _GUEST:
            options.append(_Move(kind, {}, _GUEST[kind]))
        elif kind in _SPICE:
            for t in _SPICE_CHANNELS:
                args = {"client": _SPICE_CLIENT, "channel_type": t}
                options.append(_Move(kind, args, _SPICE[kind](_SPICE_CLIENT, t)))
        return options

    def _vnc_moves(self, kind: str) -> list[_Move]:
        if kind == "vnc-connect":
            label = f"viewer{self.vnc_seen}"
            return [_Move(kind, {"client": label}, m.VncConnect(label))]
        # only the clients still connected: the ones that left are never offered again
        make = m.VncInitialize if kind == "vnc-initialize" else m.VncDisconnect
        return [_Move(kind, {"client": label}, make(label)) for label in self.vnc_live]

    def _job_moves(self, kind: str) -> list[_Move]:
        """A mirror for each disk no job copies; completing a ready job, cancelling a live
        one, an I/O error in a running one."""
        busy = {j.id: j.status for j in self.machine.part(m.Jobs).jobs}
        if kind == "drive-mirror":
            return [
                _Move(
                    kind,
                    {
                        "device": d.name,
                        "target": f"/var/lib/qemu/{d.name}.copy.qcow2",
                        "sync": "full",
                    },
                    None,
                )
                for d in self.machine.vm.disks
                if d.has_medium and d.name not in busy
            ]
        if kind == "job-error":
            return [_Move(kind, {"job": j}, m.JobError(j)) for j in busy]
        wanted = ("ready",) if kind == "job-complete" else ("running", "paused", "ready")
        return [_Move(kind, {"id": j}, None) for j, status in busy.items() if status in wanted]

    def _device_moves(self, kind: str) -> list[_Move]:
        """A new NIC where the VM has a PCI bus; an unplug request for a NIC not asked
        yet; the guest ejecting one whose unplug was asked for."""
        devices = self.machine.part(m.Devices)
        if kind == "device_add":
            if not devices.has_bus("pci.0"):
                return []
            return [_Move(kind, {"driver": _NIC, "id": f"nic{self.nics}"}, None)]
        nics = [label for label in devices.plugged() if label.startswith("nic")]
        if kind == "device_del":
            return [
                _Move(kind, {"id": nic}, None) for nic in nics if not devices.unplug_requested(nic)
            ]
        return [_Move(kind, {"device": nic}, m.DeviceEjected(nic)) for nic in nics]

    def _balloon_moves(self, kind: str) -> list[_Move]:
        """A new target, or the guest's driver reporting a size, where a balloon is plugged
        (the amounts are chosen when the move is made)."""
        if self.machine.part(m.Balloon).actual() is None:
            return []
        if kind == "balloon":
            return [_Move(kind, {"value": self.machine.vm.memory}, None)]
        return [_Move(kind, {"actual": self.machine.vm.memory}, m.BalloonResized(0))]

    def _migration_moves(self, kind: str) -> list[_Move]:
        """A new migration or, once paused in postcopy, its resumption; a cancel; a switch
        to postcopy; a pause (whether each is legal is asked when it is tried)."""
        if kind == "migrate":
            return [
                _Move(kind, {"uri": _DESTINATION}, None),
                _Move(kind, {"uri": _DESTINATION, "resume": True}, None),
            ]
        return [_Move(kind, {}, None)]

    def _migration_legal(self, move: _Move) -> bool:
        """Whether the migration command would do something (a refusal says nothing)."""
        part = self.machine.part(Migration)
        status = part.status
        if move.kind == "migrate":
            if move.args.get("resume"):
                return status == "postcopy-paused"
            # (not a VM that shut down or panicked: the checker holds a RESUME after it to
            # a reset, which a migration's postmigrate would let a cont skip)
            return (
                part.refusal() is None
                and self.machine.status in _MIGRATABLE
                and not self.machine.part(Suspend).asleep  # (cont would suspend it again)
            )
        if move.kind == "migrate_cancel":
            postcopy = status.startswith("postcopy-")
            return status in ("setup", "active", "pre-switchover", "device") or (
                postcopy and self.machine.profile.version < (9, 2, 0)
            )
        if move.kind == "migrate-start-postcopy":
            return bool(part.caps.get("postcopy-ram")) and status in ("setup", "active")
        return status in ("postcopy-active", "postcopy-recover")  # migrate-pause

    def _start_migration(self, ch: Choices) -> None:
        """The capabilities and speed of a new migration: events on, postcopy or not, fast
        (it completes at once) or slow."""
        caps = [
            {"capability": "events", "state": True},
            {"capability": "postcopy-ram", "state": ch.boolean()},
        ]
        self.machine.execute("migrate-set-capabilities", {"capabilities": caps})
        speed = _SLOW if ch.boolean() else 128 * _MiB
        params = {"max-bandwidth": speed, "max-postcopy-bandwidth": speed}
        self.machine.execute("migrate-set-parameters", params)

    def apply(self, ch: Choices, move: _Move) -> list[m.Event]:
        """Make the move; its arguments that do not decide legality are chosen now."""
        if move.cause is None:
            if move.kind == "device_add":
                self.nics += 1
            if move.kind == "migrate" and not move.args.get("resume"):
                self._start_migration(ch)
            args = move.args
            if move.kind == "balloon":  # a target from a quarter of the RAM to all of it
                args = {
                    "value": _MiB
                    * ch.integer(
                        self.machine.vm.memory // _MiB // 4, self.machine.vm.memory // _MiB
                    )
                }
            outcome = self.machine.execute(move.kind, args)
            # events a command defers until after its reply (a disk's retry)
            return [*outcome.events, *self.machine.poll()]
        args = dict(move.args)
        cause = move.cause
        if isinstance(cause, m.DiskError):
            args["operation"] = ch.choice(("read", "write"))
            # only a thin disk can run out of space
            args["nospace"] = self.machine.vm.disk(cause.device).thin and ch.boolean()
            cause = m.DiskError(cause.device, args["operation"], args["nospace"])
        elif isinstance(cause, m.RtcChange):
            args["offset"] = ch.integer(-86_400, 86_400)
            cause = m.RtcChange(args["offset"])
        elif isinstance(cause, m.DiskIo):
            args["operation"] = ch.choice(("read", "write", "flush"))
            args["size"] = 4096 * ch.integer(1, 256)
            cause = m.DiskIo(cause.device, args["operation"], args["size"])
        elif isinstance(cause, m.BalloonResized):
            ram = self.machine.vm.memory // _MiB
            args["actual"] = _MiB * ch.integer(ram // 4, ram)
            cause = m.BalloonResized(args["actual"])
        elif isinstance(cause, m.JobError):
            args["operation"] = ch.choice(("read", "write"))
            cause = m.JobError(cause.job, args["operation"])
        elif isinstance(cause, m.VncConnect):
            self.vnc_seen += 1
            self.vnc_live.append(cause.client)
        elif isinstance(cause, m.VncDisconnect):
            self.vnc_live.remove(cause.client)
        self._record({"cause": move.kind, **args})
        # with what it makes happen right after (a job's next state), as a command's reply
        return [*self.machine.cause(cause), *self.machine.poll()]


# --- from a seed -------------------------------------------------------------------


def stream(
    *,
    seed: int,
    count: int = 20,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    vm: m.VmConfig | None = None,
    causes: Collection[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """:func:`generate`'s events one at a time, each as soon as it is final.

    The arguments are checked at the call (``ValueError``), not at the first event.
    """
    spec = check_profile(profile)
    size = check_size("count", count)
    allowed = check_names("causes", causes, MOVES, (*CAUSES, *COMMANDS))
    chosen = check_vm(vm)
    ch = Seeded(seed)
    walk, target = Walk.start(ch, spec, chosen, size, size, allowed, record=False)
    return walk.run(ch, target)


def generate(
    *,
    seed: int,
    count: int = 20,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    vm: m.VmConfig | None = None,
    causes: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """A reproducible random event stream: the same seed, the same stream.

    It holds ``count`` events unless the VM runs out of moves first.  Bad
    arguments raise ``ValueError``.
    """
    return list(stream(seed=seed, count=count, profile=profile, vm=vm, causes=causes))


def generate_lines(
    *,
    seed: int,
    count: int = 20,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    causes: Collection[str] | None = None,
) -> Iterator[str]:
    """:func:`generate`'s stream as JSON lines, spelt as QEMU spells events on the wire.

    Lines come as the walk goes (a reader that stops early costs nothing more);
    bad arguments raise ``ValueError`` at the call.
    """
    events = stream(seed=seed, count=count, profile=profile, causes=causes)
    return (json.dumps(event) + "\n" for event in events)


def random_scenario(
    *,
    seed: int,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    max_events: int = 20,
    causes: Collection[str] | None = None,
) -> Scenario:
    """A reproducible random :class:`~qmpsim.scenario.Scenario` (for ``serve --random``)."""
    spec = check_profile(profile)
    size = check_size("max_events", max_events)
    allowed = check_names("causes", causes, CAUSES)
    ch = Seeded(seed)
    # a scenario cannot `cont` a paused VM: start it running so that every cause can happen
    vm = dataclasses.replace(choose_vm(ch, spec), initial_state="running")
    walk, target = Walk.start(ch, spec, vm, 0, size, allowed)
    for _ in walk.run(ch, target):
        pass
    return scenario_of(spec, walk, name=f"random-{seed}")


def scenario_of(spec: ProfileSpec, walk: Walk, name: str = "drawn") -> Scenario:
    """The walk's causes and waits as a scenario, loaded by the scenario files' loader."""
    from qmpsim.scenario.loader import loads_scenario
    from qmpsim.scenario.vm_section import vm_document

    doc: dict[str, Any] = {
        "name": name,
        "description": "A random walk over the causes the VM can undergo",
        "profile": spec.name,
        "vm": vm_document(walk.machine.vm),
        "steps": walk.steps,
    }
    return loads_scenario(json.dumps(doc, indent=1))
