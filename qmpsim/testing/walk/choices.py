"""Where a walk's decisions come from: each one an integer in a closed range.

A seeded ``random.Random`` here (:class:`Seeded`), Hypothesis draws in
:mod:`qmpsim.testing.strategies`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["Choices", "Seeded"]

_T = TypeVar("_T")


class Choices:
    """The decisions of a walk: each one an integer in a closed range."""

    def integer(self, low: int, high: int) -> int:
        """An integer from ``low`` to ``high``, both included."""
        raise NotImplementedError

    def step(self, fn: Callable[[Choices], _T]) -> _T:
        """Run one step of a walk (Hypothesis sees it as one unit it can drop)."""
        return fn(self)

    def choice(self, options: Sequence[_T]) -> _T:
        """One of ``options``."""
        return options[self.integer(0, len(options) - 1)]

    def boolean(self) -> bool:
        """Yes or no."""
        return self.integer(0, 1) == 1

    def pick(self, options: list[_T], ok: Callable[[_T], bool]) -> _T | None:
        """Take out of ``options`` one of those that are ``ok``, each as likely (``None``: none).

        The options found not ``ok`` may be taken out too.
        """
        good = [o for o in options if ok(o)]
        if not good:
            options.clear()
            return None
        chosen = good.pop(self.integer(0, len(good) - 1))
        options[:] = good
        return chosen


class Seeded(Choices):
    """Decisions from a seeded ``random.Random``: the same seed, the same walk."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def pick(self, options: list[_T], ok: Callable[[_T], bool]) -> _T | None:
        # The same distribution as checking every option first, for the cost of
        # checking only those tried: try one at random until one is ok.
        while options:
            option = options.pop(self._rng.randint(0, len(options) - 1))
            if ok(option):
                return option
        return None
