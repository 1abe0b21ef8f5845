"""Descriptors passed to the monitor: ``getfd``/``closefd``, fd sets, ``fd:NAME`` URIs.

A client of a Unix-socket monitor sends open file descriptors with its messages
(SCM_RIGHTS).  QEMU's socket chardev keeps those that arrived with its latest
read until a command takes one (``qemu_chr_fe_get_msgfd``: the first is taken,
the others are closed) or more arrive (the old ones are closed); so a
descriptor sent with ``query-status`` is still there for a ``getfd`` that
follows without one.  The runtime does the receiving (:mod:`qmpsim.runtime.ancillary`)
and, while it runs a command, points :attr:`Descriptors.received` at what its
connection holds.

``getfd`` names a descriptor in the monitor's table (a name used again closes
the old one), ``closefd`` closes it, and ``monitor_get_fd`` — what ``migrate
fd:NAME`` uses — takes it out of the table: the user owns it from then on.
``add-fd`` puts a descriptor in a numbered fd set (``remove-fd``, ``query-fdsets``).
Up to QEMU 9.0 ``remove-fd`` only marks a descriptor, and marked ones (and,
once no client is connected, all of them) are closed only while the VM runs;
from 9.1 ``remove-fd`` closes at once and fd sets outlive their clients.

What real QEMU 7.2 and 10.0 answer is compared in ``tests/test_diff_fds.py``
(the descriptor numbers aside, which are each process's own).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .component import Component, on_command
from .values import CommandError, Outcome

NO_DESCRIPTOR = "No file descriptor supplied via SCM_RIGHTS"
_REMOVE_AT_ONCE = (9, 1, 0)
"""From QEMU 9.1 (``monitor: Stop removing non-duplicated fds``) ``remove-fd`` closes at
once, and a monitor's disconnection no longer closes what no one used."""


def _nothing() -> int | None:
    return None


def _not_found(name: str) -> CommandError:
    return CommandError("GenericError", f"File descriptor named '{name}' not found")


def close_quietly(fd: int) -> None:
    """Close ``fd``, which is ours; one already closed by its user is no error."""
    with contextlib.suppress(OSError):
        os.close(fd)


@dataclass
class _Member:
    """A descriptor in an fd set."""

    fd: int
    opaque: str | None
    removed: bool = False


@dataclass
class _Fdset:
    id: int
    fds: list[_Member] = field(default_factory=list)
    """In the order they were added (QEMU lists them so)."""


class Descriptors(Component):
    """The monitor's named descriptors and the fd sets; it owns (closes) every one."""

    received: Callable[[], int | None] = staticmethod(_nothing)
    """The descriptor the monitor's connection holds for the command being run, taken
    (``qemu_chr_fe_get_msgfd``), or ``None``; set by the runtime around a command."""

    def reset(self) -> None:
        if hasattr(self, "named"):
            self.close_all()
        self.named: dict[str, int] = {}
        self.fdsets: list[_Fdset] = []  # by id

    def close_all(self) -> None:
        """Close every descriptor held (QEMU exits, or the VM is reset)."""
        for fd in self.named.values():
            close_quietly(fd)
        for fdset in self.fdsets:
            for member in fdset.fds:
                close_quietly(member.fd)
        self.named.clear()
        self.fdsets.clear()

    # --- named descriptors ------------------------------------------------------------

    @on_command("getfd")
    def getfd(self, args: Mapping[str, Any]) -> Outcome:
        fd = self.received()
        if fd is None:
            return Outcome(CommandError("GenericError", NO_DESCRIPTOR))
        name = str(args["fdname"])
        if name[:1].isdigit():  # qemu_isdigit: ASCII only, as is what a name may start with
            close_quietly(fd)
            return Outcome(
                CommandError(
                    "GenericError", "Parameter 'fdname' expects a name not starting with a digit"
                )
            )
        old = self.named.get(name)
        self.named[name] = fd
        if old is not None:
            close_quietly(old)
        return Outcome({})

    @on_command("closefd")
    def closefd(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args["fdname"])
        fd = self.named.pop(name, None)
        if fd is None:
            return Outcome(_not_found(name))
        close_quietly(fd)
        return Outcome({})

    def take(self, name: str) -> int | str:
        """``monitor_get_fd``: the descriptor named ``name``, out of the table (the caller
        closes it), or QEMU's text for why not."""
        fd = self.named.pop(name, None)
        if fd is None:
            return f"File descriptor named '{name}' has not been found"
        return fd

    # --- fd sets ----------------------------------------------------------------------

    @on_command("add-fd")
    def add_fd(self, args: Mapping[str, Any]) -> Outcome:
        fd = self.received()
        if fd is None:
            return Outcome(CommandError("GenericError", NO_DESCRIPTOR))
        wanted = args.get("fdset-id")
        fdset = next((s for s in self.fdsets if s.id == wanted), None)
        if fdset is None:
            if wanted is not None and int(wanted) < 0:
                close_quietly(fd)
                return Outcome(
                    CommandError(
                        "GenericError", "Parameter 'fdset-id' expects a non-negative value"
                    )
                )
            fdset = _Fdset(self._free_id() if wanted is None else int(wanted))
            self.fdsets.append(fdset)
            self.fdsets.sort(key=lambda s: s.id)
        opaque = args.get("opaque")
        fdset.fds.append(_Member(fd, None if opaque is None else str(opaque)))
        return Outcome({"fdset-id": fdset.id, "fd": fd})

    def _free_id(self) -> int:
        """The lowest id above the run of ids from 0 (QEMU's walk of its sorted list)."""
        free = 0
        for fdset in self.fdsets:
            if fdset.id != free:
                break
            free += 1
        return free

    @on_command("remove-fd")
    def remove_fd(self, args: Mapping[str, Any]) -> Outcome:
        wanted = int(args["fdset-id"])
        fd = args.get("fd")
        fdset = next((s for s in self.fdsets if s.id == wanted), None)
        chosen = [] if fdset is None else [m for m in fdset.fds if fd is None or m.fd == fd]
        if fdset is None or (fd is not None and not chosen):
            where = f"fdset-id:{wanted}" if fd is None else f"fdset-id:{wanted}, fd:{int(fd)}"
            return Outcome(_not_found(where))
        for member in chosen[:1] if fd is not None else chosen:
            member.removed = True
        self._cleanup(fdset, clients=1)
        return Outcome({})

    def _cleanup(self, fdset: _Fdset, clients: int) -> None:
        """``monitor_fdset_cleanup``: close what is removed (before 9.1 also everything,
        once no client is connected, but only while the VM runs), and drop an empty set."""
        if self.host.profile.version >= _REMOVE_AT_ONCE:
            closing = [m for m in fdset.fds if m.removed]
        elif self.host.status == "running":
            closing = [m for m in fdset.fds if m.removed or clients == 0]
        else:
            closing = []
        for member in closing:
            fdset.fds.remove(member)
            close_quietly(member.fd)
        if not fdset.fds:
            self.fdsets.remove(fdset)

    def monitor_closed(self, clients: int) -> None:
        """A client disconnected, ``clients`` are left (``monitor_fdsets_cleanup``)."""
        for fdset in list(self.fdsets):
            self._cleanup(fdset, clients)

    @on_command("query-fdsets")
    def query_fdsets(self, _args: Mapping[str, Any]) -> Outcome:
        answer = []
        for fdset in reversed(self.fdsets):  # QEMU prepends as it walks its sorted list
            fds = []
            for member in fdset.fds:
                entry: dict[str, Any] = {"fd": member.fd}
                if member.opaque is not None:
                    entry["opaque"] = member.opaque
                fds.append(entry)
            answer.append({"fdset-id": fdset.id, "fds": fds})
        return Outcome(answer)


@contextlib.contextmanager
def receiving(part: Descriptors, take: Callable[[], int | None]) -> Iterator[None]:
    """While the block runs (one command), ``part`` takes descriptors with ``take``."""
    part.received = take
    try:
        yield
    finally:
        part.received = _nothing


class DescriptorChannel:
    """An outgoing migration into a descriptor (``migrate fd:NAME``), a
    :class:`~qmpsim.vm.migration.Channel`: ``start`` is written when it opens, ``end``
    when the migration completes, and the descriptor is closed when it ends in any
    way, as QEMU's migration closes the channel it took."""

    def __init__(self, fd: int, end: bytes = b"") -> None:
        self.fd: int | None = fd
        self.end = end

    @classmethod
    def open(cls, fd: int, start: bytes = b"", end: bytes = b"") -> DescriptorChannel | str:
        """The channel, or (the descriptor closed) QEMU's text for why the first write
        failed (the reading end of a pipe is closed, the descriptor is read-only)."""
        channel = cls(fd, end)
        problem = channel._write(start)
        if problem is not None:
            channel.abort()
            return problem
        return channel

    def _write(self, data: bytes) -> str | None:
        while data and self.fd is not None:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                return None  # a reader that is behind: the outline of a stream is enough
            except OSError as exc:
                return f"Unable to write to file: {os.strerror(exc.errno or 5)}"
        return None

    def finish(self) -> None:
        """The migration completed: the stream's end, then close."""
        self._write(self.end)
        self.abort()

    def abort(self) -> None:
        """The migration failed or was cancelled: close."""
        fd, self.fd = self.fd, None
        if fd is not None:
            close_quietly(fd)
