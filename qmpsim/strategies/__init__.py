"""``qmpsim.strategies`` is :mod:`qmpsim.testing.strategies`: a documented import path, kept.

The module object is the same one, so private names, monkeypatching and pickles agree.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from qmpsim.testing import strategies as _module

if TYPE_CHECKING:
    from qmpsim.testing.strategies import *  # noqa: F403

sys.modules[__name__] = _module
