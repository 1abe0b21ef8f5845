"""The stream a seed gives is the one it always gave: ``qmpsim generate --seed N`` in a bug
report reproduces it on a later qmpsim.

Pinned by hash, for a handful of seeds, profiles and move sets (the opt-in migration moves
among them), so that a change to the walk or to the machine that alters what a seed gives
is seen here.  A change meant to alter the streams updates the hashes in the same commit,
and says so.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import pytest

from qmpsim.testing import walk

# the CLI's own default and two far apart, the old move sets and the migration moves
GENERATED = {
    ("qemu-7.2", None, 0): "31c7b099ed320f7a52d4",
    ("qemu-7.2", None, 1): "8b36dde7717eedbd1333",
    ("qemu-5.2", walk.CAUSES, 2): "19e37572f667c583d6e2",
    ("qemu-10.0", walk.MOVES, 3): "f7af3d5ee2093bea4ede",
    ("qemu-11.1", walk.MOVES, 4): "7db42dd118b8c4c58937",
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@pytest.mark.parametrize(("profile", "causes", "seed"), sorted(GENERATED, key=str))
def test_a_seed_gives_the_lines_it_always_gave(
    profile: str, causes: tuple[str, ...] | None, seed: int
) -> None:
    lines = "".join(walk.generate_lines(seed=seed, count=150, profile=profile, causes=causes))
    assert digest(lines) == GENERATED[profile, causes, seed]


class _Plain(walk.Choices):
    """Decisions through the base class's ``pick``, the path Hypothesis draws take."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)


def test_a_walk_and_its_steps_are_what_they_were() -> None:
    ch = _Plain(5)
    w, target = walk.Walk.start(
        ch, walk.check_profile("qemu-7.2"), None, 10, 80, frozenset(walk.MOVES)
    )
    events = list(w.run(ch, target))
    found: dict[str, Any] = {"events": events, "steps": w.steps, "copies": w.copies}
    assert digest(json.dumps(found, sort_keys=True)) == "252e038eb8ca910f489d"
