"""How a part of the VM model is written: one :class:`Component` per area.

A component owns one area of the VM (the display servers, the guest OS, the
devices, the block graph, the jobs, migration…).  It declares:

* **commands** it answers: a method marked ``@on_command("device_add", …)`` takes the
  validated arguments and returns an :class:`~qmpsim.vm.values.Outcome` (events
  first, then the reply, or a :class:`~qmpsim.vm.values.CommandError` with QEMU's
  class and text);
* **causes** it turns into events: a method marked ``@on_cause(DeviceEjected, …)``
  takes the cause (a frozen dataclass defined beside the component) and returns
  the events it produces now, in QEMU's order;
* :meth:`Component.cause_unmet` — what one of *its* causes needs of the VM's
  hardware (a disk it names, a VNC server, a balloon…) or of the profile, and does
  not find: an :class:`Unmet`.  The guest and the passing of time never bring it
  (only a client that plugs a device may), so the scenario loader asks a machine
  built from the description, and refuses the step at its line;
* :meth:`Component.cause_error` — why one of *its* causes cannot happen now, in the
  state the VM is in (``None``: it can); the machine has already refused every
  cause that is unmet, and every cause of an exited VM;
* :attr:`Component.moved_by_causes_only` — whether only causes move the state its
  ``cause_error`` looks at (no command a client sends does): then a refusal at one
  point of a scenario's timeline is an error in the scenario's order;
* :meth:`Component.reset` — back to the VM as described (also called once when the
  machine is built: set up the component's state there, not in ``__init__``);
* its share of **later**: :meth:`Component.next_deadline` and :meth:`Component.poll`
  for state it keeps itself, or, simpler, ``self.host.after(seconds, action)``,
  a one-shot timer on the virtual clock that the machine keeps, fires in time
  order from its ``poll`` and drops on reset.

The machine builds one dispatch table from its own handlers and every
component's (:func:`dispatch_table`, once per machine class); two parts claiming
one command or cause is a programming error, raised then.  A command handler runs
only for a command the profile has, on a VM that has not exited, after the events
already due went out.  A component reaches the rest of the VM only through its
:class:`Host` (the machine): the VM description, the profile, the clock and the
seeded generator (read them at each use: a simulator replaces the clock after
construction), the run state, and the helpers that make a validated event, stop
the VM, shut it down or pass an event through QEMU's throttle.  When one component
needs another's state (the devices ask the guest how it answers an unplug
request), it imports that component's module and asks ``self.host.part(Guest)``;
imports between components point one way (see ``tests/test_layering.py``).

A minimal component::

    @dataclass(frozen=True)
    class Chime:
        "A cause: the guest rings."

    class Bell(Component):
        def reset(self) -> None:
            self.rung = 0

        @on_command("query-bell")
        def query_bell(self, args: Mapping[str, Any]) -> Outcome:
            return Outcome({"rung": self.rung})

        @on_cause(Chime)
        def chime(self, c: Chime) -> list[Event]:
            self.rung += 1
            self.host.after(0.5, lambda: [self.host.event("BELL", {"n": self.rung})])
            return []

and in :class:`~qmpsim.vm.machine.Machine`, ``Bell`` joins ``COMPONENTS``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from .values import Clock, Event, Outcome

if TYPE_CHECKING:
    from qmpsim.qmp.profiles import ProfileSpec

CommandHandler = Callable[[Any, Mapping[str, Any]], Outcome]
"""An unbound command handler: ``(part, arguments) -> Outcome``."""
CauseHandler = Callable[[Any, Any], list[Event]]
"""An unbound cause handler: ``(part, cause) -> events``."""
Action = Callable[[], list[Event]]
"""What a timer does when it fires: the events it produces then."""

_F = TypeVar("_F", bound=Callable[..., Any])
_C = TypeVar("_C", bound="Component")


def on_command(*names: str) -> Callable[[_F], _F]:
    """Mark a method as the handler of the QMP commands ``names``."""

    def mark(fn: _F) -> _F:
        fn.__dict__.setdefault("_qmp_commands", []).extend(names)
        return fn

    return mark


def on_cause(*types: type) -> Callable[[_F], _F]:
    """Mark a method as the handler of the cause classes ``types``."""

    def mark(fn: _F) -> _F:
        fn.__dict__.setdefault("_qmp_causes", []).extend(types)
        return fn

    return mark


@dataclass(frozen=True)
class Route:
    """Where a command or cause goes: the part's class (``None``: the machine) and handler."""

    part: type[Component] | None
    handler: Callable[..., Any]


def dispatch_table(
    owner: type, parts: tuple[type[Component], ...]
) -> tuple[dict[str, Route], dict[type, Route]]:
    """The commands and causes of ``owner`` (the machine) and of each part, as routes."""
    commands: dict[str, Route] = {}
    causes: dict[type, Route] = {}
    for part in (None, *parts):
        klass = owner if part is None else part
        for base in reversed(klass.__mro__):
            for fn in vars(base).values():
                for name in getattr(fn, "_qmp_commands", ()):
                    _claim(commands, name, Route(part, fn))
                for kind in getattr(fn, "_qmp_causes", ()):
                    _claim(causes, kind, Route(part, fn))
    return commands, causes


def _claim(table: dict[Any, Route], key: Any, route: Route) -> None:
    taken = table.get(key)
    if taken is not None and taken.part is not route.part:
        raise TypeError(f"{key!r} is handled twice: by {taken.part} and by {route.part}")
    table[key] = route


class Host(Protocol):
    """What a component sees of the machine."""

    @property
    def vm(self) -> Any:
        """The VM description (a :class:`~qmpsim.vm.machine.VmConfig`)."""

    @property
    def profile(self) -> ProfileSpec:
        """The QEMU version's profile."""

    @property
    def clock(self) -> Clock:
        """The clock (read it at each use: a simulator replaces it after construction)."""

    @property
    def rng(self) -> random.Random:
        """The seeded generator; a reset rewinds it."""

    status: str
    exited: bool

    @property
    def running(self) -> bool:
        """Whether the vCPUs run."""

    def event(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """An event stamped now and validated against the profile."""

    def send(self, event: Event) -> list[Event]:
        """``event`` through QEMU's per-event throttle: what goes out now."""

    def stop(self, state: str) -> list[Event]:
        """``vm_stop(state)``: STOP when the vCPUs ran, and the new run state."""

    def shutdown(self, reason: str, *, guest: bool = True) -> list[Event]:
        """SHUTDOWN, then STOP under ``-no-shutdown`` or the VM's exit."""

    def reset_data(self, guest: bool, reason: str) -> dict[str, Any] | None:
        """SHUTDOWN/RESET data for this profile (``None`` where QEMU sent none)."""

    def after(self, seconds: float, action: Action) -> Timer:
        """Run ``action`` ``seconds`` from now on the virtual clock (once)."""

    def part(self, kind: type[_C]) -> _C:
        """The machine's component of class ``kind``."""


@dataclass(frozen=True)
class Unmet:
    """What a cause needs of the VM's hardware or of its profile and does not find: on
    the VM as described it never happens.  ``member`` names the cause's field the text
    is about (``None``: the cause itself); the text says what to add where it can."""

    text: str
    member: str | None = None

    def __str__(self) -> str:
        return self.text


class Component:
    """One area of the VM model; see the module's docstring for the contract."""

    moved_by_causes_only: ClassVar[bool] = False
    """Whether only causes move the state :meth:`cause_error` looks at."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def reset(self) -> None:
        """Back to the VM as described (called at construction too)."""

    def cause_unmet(self, cause: Any) -> Unmet | None:
        """What ``cause`` (one this component handles) needs of the VM's hardware or of
        the profile and does not find; ``None``: nothing."""
        return None

    def cause_error(self, cause: Any) -> str | None:
        """Why ``cause`` (one this component handles, not unmet) cannot happen in the
        state the VM is in now; ``None``: it can."""
        return None

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do (timers set with ``after`` excepted)."""
        return None

    def poll(self) -> list[Event]:
        """Events of this component due by the clock's current time."""
        return []


@dataclass(order=True)
class Timer:
    """One pending action on the virtual clock; :meth:`cancel` drops it."""

    when: float
    seq: int
    action: Action = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Do not run the action."""
        self.cancelled = True


class Timers:
    """The machine's one-shot timers, in time order (ties: the order they were set)."""

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = 0

    def add(self, when: float, action: Action) -> Timer:
        """Run ``action`` once at ``when``."""
        self._seq += 1
        timer = Timer(when, self._seq, action)
        heapq.heappush(self._heap, timer)
        return timer

    def next_deadline(self) -> float | None:
        """When the next live timer fires."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: float) -> Timer | None:
        """The next live timer due by ``now``, taken off the list."""
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return None
        return heapq.heappop(self._heap)

    def clear(self) -> None:
        """Drop every timer."""
        self._heap.clear()
