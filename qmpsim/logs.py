"""How qmpsim logs: the traffic as lines, timestamps, and the VM each line is about.

Every message a simulator sends or receives can go through ``logging`` (DEBUG, on
``qmpsim.traffic``) with :func:`log_traffic`, so ``-v``, pytest's ``caplog`` and
``--log-cli-level`` all show it, in the order it happened, beside the server's
own lines.  A task serving one VM of many sets :data:`CURRENT_VM`; the handler
from :func:`stderr_handler` then names that VM on each line it writes.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from qmpsim.qmp.transcript import Entry

__all__ = ["CURRENT_VM", "VmFilter", "log_traffic", "stderr_handler"]

CURRENT_VM: ContextVar[str | None] = ContextVar("qmpsim_vm", default=None)
"""The VM the current task serves (trio tasks inherit it from the task that started them)."""

traffic = logging.getLogger("qmpsim.traffic")


def log_traffic(entry: Entry) -> None:
    """A transcript observer: each message as a DEBUG line, ``client 1 -> {...}``."""
    if traffic.isEnabledFor(logging.DEBUG):
        for line in entry.lines():
            traffic.debug("%s", line)


class VmFilter(logging.Filter):
    """Adds ``vm`` to each record: ``"vm003: "`` in a task serving vm003, else ``""``."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = CURRENT_VM.get()
        record.vm = f"{name}: " if name else ""
        return True


def stderr_handler(stream: TextIO, prefix: str = "qmpsim") -> logging.Handler:
    """The command line's handler: ``12:03:04.567 qmpsim: vm003: client 1: connected``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s.%(msecs)03d {prefix}: %(vm)s%(message)s", "%H:%M:%S")
    )
    handler.addFilter(VmFilter())
    return handler
