"""Character devices as QEMU opens them: listening sockets (bound to a path or
inherited as an fd), ptys, files and sinks.

Everything here is synchronous and done before the event loop starts, so a
daemonizing parent can exit 0 exactly when every monitor listens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from qmpsim.vm.machine import ChardevConfig

from .cmdline import Chardev
from .process import Messages, StartError

__all__ = ["OpenChardev", "close_all", "open_chardevs"]

_BACKLOG = 1  # QEMU listens with a backlog of one for chardev sockets


@dataclass
class OpenChardev:
    """A character device the process has set up."""

    spec: Chardev
    sock: socket.socket | None = None
    """The listening socket of a ``server=on`` socket chardev."""
    bound_path: str | None = None
    """The Unix socket file this process created (removed at exit)."""
    files: list[int] = field(default_factory=list)
    pty_name: str | None = None

    def config(self, *, connected: bool = False) -> ChardevConfig:
        """What ``query-chardev`` reports for it."""
        spec = self.spec
        if self.pty_name is not None:
            return ChardevConfig(spec.id, f"pty:{self.pty_name}")
        if spec.backend == "socket":
            path = self.bound_path
            if path is None and self.sock is not None and self.sock.family == socket.AF_UNIX:
                path = str(self.sock.getsockname()) or None
            return ChardevConfig(spec.id, spec.filename(connected=connected, bound_path=path), True)
        return ChardevConfig(spec.id, spec.filename(connected=False))


def _inherited(fd: int) -> socket.socket:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISSOCK(mode):
        raise StartError(f"File descriptor '{fd}' is not a socket")
    return socket.socket(fileno=fd)


def _listen_unix(path: str) -> socket.socket:
    # QEMU replaces whatever is at the path (unix_listen_saddr() unlinks it first)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartError(f"Failed to bind socket to {path}: {exc.strerror}") from None
    return sock


def _listen_tcp(host: str, port: str) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StartError(f"address resolution failed for {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartError(f"Failed to bind socket: {exc.strerror}") from None
    return sock


def _open(spec: Chardev, messages: Messages) -> OpenChardev:
    opened = OpenChardev(spec)
    if spec.backend == "socket":
        if spec.fd is not None:
            opened.sock = _inherited(spec.fd)
        elif not spec.server:
            raise StartError(f"chardev '{spec.id}': client sockets are not simulated")
        elif spec.path is not None:
            opened.sock = _listen_unix(spec.path)
            opened.bound_path = spec.path
        else:
            opened.sock = _listen_tcp(spec.host or "", spec.port or "0")
    elif spec.backend == "pty":
        leader, follower = os.openpty()
        opened.files += [leader, follower]
        opened.pty_name = os.ttyname(follower)
        messages.error(f"char device redirected to {opened.pty_name} (label {spec.id})")
    elif spec.backend == "file" and spec.path is not None:
        try:
            opened.files.append(os.open(spec.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))
        except OSError as exc:
            raise StartError(f"Could not open '{spec.path}': {exc.strerror}") from None
    return opened


def open_chardevs(specs: Iterable[Chardev], messages: Messages) -> list[OpenChardev]:
    """Open every character device in order; on a failure, close what was opened."""
    opened: list[OpenChardev] = []
    try:
        for spec in specs:
            try:
                opened.append(_open(spec, messages))
            except StartError as exc:
                raise StartError(f"{spec.location}: {exc}" if spec.location else str(exc)) from None
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(chardevs: Iterable[OpenChardev]) -> None:
    """Close sockets and files; remove the socket files this process bound."""
    for chardev in chardevs:
        if chardev.sock is not None:
            chardev.sock.close()
        for fd in chardev.files:
            with contextlib.suppress(OSError):
                os.close(fd)
        if chardev.bound_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(chardev.bound_path)
