"""pytest plugin for qmpsim (registered through the ``pytest11`` entry point).

Cheap to import: pytest loads it in every run of the environment, so heavy
imports happen inside fixtures.
"""

from __future__ import annotations
