"""The seeded walk over a VM's legal moves, behind ``qmpsim generate`` and ``serve --random``.

A walk builds a random VM, then alternates a wait with one legal move (a cause
such as a disk error or a VNC client arriving, or a monitor command such as
``stop``/``cont``), so every stream it emits obeys the causal rules and the
throttling of its profile.  Its decisions come from a :class:`Choices`: a seeded
``random.Random`` here, Hypothesis draws in :mod:`qmpsim.testing.strategies` (which builds
on this package).  Nothing here imports Hypothesis or pytest: a runtime install
runs it.

The package, read from the top down:

- :mod:`.streams`: walks from a seed (``generate``, ``generate_lines``,
  ``random_scenario``) and a walk as a scenario (``scenario_of``);
- :mod:`.walker`: :class:`Walk`, a walk in progress, and its size control;
- :mod:`.moves`: what each move offers, whether it is legal now, its drawn arguments;
  :mod:`.migration_moves` for the opt-in migration moves;
- :mod:`.catalogue`: the moves by name, their order and groups;
- :mod:`.undo`: a machine's state saved and put back, to undo a move;
- :mod:`.vms`: the VM a walk draws; :mod:`.choices`: where decisions come from;
  :mod:`.checks`: the argument checks (``ValueError``).
"""

from __future__ import annotations

# (``x as x``: names the strategies and tests build on, importable from here as before,
# though not among the names ``import *`` brings)
from qmpsim.testing.walk.catalogue import CAUSES, COMMANDS, MIGRATION_COMMANDS
from qmpsim.testing.walk.catalogue import MOVES as MOVES
from qmpsim.testing.walk.checks import check_bounds as check_bounds
from qmpsim.testing.walk.checks import check_names as check_names
from qmpsim.testing.walk.checks import check_profile as check_profile
from qmpsim.testing.walk.checks import check_size as check_size
from qmpsim.testing.walk.checks import check_vm as check_vm
from qmpsim.testing.walk.choices import Choices, Seeded
from qmpsim.testing.walk.streams import generate, generate_lines, random_scenario, stream
from qmpsim.testing.walk.streams import scenario_of as scenario_of
from qmpsim.testing.walk.vms import choose_vm as choose_vm
from qmpsim.testing.walk.walker import Walk

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
