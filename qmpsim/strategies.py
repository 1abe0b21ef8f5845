"""Hypothesis strategies: conformant events, event streams, VMs and whole scenarios.

Streams are drawn by walking the machine's legal moves (causes such as a disk
error or a VNC client arriving, monitor commands such as ``stop``/``cont``, and
the passing of time), so every stream obeys the causal rules and the throttling
of its profile.  Draws shrink towards short streams of the simplest moves on the
simplest VM.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from . import machine as m
from .catalog import (
    DEFAULT_PROFILE,
    Alternate,
    Array,
    Builtin,
    Enum,
    Object,
    ProfileSpec,
    Type,
    get_profile,
)
from .errors import CatalogError

__all__ = [
    "CAUSES",
    "COMMANDS",
    "event_streams",
    "events",
    "generate",
    "generate_lines",
    "random_scenario",
    "scenarios",
    "vm_configs",
]

COMMANDS: tuple[str, ...] = ("stop", "cont", "system_reset", "system_powerdown", "quit")
"""Monitor commands a stream may contain the effects of."""

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
    *CAUSES[2:],
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
_SPICE: dict[str, type[m.SpiceConnect | m.SpiceInitialize | m.SpiceDisconnect]] = {
    "spice-connect": m.SpiceConnect,
    "spice-initialize": m.SpiceInitialize,
    "spice-disconnect": m.SpiceDisconnect,
}


# --- argument checking ------------------------------------------------------------


def _profile(profile: ProfileSpec | str) -> ProfileSpec:
    if isinstance(profile, ProfileSpec):
        return profile
    if not isinstance(profile, str):
        raise InvalidArgument(f"profile must be a profile name or a ProfileSpec, not {profile!r}")
    try:
        return get_profile(profile)
    except CatalogError as exc:
        raise InvalidArgument(str(exc)) from None


def _size(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def _names(label: str, value: Collection[str] | None, known: Collection[str]) -> frozenset[str]:
    if value is None:
        return frozenset(known)
    if isinstance(value, str):
        raise InvalidArgument(f"{label} must be a collection of names, not the string {value!r}")
    chosen = frozenset(value)
    unknown = sorted(n for n in chosen if n not in known)
    if unknown:
        raise InvalidArgument(
            f"unknown {label}: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if not chosen:
        raise InvalidArgument(f"{label} must name at least one")
    return chosen


# --- single events ----------------------------------------------------------------


_DEEP = 4  # below this many nested objects, optional members and object branches stop


def _values(type_: Type, name: str, depth: int = 0) -> st.SearchStrategy[Any]:
    if isinstance(type_, Enum):
        return st.sampled_from(type_.values)
    if isinstance(type_, Array):
        return st.lists(_values(type_.of, name, depth + 1), max_size=3 if depth < _DEEP else 0)
    if isinstance(type_, Alternate):
        branches: list[Type] = list(type_.members)
        if depth >= _DEEP:
            branches = [t for t in branches if not isinstance(t, Object)] or branches
        return st.one_of([_values(t, name, depth) for t in branches])
    if isinstance(type_, Object):
        if type_.tag is None:
            return _members(type_.fields, depth)
        tag = type_.member(type_.tag)
        assert tag is not None and isinstance(tag.type, Enum)
        base = tuple(f for f in type_.fields if f.name != type_.tag)
        return st.one_of(
            [
                _members(base, depth, {type_.tag: value}).flatmap(
                    functools.partial(_variant, type_.variants.get(value), depth=depth)
                )
                for value in tag.type.values
            ]
        )
    return _builtin(type_, name)


def _members(
    fields: tuple[Any, ...], depth: int, fixed: dict[str, Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    required = {k: st.just(v) for k, v in (fixed or {}).items()}
    required |= {f.name: _values(f.type, f.name, depth + 1) for f in fields if not f.optional}
    optional = {f.name: _values(f.type, f.name, depth + 1) for f in fields if f.optional}
    return st.fixed_dictionaries(required, optional=optional if depth < _DEEP else {})


def _variant(
    branch: Object | None, base: dict[str, Any], *, depth: int
) -> st.SearchStrategy[dict[str, Any]]:
    if branch is None:
        return st.just(base)
    return _members(branch.fields, depth).map(lambda extra: {**base, **extra})


def _builtin(type_: Builtin, name: str) -> st.SearchStrategy[Any]:
    if type_.name == "str":
        if name == "host":
            return st.sampled_from(("127.0.0.1", "::1", "192.168.122.1", "10.0.0.7"))
        if name in ("service", "port"):
            return st.integers(1, 65535).map(str)
        return st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=16)
    if type_.name == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if type_.name == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if type_.name == "bool":
        return st.booleans()
    if type_.name == "null":
        return st.none()
    return st.none() | st.booleans() | st.integers() | st.text(max_size=8)


def _timestamps() -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries(
        {
            "seconds": st.integers(1_000_000_000, 2_000_000_000),
            "microseconds": st.integers(0, 999_999),
        }
    )


def events(
    *, profile: ProfileSpec | str = DEFAULT_PROFILE, names: Collection[str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Single event messages (``timestamp``, ``event``, ``data``) valid in ``profile``.

    ``names`` restricts the events drawn; each must exist in the profile.
    """
    spec = _profile(profile)
    chosen = sorted(_names(f"event names of {spec.name}", names, spec.events))

    def one(name: str) -> st.SearchStrategy[dict[str, Any]]:
        data = spec.events[name].data
        members: dict[str, st.SearchStrategy[Any]] = {
            "timestamp": _timestamps(),
            "event": st.just(name),
        }
        if data is not None:
            members["data"] = _values(data, name)
        return st.fixed_dictionaries(members)

    return st.sampled_from(chosen).flatmap(one)


# --- where decisions come from ---------------------------------------------------------


class _Choices:
    """The decisions of a walk: drawn by Hypothesis (shrinkable) or by a seeded ``Random``."""

    def integer(self, low: int, high: int) -> int:
        raise NotImplementedError

    def step(self, fn: Callable[[_Choices], _Walk]) -> _Walk:
        """Run one step of a walk (Hypothesis sees it as one unit it can drop)."""
        return fn(self)

    def choice(self, options: Sequence[_T]) -> _T:
        return options[self.integer(0, len(options) - 1)]

    def boolean(self) -> bool:
        return self.integer(0, 1) == 1


class _Drawn(_Choices):
    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        key = (low, high)
        strategy = _INTEGERS.get(key)
        if strategy is None:
            strategy = _INTEGERS[key] = st.integers(low, high)
        return self._draw(strategy)

    def step(self, fn: Callable[[_Choices], _Walk]) -> _Walk:
        return self._draw(_one_step(fn))


@st.composite
def _one_step(draw: st.DrawFn, fn: Callable[[_Choices], _Walk]) -> _Walk:
    return fn(_Drawn(draw))


class _Seeded(_Choices):
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)


_INTEGERS: dict[tuple[int, int], st.SearchStrategy[int]] = {}
_T = TypeVar("_T")


# --- VMs --------------------------------------------------------------------------

_READ_POLICIES = ("report", "stop", "ignore")
_WRITE_POLICIES = ("enospc", "report", "stop", "ignore")


def _watchdog_actions(spec: ProfileSpec) -> tuple[str, ...]:
    watchdog = spec.events.get("WATCHDOG")
    if watchdog is None or watchdog.data is None:
        return ()
    member = watchdog.data.member("action")
    return member.type.values if member is not None and isinstance(member.type, Enum) else ()


def _choose_vm(ch: _Choices, spec: ProfileSpec) -> m.VmConfig:
    disks = tuple(
        m.DiskConfig(
            name=f"virtio{i}",
            node_name=f"#block{100 + 2 * i}",
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
    )


def vm_configs(*, profile: ProfileSpec | str = DEFAULT_PROFILE) -> st.SearchStrategy[m.VmConfig]:
    """VM descriptions a scenario file can express: disks, VNC, SPICE, watchdog, -no-shutdown."""
    spec = _profile(profile)
    return st.composite(lambda draw: _choose_vm(_Drawn(draw), spec))()


# --- walking the machine ----------------------------------------------------------


@dataclass(frozen=True)
class _Move:
    kind: str
    args: dict[str, Any]
    cause: m.Cause | None  # None: the monitor command named by kind


@dataclass
class _Walk:
    """The machine, its clock, and what was emitted and done so far."""

    machine: m.Machine
    clock: m.ManualClock
    allowed: frozenset[str]
    events: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    vnc_seen: int = 0

    def moves(self) -> list[_Move]:
        found: list[_Move] = []
        for kind in _MOVE_ORDER:
            if kind in self.allowed:
                found += self._moves(kind)
        return found

    def _legal(self, move: _Move) -> bool:
        if move.cause is None:
            return move.kind in self.machine.profile.commands
        return self.machine.cause_error(move.cause) is None

    def _moves(self, kind: str) -> list[_Move]:
        vm = self.machine.vm
        options: list[_Move] = []
        if kind in COMMANDS:
            options.append(_Move(kind, {}, None))
        elif kind == "disk-error":
            options += [_Move(kind, {"device": d.name}, m.DiskError(d.name)) for d in vm.disks]
        elif kind == "watchdog" and vm.watchdog is not None:
            options.append(_Move(kind, {}, m.WatchdogExpired()))
        elif kind == "rtc-change":
            options.append(_Move(kind, {"offset": 0}, m.RtcChange(0)))
        elif kind in _GUEST:
            options.append(_Move(kind, {}, _GUEST[kind]))
        elif kind == "vnc-connect":
            label = f"viewer{self.vnc_seen}"
            options.append(_Move(kind, {"client": label}, m.VncConnect(label)))
        elif kind == "vnc-initialize":
            for label in (f"viewer{i}" for i in range(self.vnc_seen)):
                options.append(_Move(kind, {"client": label}, m.VncInitialize(label)))
        elif kind == "vnc-disconnect":
            for label in (f"viewer{i}" for i in range(self.vnc_seen)):
                options.append(_Move(kind, {"client": label}, m.VncDisconnect(label)))
        elif kind in _SPICE:
            for t in _SPICE_CHANNELS:
                args = {"client": _SPICE_CLIENT, "channel_type": t}
                options.append(_Move(kind, args, _SPICE[kind](_SPICE_CLIENT, t)))
        return [o for o in options if self._legal(o)]

    def apply(self, ch: _Choices, move: _Move) -> list[m.Event]:
        """Make the move; its arguments that do not decide legality are chosen now."""
        if move.cause is None:
            outcome = self.machine.execute(move.kind, {})
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
        elif isinstance(cause, m.VncConnect):
            self.vnc_seen += 1
        self.steps.append({"cause": move.kind, **args})
        return self.machine.cause(cause)


def _snapshot(walk: _Walk) -> _Walk:
    machine = walk.machine
    rng = random.Random()
    rng.setstate(machine.rng.getstate())
    # share what never changes; copy the rest (the emitted messages are never mutated)
    memo: dict[int, Any] = {
        id(machine.profile): machine.profile,
        id(machine.vm): machine.vm,
        id(machine.rng): rng,
        id(walk.events): list(walk.events),
        id(walk.steps): list(walk.steps),
    }
    memo.update((id(v), v) for v in vars(machine).values() if isinstance(v, tuple | str))
    return copy.deepcopy(walk, memo)


# A move emits at most this many events (a cont that retries two failing disks).
_MOST_PER_MOVE = 6


def _walk(
    ch: _Choices,
    profile: ProfileSpec,
    vm: m.VmConfig | None,
    min_size: int,
    max_size: int,
    allowed: frozenset[str],
) -> _Walk:
    config = _choose_vm(ch, profile) if vm is None else vm
    clock = m.ManualClock(_START)
    rng = random.Random(ch.integer(0, 2**32 - 1))
    machine = m.Machine(vm=config, profile=profile, clock=clock, rng=rng)
    walk = _Walk(machine, clock, allowed, [], [])
    target = ch.integer(min_size, max_size)
    for _ in range(2 * max_size + 4):
        if len(walk.events) >= target or walk.machine.exited:
            break
        walk = ch.step(functools.partial(_step, walk=walk, min_size=min_size, max_size=max_size))
    # let held-back events go out when their throttle window closes
    while walk.machine.pending_events():
        deadline = walk.machine.next_deadline()
        assert deadline is not None
        walk.clock.now = max(walk.clock.now, deadline)
        walk.events += [e.to_json() for e in walk.machine.poll()]
    return walk


def _step(ch: _Choices, walk: _Walk, min_size: int, max_size: int) -> _Walk:
    """One wait (in milliseconds), then one legal move that keeps the stream within bounds."""
    pause = ch.integer(1, 3000)
    walk.clock.advance(pause / 1000)
    walk.steps.append({"wait": f"{pause}ms"})
    walk.events += [e.to_json() for e in walk.machine.poll()]
    moves = walk.moves()
    while moves:
        move = moves.pop(ch.integer(0, len(moves) - 1))
        held = len(walk.machine.pending_events())
        careful = len(walk.events) < min_size or len(walk.events) + held + _MOST_PER_MOVE > max_size
        before = _snapshot(walk) if careful else walk
        out = walk.apply(ch, move)
        total = len(walk.events) + len(out) + len(walk.machine.pending_events())
        if careful and (total > max_size or (walk.machine.exited and total < min_size)):
            walk = before
            continue
        walk.events += [e.to_json() for e in out]
        break
    return walk


@st.composite
def _walks(
    draw: st.DrawFn,
    profile: ProfileSpec,
    vm: m.VmConfig | None,
    min_size: int,
    max_size: int,
    allowed: frozenset[str],
) -> _Walk:
    walk = _walk(_Drawn(draw), profile, vm, min_size, max_size, allowed)
    if len(walk.events) < min_size:
        reject()
    return walk


def event_streams(
    *,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    vm: m.VmConfig | None = None,
    min_size: int = 0,
    max_size: int = 20,
    causes: Collection[str] | None = None,
) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of event messages a VM emits, drawn by walking the machine's legal moves.

    ``vm`` fixes the VM (default: drawn like :func:`vm_configs`); ``causes`` restricts
    the moves to some of :data:`CAUSES` and :data:`COMMANDS`.  Every stream obeys
    the causal rules and throttling of ``profile``, and holds ``min_size`` to
    ``max_size`` events; time passes between moves (1 ms to 3 s).
    """
    spec = _profile(profile)
    low, high = _bounds("min_size", min_size, "max_size", max_size)
    allowed = _names("causes", causes, (*CAUSES, *COMMANDS))
    return _walks(spec, _vm(vm), low, high, allowed).map(lambda w: w.events)


def generate(
    *,
    seed: int,
    count: int = 20,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    vm: m.VmConfig | None = None,
    causes: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """A reproducible random event stream (without Hypothesis): the same seed, the same stream.

    It holds ``count`` events unless the VM runs out of moves first.
    """
    spec = _profile(profile)
    size = _size("count", count)
    allowed = _names("causes", causes, (*CAUSES, *COMMANDS))
    return _walk(_Seeded(seed), spec, _vm(vm), size, size, allowed).events


def _bounds(low_name: str, low: object, high_name: str, high: object) -> tuple[int, int]:
    lo, hi = _size(low_name, low), _size(high_name, high)
    if hi < lo:
        raise InvalidArgument(f"{high_name}={hi} is less than {low_name}={lo}")
    return lo, hi


def _vm(vm: object) -> m.VmConfig | None:
    if vm is not None and not isinstance(vm, m.VmConfig):
        raise InvalidArgument(f"vm must be a qmpsim.machine.VmConfig, not {vm!r}")
    return vm


# --- scenarios ----------------------------------------------------------------------


def scenarios(
    *,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    vm: m.VmConfig | None = None,
    min_events: int = 0,
    max_events: int = 20,
    causes: Collection[str] | None = None,
) -> st.SearchStrategy[Any]:
    """Whole scenarios (:class:`qmpsim.scenario.Scenario`) the simulator can run.

    The timeline is a walk over the causes (no monitor commands: those are the
    client's), with waits between them; run without client commands, it emits
    ``min_events`` to ``max_events`` events.
    """
    spec = _profile(profile)
    low, high = _bounds("min_events", min_events, "max_events", max_events)
    allowed = _names("causes", causes, CAUSES)
    return _walks(spec, _vm(vm), low, high, allowed).map(lambda w: _scenario(spec, w))


def random_scenario(
    *,
    seed: int,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    max_events: int = 20,
    causes: Collection[str] | None = None,
) -> Any:
    """A reproducible random :class:`~qmpsim.scenario.Scenario` (for ``serve --random``)."""
    spec = _profile(profile)
    size = _size("max_events", max_events)
    allowed = _names("causes", causes, CAUSES)
    ch = _Seeded(seed)
    # a scenario cannot `cont` a paused VM: start it running so that every cause can happen
    vm = dataclasses.replace(_choose_vm(ch, spec), initial_state="running")
    walk = _walk(ch, spec, vm, 0, size, allowed)
    return _scenario(spec, walk, name=f"random-{seed}")


def _scenario(spec: ProfileSpec, walk: _Walk, name: str = "drawn") -> Any:
    from .scenario import loads_scenario

    vm = walk.machine.vm
    doc: dict[str, Any] = {
        "name": name,
        "description": "A random walk over the causes the VM can undergo",
        "profile": spec.name,
        "vm": _vm_doc(vm),
        "steps": walk.steps,
    }
    return loads_scenario(json.dumps(doc, indent=1))


def _vm_doc(vm: m.VmConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {"initial_state": vm.initial_state, "no_shutdown": vm.no_shutdown}
    if vm.watchdog is not None:
        doc["watchdog"] = vm.watchdog
    if vm.disks:
        doc["disks"] = [
            {
                "name": d.name,
                "on_read_error": d.on_read_error,
                "on_write_error": d.on_write_error,
                "thin": d.thin,
            }
            for d in vm.disks
        ]
    if vm.vnc is not None:
        v = vm.vnc
        doc["vnc"] = {"host": v.host, "port": v.port, "family": v.family, "auth": v.auth}
    if vm.spice is not None:
        s = vm.spice
        doc["spice"] = {
            "host": s.host,
            "port": s.port,
            "family": s.family,
            "auth": s.auth,
            "tls": s.tls,
        }
    return doc


def generate_lines(
    *,
    seed: int,
    count: int = 20,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    causes: Collection[str] | None = None,
) -> list[str]:
    """:func:`generate`'s stream as JSON lines, spelt as QEMU spells events on the wire.

    Bad arguments raise ``ValueError`` (the command line reports them as usage errors).
    """
    try:
        stream = generate(seed=seed, count=count, profile=profile, causes=causes)
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from None
    return [json.dumps(event) + "\n" for event in stream]
