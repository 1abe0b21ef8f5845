"""A scenario's `vm` section is the one VM description (`VmConfig`), read and written back
by `qmpsim.scenario.vm_section` without a translation in between."""

from __future__ import annotations

import pytest

from qmpsim.errors import ScenarioError
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.loader import loads_scenario
from qmpsim.scenario.text import to_yaml
from qmpsim.scenario.vm_section import vm_document
from qmpsim.vm.description import DeviceConfig, VmConfig
from qmpsim.vm.guest import GuestConfig
from qmpsim.vm.images import DiskConfig, ImageConfig

RICH = """\
name: rich
vm:
  name: db01
  uuid: 12345678-1234-1234-1234-123456789abc
  seed: 9
  initial_state: paused
  cpus: 2
  memory: 1G
  balloon: true
  incoming: defer
  disks:
    - {name: a, thin: true, format: raw, size: 1G, data: 64M, backing: /b.qcow2}
    - {name: b, file: /srv/b.qcow2, node_name: fmt-b, on_read_error: stop}
    - {name: cd, media: cdrom}
  images:
    - {file: /b.qcow2, size: 2G, data: 1M}
  vnc: {port: 5901, auth: vnc}
  spice: {tls: true}
  guest: {powerdown: ignore, unplug_delay: 250ms, balloon_rate: 64M}
steps: []
"""


def test_the_scenario_vm_is_the_machines_description() -> None:
    scenario = loads_scenario(RICH)
    vm = scenario.vm
    assert isinstance(vm, VmConfig) and build_machine(scenario).vm is vm
    assert scenario.seed == 9 and (vm.name, vm.memory, vm.cpus) == ("db01", 1 << 30, 2)
    assert vm.devices == (DeviceConfig("virtio-balloon-pci", "balloon0"),)
    a, b, cd = vm.disks
    assert (a.format, a.virtual_size, a.data, a.backing, a.thin) == (
        "raw",
        1 << 30,
        64 << 20,
        "/b.qcow2",
        True,
    )
    assert (b.file, b.node_name, b.on_read_error) == ("/srv/b.qcow2", "fmt-b", "stop")
    assert (cd.media, cd.file, cd.has_medium) == ("cdrom", "", False)
    # every disk QEMU names gets a name of its own
    assert len({d.node_name for d in (a, b)}) == 2 and a.node_name.startswith("#block")
    assert vm.images == (ImageConfig("/b.qcow2", virtual_size=2 << 30, data=1 << 20),)
    assert vm.guest == GuestConfig(powerdown="ignore", unplug_delay=0.25, balloon_rate=64 << 20)


def test_the_vm_section_round_trips() -> None:
    scenario = loads_scenario(RICH)
    again = loads_scenario(to_yaml(scenario))
    assert (again.vm, again.seed) == (scenario.vm, scenario.seed)
    doc = vm_document(scenario.vm, scenario.seed)
    # what QEMU chose is left out: the automatic node names, the default image file
    assert doc["disks"][0] == {
        "name": "a",
        "thin": True,
        "format": "raw",
        "size": 1 << 30,
        "data": 64 << 20,
        "backing": "/b.qcow2",
    }
    assert doc["disks"][2] == {"name": "cd", "media": "cdrom"}
    assert vm_document(VmConfig()) == {}


def test_a_delay_range_has_no_scenario_spelling() -> None:
    with pytest.raises(ValueError, match=r"powerdown_delay 1\.\.3s"):
        vm_document(VmConfig(guest=GuestConfig(powerdown_delay=(1.0, 3.0))))


def test_a_disk_the_loader_refuses_is_located() -> None:
    with pytest.raises(ScenarioError) as err:
        loads_scenario("name: x\nvm:\n  disks: [{name: a}, {name: a}]\nsteps: []\n", "x.yaml")
    assert "x.yaml:3" in str(err.value) and "a second disk named 'a'" in str(err.value)
    located = r"2:13: guest balloon_rate 0 is not a positive size \(at vm\.guest\)"
    with pytest.raises(ScenarioError, match=located):
        loads_scenario("name: x\nvm: {guest: {balloon_rate: 0}}\nsteps: []\n")


def test_a_disk_config_is_what_the_machine_completes() -> None:
    assert loads_scenario("name: x\nvm: {disks: [{name: d}]}\nsteps: []\n").vm.disks == (
        VmConfig(disks=(DiskConfig("d"),)).disks
    )
