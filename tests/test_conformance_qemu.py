"""The checker accepts what a real QEMU 7.2 says, recorded three ways."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import tempfile
import time

import pytest
from qemu_harness import SAFETY_TIMEOUT, qemu_process, read_until_sync

from qmpsim.testing.conformance import check

pytestmark = pytest.mark.qemu


def connect(sock: socket.socket, path: str) -> None:
    """Connect once QEMU listens: its socket file appears a moment before it does."""
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while True:
        try:
            sock.connect(path)
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)  # polling an external process's readiness, not syncing


def events(lines: list[str]) -> list[str]:
    names = []
    for line in lines:
        msg = json.loads(line)
        if "event" in msg:
            names.append(msg["event"])
    return names


def test_run_state_events_from_qemu_pass() -> None:
    commands = ["qmp_capabilities", "stop", "stop", "cont", "cont", "system_reset", "quit"]
    with qemu_process() as path, socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(SAFETY_TIMEOUT)
        connect(sock, path)
        for command in commands:
            sock.sendall(json.dumps({"execute": command}).encode())
        out = read_until_sync(sock, sync=False)  # `quit` closes the connection
    lines = out.decode().splitlines()
    assert events(lines) == ["STOP", "RESUME", "RESET", "SHUTDOWN"]
    assert check(lines, "qemu-7.2") == []
    # the same stream with its STOP repeated is caught
    doubled = [*lines[:3], *lines[2:]]
    assert [v.rule for v in check(doubled)] == ["stop-while-stopped"]


def _rfb_session(path: str) -> None:
    """A raw RFB 3.8 handshake with no authentication, up to the server's init message."""
    with socket.socket(socket.AF_UNIX) as vnc:
        vnc.settimeout(SAFETY_TIMEOUT)
        vnc.connect(path)
        assert vnc.recv(12) == b"RFB 003.008\n"
        vnc.sendall(b"RFB 003.008\n")
        vnc.recv(64)  # security types
        vnc.sendall(b"\x01")  # None
        assert vnc.recv(4) == b"\x00\x00\x00\x00"
        vnc.sendall(b"\x01")  # ClientInit, shared
        assert vnc.recv(4096)  # ServerInit


def test_vnc_events_from_qemu_pass() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="qmpsim-vnc-") as tmp,
        qemu_process("-M", "pc", "-vnc", f"unix:{os.path.join(tmp, 'vnc')}") as qmp,
        socket.socket(socket.AF_UNIX) as sock,
    ):
        sock.settimeout(SAFETY_TIMEOUT)
        connect(sock, qmp)
        with sock.makefile("rwb") as stream:
            lines = [stream.readline().decode()]
            stream.write(b'{"execute": "qmp_capabilities"}')
            stream.flush()
            lines.append(stream.readline().decode())
            _rfb_session(os.path.join(tmp, "vnc"))
            while '"VNC_DISCONNECTED"' not in lines[-1]:
                lines.append(stream.readline().decode())
            stream.write(b'{"execute": "quit"}')
            stream.flush()
            lines += [line.decode() for line in stream]
    assert events(lines) == ["VNC_CONNECTED", "VNC_INITIALIZED", "VNC_DISCONNECTED", "SHUTDOWN"]
    assert check(lines) == []
    no_connect = [line for line in lines if '"VNC_CONNECTED"' not in line]
    # reported once: the checker then treats the session as open
    assert [v.rule for v in check(no_connect)] == ["vnc-session"]


def test_qemu_qmp_debug_log_from_qemu_passes() -> None:
    from qemu.qmp import QMPClient

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    logger = logging.getLogger("qemu.qmp")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    async def session(path: str) -> None:
        client = QMPClient("vm")
        sock = socket.socket(socket.AF_UNIX)
        try:
            connect(sock, path)
        except OSError:
            sock.close()
            raise
        await client.connect(sock)  # the client's transport owns the socket from now on
        try:
            for command in ("stop", "cont", "stop", "system_reset"):
                await client.execute(command)
        finally:
            await client.disconnect()

    try:
        with qemu_process() as path:
            asyncio.run(session(path))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = log.getvalue()
    assert text.count('"event": "STOP"') == 2
    assert check(text.splitlines()) == []
    broken = text.replace('"event": "RESUME"', '"event": "STOP"')
    assert [v.rule for v in check(broken.splitlines())] == ["stop-while-stopped"] * 2
