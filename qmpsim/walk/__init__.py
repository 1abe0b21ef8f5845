"""``qmpsim.walk`` is :mod:`qmpsim.testing.walk`: a documented import path, kept.

The module object is the same one, so private names, monkeypatching and pickles agree.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from qmpsim.testing import walk as _module

if TYPE_CHECKING:
    from qmpsim.testing.walk import *  # noqa: F403

sys.modules[__name__] = _module
