"""Hypothesis strategies: conformant events, event streams, VMs and whole scenarios.

Streams are drawn by walking the machine's legal moves (causes such as a disk
error or a VNC client arriving, monitor commands such as ``stop``/``cont``, and
the passing of time), so every stream obeys the causal rules and the throttling
of its profile.  Draws shrink towards short streams of the simplest moves on the
simplest VM.

The walk itself lives in :mod:`qmpsim.testing.walk`, without Hypothesis; here its
decisions are Hypothesis draws.  This module needs Hypothesis installed
(``pip install qmpsim[hypothesis]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any, TypeVar

try:
    from hypothesis import reject
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
except ImportError as exc:  # a runtime install: say which extra brings it
    raise ImportError(
        "qmpsim.testing.strategies needs Hypothesis: pip install 'qmpsim[hypothesis]'"
    ) from exc

from qmpsim.qmp.profiles import (
    DEFAULT_PROFILE,
    Alternate,
    Array,
    Builtin,
    Enum,
    Object,
    ProfileSpec,
    Type,
)
from qmpsim.qmp.schema import problems
from qmpsim.testing import walk as w
from qmpsim.testing.walk import (
    CAUSES,
    COMMANDS,
    MIGRATION_COMMANDS,
    generate,
    generate_lines,
    random_scenario,
)
from qmpsim.vm import machine as m

__all__ = [
    "CAUSES",
    "COMMANDS",
    "MIGRATION_COMMANDS",
    "event_streams",
    "events",
    "generate",
    "generate_lines",
    "random_scenario",
    "requests",
    "scenarios",
    "vm_configs",
]

_T = TypeVar("_T")


def _checked(check: Callable[..., _T], *args: Any) -> _T:
    """A :mod:`qmpsim.testing.walk` argument check, failing as Hypothesis' ``InvalidArgument``."""
    try:
        return check(*args)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _profile(profile: object) -> ProfileSpec:
    return _checked(w.check_profile, profile)


def _names(label: str, value: Collection[str] | None, known: Collection[str]) -> frozenset[str]:
    return _checked(w.check_names, label, value, known)


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


# --- requests -------------------------------------------------------------------------

# A value of each JSON kind: a member given one its type does not take is refused
_OF_KIND: tuple[Any, ...] = ("qmpsim", 7, 0.5, True, None, {}, [])
_UNEXPECTED = "qmpsim-unexpected"
_NOT_IN_ENUM = "qmpsim-no-such-value"


def _breakable(arguments: Object) -> bool:
    """Whether some request for a command with these arguments is refused by its schema:
    a member can be left out, added, or given the wrong type."""
    return bool(arguments.fields) or not arguments.open


def _wrong_values(type_: Type) -> list[Any]:
    """The values of :data:`_OF_KIND` that ``type_`` refuses (none for ``any``)."""
    return [v for v in _OF_KIND if next(problems(type_, v), None) is not None]


def _break(draw: st.DrawFn, arguments: Object, valid: dict[str, Any]) -> dict[str, Any]:
    """``valid`` with one fault QEMU's argument check refuses."""
    broken = dict(valid)
    required = [f for f in arguments.fields if not f.optional]
    present = [f for f in arguments.fields if f.name in broken]
    typed = [f for f in present if _wrong_values(f.type)]
    faults = [
        *(["missing"] if required else []),
        *(["unexpected"] if not arguments.open else []),
        *(["type"] if typed else []),
        *(["enum"] if any(isinstance(f.type, Enum) for f in present) else []),
    ]
    fault = draw(st.sampled_from(faults))
    if fault == "missing":
        del broken[draw(st.sampled_from(required)).name]
    elif fault == "unexpected":
        broken[_UNEXPECTED] = draw(st.sampled_from(_OF_KIND))
    elif fault == "enum":
        member = draw(st.sampled_from([f for f in present if isinstance(f.type, Enum)]))
        broken[member.name] = _NOT_IN_ENUM
    else:
        member = draw(st.sampled_from(typed))
        broken[member.name] = draw(st.sampled_from(_wrong_values(member.type)))
    return broken


def requests(
    *,
    profile: ProfileSpec | str = DEFAULT_PROFILE,
    commands: Collection[str] | None = None,
    valid: bool = True,
) -> st.SearchStrategy[dict[str, Any]]:
    """Requests (``execute``, ``arguments``) for commands of ``profile``, for a client's own
    fuzzing.

    ``valid=True`` draws arguments the command's schema accepts (the command may still
    refuse them, as QEMU would: a device that does not exist); ``valid=False`` draws
    arguments with one fault QEMU's argument check refuses before running anything — a
    required member left out, an unexpected member, a member of the wrong JSON type or
    an enum value the enum lacks.  ``commands`` restricts the commands drawn; with
    ``valid=False`` only those whose arguments can be broken are drawn.
    """
    spec = _profile(profile)
    chosen = _names(f"commands of {spec.name}", commands, spec.commands)
    if not valid:
        chosen = frozenset(c for c in chosen if _breakable(spec.commands[c].arguments))
        if not chosen:
            raise InvalidArgument("none of these commands takes arguments that can be broken")

    @st.composite
    def one(draw: st.DrawFn, name: str) -> dict[str, Any]:
        arguments_type = spec.commands[name].arguments
        arguments: dict[str, Any] = draw(_values(arguments_type, name))
        if not valid:
            arguments = _break(draw, arguments_type, arguments)
        request: dict[str, Any] = {"execute": name}
        # an empty object may be sent or left out: QEMU takes both
        with_arguments: bool = draw(st.booleans())
        if arguments or with_arguments:
            request["arguments"] = arguments
        return request

    return st.sampled_from(sorted(chosen)).flatmap(one)


# --- the walk's decisions, drawn ------------------------------------------------------


class _Drawn(w.Choices):
    """A walk's decisions drawn by Hypothesis, so that it can shrink them."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        key = (low, high)
        strategy = _INTEGERS.get(key)
        if strategy is None:
            strategy = _INTEGERS[key] = st.integers(low, high)
        return self._draw(strategy)

    def step(self, fn: Callable[[w.Choices], _T]) -> _T:
        result: _T = self._draw(_one_step(fn))
        return result


@st.composite
def _one_step(draw: st.DrawFn, fn: Callable[[w.Choices], Any]) -> Any:
    return fn(_Drawn(draw))


_INTEGERS: dict[tuple[int, int], st.SearchStrategy[int]] = {}


def vm_configs(*, profile: ProfileSpec | str = DEFAULT_PROFILE) -> st.SearchStrategy[m.VmConfig]:
    """VM descriptions a scenario file can express: disks, VNC, SPICE, watchdog, -no-shutdown."""
    spec = _profile(profile)
    return st.composite(lambda draw: w.choose_vm(_Drawn(draw), spec))()


@st.composite
def _walks(
    draw: st.DrawFn,
    profile: ProfileSpec,
    vm: m.VmConfig | None,
    min_size: int,
    max_size: int,
    allowed: frozenset[str],
) -> tuple[w.Walk, list[dict[str, Any]]]:
    ch = _Drawn(draw)
    walk, target = w.Walk.start(ch, profile, vm, min_size, max_size, allowed)
    stream = list(walk.run(ch, target))
    if len(stream) < min_size:
        reject()
    return walk, stream


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
    the moves to some of :data:`CAUSES` and :data:`COMMANDS`, or adds the migration
    moves of :data:`MIGRATION_COMMANDS`, which are drawn only when named.  Every stream obeys
    the causal rules and throttling of ``profile``, and holds ``min_size`` to
    ``max_size`` events; time passes between moves (1 ms to 3 s).
    """
    spec = _profile(profile)
    low, high = _checked(w.check_bounds, "min_size", min_size, "max_size", max_size)
    allowed = _checked(w.check_names, "causes", causes, w.MOVES, (*CAUSES, *COMMANDS))
    return _walks(spec, _checked(w.check_vm, vm), low, high, allowed).map(lambda d: d[1])


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
    low, high = _checked(w.check_bounds, "min_events", min_events, "max_events", max_events)
    allowed = _names("causes", causes, CAUSES)
    walks = _walks(spec, _checked(w.check_vm, vm), low, high, allowed)
    return walks.map(lambda d: w.scenario_of(spec, d[0]))
