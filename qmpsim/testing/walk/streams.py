"""Walks from a seed: the event streams of ``qmpsim generate`` and the scenarios of
``serve --random``, the same for the same seed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from qmpsim.qmp.profiles import DEFAULT_PROFILE, ProfileSpec
from qmpsim.testing.walk.catalogue import CAUSES, COMMANDS, MOVES
from qmpsim.testing.walk.checks import check_names, check_profile, check_size, check_vm
from qmpsim.testing.walk.choices import Seeded
from qmpsim.testing.walk.vms import choose_vm
from qmpsim.testing.walk.walker import Walk
from qmpsim.vm import machine as m

if TYPE_CHECKING:
    from qmpsim.scenario.model import Scenario

__all__ = ["generate", "generate_lines", "random_scenario", "scenario_of", "stream"]


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
