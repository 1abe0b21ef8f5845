"""Answers that change once QEMU has loaded its modules: ``qom-list-types`` loads
every one, and QEMU 7.2's spice module then adds its ``-spice`` option group to
``query-command-line-options``.  qmpsim keeps both recorded answers and gives the
one that fits what the session asked before, as QEMU does."""

from __future__ import annotations

import json

import pytest
from qemu_harness import REFEREES, Referee, ask_each, dropin_process, qemu_process, require_qemu

from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.machine import Machine, VmConfig

ASKED = [
    b'{"execute": "query-command-line-options", "id": 1}',
    b'{"execute": "qom-list-types", "id": 2}',
    b'{"execute": "query-command-line-options", "id": 3}',
]


def options(reply: object) -> list[str]:
    assert isinstance(reply, list)
    return [group["option"] for group in reply]


def test_the_spice_option_group_comes_with_the_modules() -> None:
    machine = Machine(profile=get_profile("qemu-7.2"))
    before = options(machine.execute("query-command-line-options", {}).reply)
    machine.execute("qom-list-types", {})
    after = options(machine.execute("query-command-line-options", {}).reply)
    assert "spice" not in before
    assert after == [before[0], "spice", *before[1:]]
    machine.execute("system_reset", {})  # modules stay loaded
    assert options(machine.execute("query-command-line-options", {}).reply) == after
    machine.reset()  # a fresh QEMU, as a fixture gives each test
    assert options(machine.execute("query-command-line-options", {}).reply) == before


def test_a_version_whose_answer_does_not_change_gives_the_same_one() -> None:
    machine = Machine(vm=VmConfig(cpus=1), profile=get_profile("qemu-10.0"))
    before = machine.execute("query-command-line-options", {}).reply
    machine.execute("qom-list-types", {})
    assert machine.execute("query-command-line-options", {}).reply == before


@pytest.mark.qemu
@pytest.mark.parametrize("referee", REFEREES, ids=str)
def test_answers_before_and_after_the_modules_load_as_qemu(referee: Referee) -> None:
    require_qemu(referee)
    with qemu_process(referee=referee) as path:
        _, real = ask_each(path, ASKED)
    with dropin_process(referee=referee) as path:
        _, simulated = ask_each(path, ASKED)
    assert simulated == real
    if referee.version == "7.2":  # the difference this test is about, in the referee itself
        first, third = json.loads(real[0])["return"], json.loads(real[2])["return"]
        assert "spice" not in options(first) and "spice" in options(third)
