"""What a fleet process reserves, and how a fleet's VMs spread over worker processes.

File descriptors are reserved for the connected fleet, not the listeners alone:
:data:`FD_PER_VM` a VM (its listener and one client) plus :data:`FD_HEADROOM`.  A
fleet the hard limit cannot hold is refused before anything starts
(:func:`check_fd_limit`), saying how many workers would hold it.
"""

from __future__ import annotations

import gc
import math
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

from qmpsim.errors import QmpSimError

__all__ = [
    "FD_HEADROOM",
    "FD_PER_VM",
    "FleetLimitError",
    "check_fd_limit",
    "default_workers",
    "fds_needed",
    "fewer_collections",
    "raise_fd_limit",
    "split_fleet",
]

FD_PER_VM = 2
"""File descriptors each VM of a fleet needs: its listening socket and one client."""

FD_HEADROOM = 256
"""File descriptors a fleet process keeps beyond :data:`FD_PER_VM` a VM: the control
socket and its clients, the workers' channels, trio's and Python's own."""

_GC_YOUNG = 10_000
"""Allocations between two passes of the garbage collector over young objects in a
fleet process (Python's default: 700), so that the short-lived objects of the
connections being served die before a pass sees them (see :func:`fewer_collections`)."""


class FleetLimitError(QmpSimError):
    """The fleet cannot run within this system's limits; the message says what to do."""


def fds_needed(vms: int) -> int:
    """File descriptors a fleet process serving ``vms`` VMs, each with a client, needs."""
    return vms * FD_PER_VM + FD_HEADROOM


def default_workers() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_fleet(count: int, workers: int) -> list[range]:
    """The VM indices of each worker: contiguous ranges, sizes within one of each other.

    Never more workers than VMs.
    """
    if count < 1 or workers < 1:
        raise ValueError("a fleet needs at least one VM and one worker")
    workers = min(workers, count)
    size, extra = divmod(count, workers)
    parts, start = [], 0
    for i in range(workers):
        stop = start + size + (1 if i < extra else 0)
        parts.append(range(start, stop))
        start = stop
    return parts


def _hard_fd_limit() -> int | None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def check_fd_limit(count: int, workers: int, hard: int | None = -1) -> None:
    """Refuse, before anything starts, a fleet whose busiest worker would run out of
    file descriptors once every VM has a client (:class:`FleetLimitError`).

    ``hard`` is the hard RLIMIT_NOFILE (``None``: unlimited); this process's by default.
    """
    if hard == -1:
        hard = _hard_fd_limit()
    busiest = len(split_fleet(count, workers)[0])
    need = fds_needed(busiest)
    if hard is None or need <= hard:
        return
    fits = (hard - FD_HEADROOM) // FD_PER_VM
    hint = (
        f"or use --workers {math.ceil(count / fits)} or more (each worker has its own limit)"
        if fits >= 1
        else f"it must be above {FD_HEADROOM + FD_PER_VM}"
    )
    per = "in one process" if workers == 1 else f"in each of {min(workers, count)} workers"
    raise FleetLimitError(
        f"{count} VMs need {need} file descriptors {per} (a listener and a client per "
        f"VM, plus {FD_HEADROOM}) but the hard limit is {hard}: raise it (ulimit -Hn, "
        f"LimitNOFILE=) {hint}"
    )


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (up to the hard limit).

    Returns the new soft limit.  When the hard limit is below ``needed`` a
    :class:`FleetLimitError` says so and what to do, before any socket is opened
    (rather than failing with EMFILE half-way).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FleetLimitError(
            f"this fleet needs {needed} file descriptors but the hard limit is {hard}: "
            f"raise it (ulimit -Hn, LimitNOFILE=) or spread the fleet over more workers"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the garbage collector less often while a fleet process runs.

    A fleet process holds ~100 long-lived objects a VM, a million at 10,000 VMs,
    and each full collection walks them all (~0.5 s here).  Python starts one
    when enough objects survived two young collections; with thousands of
    clients served at once, the tasks of the connections in flight live just
    long enough to survive them at the default threshold, and full collections
    took over half of the fleet's time.  At :data:`_GC_YOUNG` they mostly die
    first (the memory used stays the same).
    """
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], _GC_YOUNG), *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
