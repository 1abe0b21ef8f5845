"""Scenarios describe the guest OS (`vm.guest`), the vCPUs and the guest's unplug causes."""

from __future__ import annotations

import pytest

from qmpsim.errors import ScenarioError
from qmpsim.scenario.dryrun import build_machine, show_timeline
from qmpsim.scenario.loader import loads_scenario
from qmpsim.scenario.text import to_yaml
from qmpsim.vm.machine import DeviceEjected, GuestConfig, UnplugRefused

DOC = """\
name: g
vm:
  cpus: 2
  guest:
    powerdown: ignore
    unplug_delay: 250ms
    tray: ignore
steps:
  - cause: guest-unplugs
    device: n1
  - {cause: guest-refuses-unplug, device: /machine/peripheral/e1}
"""


def test_the_guest_and_cpus_reach_the_machine() -> None:
    scenario = loads_scenario(DOC)
    config = scenario.vm  # the machine's own description, no translation
    assert config.cpus == 2
    assert config.guest == GuestConfig(powerdown="ignore", unplug_delay=0.25, tray="ignore")
    assert [s.cause for s in scenario.steps] == [  # type: ignore[attr-defined]
        DeviceEjected("n1"),
        UnplugRefused("/machine/peripheral/e1"),
    ]
    assert build_machine(scenario).vm is config
    assert "pc, 2 vCPUs; guest: power button ignore, unplug eject, tray ignore" in show_timeline(
        scenario
    )


def test_no_guest_by_default_and_an_empty_one_is_cooperative() -> None:
    assert loads_scenario("name: a\nsteps: []\n").vm.guest is None
    empty = loads_scenario("name: b\nvm: {guest: {}}\nsteps: []\n")
    assert empty.vm.guest == GuestConfig()


def test_the_guest_round_trips_through_yaml() -> None:
    scenario = loads_scenario(DOC)
    assert loads_scenario(to_yaml(scenario)).vm == scenario.vm
    empty = loads_scenario("name: b\nvm: {guest: {}}\nsteps: []\n")
    assert loads_scenario(to_yaml(empty)).vm.guest is not None


def test_a_wrong_guest_value_is_located() -> None:
    with pytest.raises(ScenarioError) as err:
        loads_scenario("name: c\nvm:\n  guest:\n    unplug: sometimes\nsteps: []\n", "x.yaml")
    assert "x.yaml:4" in str(err.value) and "vm.guest.unplug" in str(err.value)
