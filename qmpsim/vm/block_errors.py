"""What a block I/O error does: QEMU's error policies and the actions they lead to.

A disk's ``rerror``/``werror`` and a job's ``on-source-error``/``on-target-error``
are a ``BlockdevOnError`` policy (:class:`OnError`); when an error hits, the policy
gives the ``BlockErrorAction`` (:class:`ErrorAction`) that BLOCK_IO_ERROR and
BLOCK_JOB_ERROR report: ``report`` the error to the guest (or the job), ``ignore``
it, or ``stop`` the VM (the job).
"""

from __future__ import annotations

from enum import StrEnum


class OnError(StrEnum):
    """QEMU's ``BlockdevOnError``: what an I/O error should do."""

    REPORT = "report"
    IGNORE = "ignore"
    ENOSPC = "enospc"
    STOP = "stop"
    AUTO = "auto"


class ErrorAction(StrEnum):
    """QEMU's ``BlockErrorAction``: what an I/O error did (BLOCK_IO_ERROR's ``action``)."""

    IGNORE = "ignore"
    REPORT = "report"
    STOP = "stop"


DISK_POLICIES = (OnError.REPORT, OnError.IGNORE, OnError.STOP, OnError.ENOSPC)
"""The policies a disk takes (``-drive rerror=/werror=``; ``auto`` is a job's only)."""

READ_POLICIES = tuple(p for p in DISK_POLICIES if p != OnError.ENOSPC)
"""The policies a disk's reads take (``rerror=``: QEMU refuses ``enospc`` there)."""


def error_action(policy: str, *, nospace: bool) -> ErrorAction:
    """The action an error takes under ``policy`` (``nospace``: the disk is full).

    ``blk_get_error_action()`` for a disk, ``block_job_error_action()`` for a job:
    ``enospc`` (and a job's ``auto``) stops on a full disk and reports any other error.
    """
    if policy in (OnError.ENOSPC, OnError.AUTO):
        return ErrorAction.STOP if nospace else ErrorAction.REPORT
    return ErrorAction(policy)
