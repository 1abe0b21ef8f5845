"""The ``qmpsim`` command: :mod:`~qmpsim.cli.app` holds the registry of subcommands and the
exit policy; :mod:`~qmpsim.cli.record` and :mod:`~qmpsim.cli.dropin` register theirs."""

from __future__ import annotations

from qmpsim.cli.app import main

__all__ = ["main"]
