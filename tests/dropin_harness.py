"""Run the drop-in QEMU (and the real one) as processes and talk QMP to them, synchronously.

The drop-in runs as the installed ``qmpsim-system-x86_64`` would: ``python -m
qmpsim.qemu`` with a program name, a private run directory and settings directory
(``QMPSIM_RUN_DIR``/``QMPSIM_CONFIG_DIR``), so tests never touch ``/etc`` or ``/run``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0
DROPIN = [sys.executable, "-m", "qmpsim.qemu"]


def dropin_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose run and settings directories are under ``tmp``."""
    env = dict(os.environ)
    env["QMPSIM_RUN_DIR"] = str(tmp / "run")
    env["QMPSIM_CONFIG_DIR"] = str(tmp / "etc")
    env.update(extra or {})
    return env


class Qmp:
    """A line-reading QMP client on a Unix socket."""

    def __init__(self, path: str | Path, *, negotiate: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self.events: list[dict[str, Any]] = []
        self.greeting = self.read()
        if negotiate:
            self.execute("qmp_capabilities")

    def read(self) -> dict[str, Any]:
        line = self.reader.readline()
        if not line:
            raise EOFError("the monitor closed the connection")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Send a command; its reply (``return`` or ``error``), events kept in ``events``."""
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = dict(arguments)
        self.sock.sendall(json.dumps(request).encode())
        while True:
            message = self.read()
            if "event" in message:
                self.events.append(message)
            else:
                return message

    def rest(self) -> list[dict[str, Any]]:
        """Every message until the server closes the connection."""
        out: list[dict[str, Any]] = []
        while line := self.reader.readline():
            out.append(json.loads(line))
        return out

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def wait_for_socket(path: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until another process created the socket ``path`` (or fail if it exited)."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.005)  # polling another process's file, not synchronising our own


@contextmanager
def running(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    wait_for: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """A process of ``command``, killed at the end if it is still running."""
    proc = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
        pass_fds=tuple(pass_fds),
        cwd=ROOT,
    )
    try:
        if wait_for is not None:
            wait_for_socket(wait_for, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)
