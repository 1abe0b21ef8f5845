"""The component interface: dispatch tables, timers on the virtual clock, reset."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from qmpsim.qmp.profiles import CommandSpec, Object, ProfileSpec, get_profile
from qmpsim.vm.component import Component, Timers, dispatch_table, on_cause, on_command
from qmpsim.vm.machine import Machine, ManualClock, modelled_commands
from qmpsim.vm.power import Power
from qmpsim.vm.values import Event, MachineError, Outcome


@dataclass(frozen=True)
class Chime:
    """A test cause."""

    loud: bool = False


class Bell(Component):
    def reset(self) -> None:
        self.rung = 0

    def cause_error(self, cause: Any) -> str | None:
        return "too loud" if cause.loud else None

    @on_command("x-query-bell")
    def query_balloon(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"actual": self.rung})

    @on_cause(Chime)
    def chime(self, _c: Chime) -> list[Event]:
        self.rung += 1
        self.host.after(2.0, lambda: [self.host.event("POWERDOWN")])
        self.host.after(1.0, lambda: [self.host.event("RESUME")])
        return [self.host.event("STOP")]


class Belfry(Machine):
    COMPONENTS = (*Machine.COMPONENTS, Bell)


def _profile() -> ProfileSpec:
    """QEMU 7.2's profile with a command the machine itself does not model."""
    base = get_profile("qemu-7.2")
    extra = CommandSpec("x-query-bell", Object("q_obj_x-query-bell-arg", ()))
    return dataclasses.replace(base, commands={**base.commands, "x-query-bell": extra})


def test_two_parts_claiming_one_command_is_refused() -> None:
    class Other(Component):
        @on_command("query-status")
        def status(self, _args: Mapping[str, Any]) -> Outcome:
            return Outcome({})

    with pytest.raises(TypeError, match="query-status"):
        dispatch_table(Machine, (Power, Other))


def test_the_machine_routes_to_its_components() -> None:
    assert {"query-vnc", "query-spice", "query-status", "cont"} <= modelled_commands()


def test_a_component_command_and_cause_with_timers_in_time_order() -> None:
    clock = ManualClock(100.0)
    machine = Belfry(profile=_profile(), clock=clock)
    assert machine.execute("x-query-bell", {}).reply == {"actual": 0}
    assert [e.name for e in machine.cause(Chime())] == ["STOP"]
    assert machine.execute("x-query-bell", {}).reply == {"actual": 1}
    assert machine.next_deadline() == 101.0
    assert machine.poll() == []
    clock.advance(2.5)
    assert [(e.name, e.time) for e in machine.poll()] == [("RESUME", 102.5), ("POWERDOWN", 102.5)]
    assert machine.next_deadline() is None


def test_a_component_refuses_its_causes_and_reset_drops_its_timers() -> None:
    clock = ManualClock(100.0)
    machine = Belfry(profile=_profile(), clock=clock)
    assert machine.cause_error(Chime(loud=True)) == "too loud"
    with pytest.raises(MachineError, match="too loud"):
        machine.cause(Chime(loud=True))
    machine.cause(Chime())
    machine.reset()
    assert machine.next_deadline() is None
    assert machine.execute("x-query-bell", {}).reply == {"actual": 0}
    assert machine.cause_error(object()) == "object is not a cause this machine knows"  # type: ignore[arg-type]


def test_cancelled_timers_do_not_fire_or_count() -> None:
    timers = Timers()
    first = timers.add(5.0, list)
    timers.add(7.0, list)
    first.cancel()
    assert timers.next_deadline() == 7.0
    assert timers.pop_due(6.0) is None
    due = timers.pop_due(7.0)
    assert due is not None and due.when == 7.0
    assert timers.next_deadline() is None
