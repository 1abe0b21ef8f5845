"""Descriptor passing against real QEMU 7.2 and 10.0: ``getfd``, ``closefd``, fd sets,
and ``migrate fd:NAME``.

Each side is a process with a Unix-socket monitor started from the same command line:
the real QEMU, and qmpsim's drop-in speaking that QEMU's profile.  The same steps go
to both, each request sent with its own fresh descriptors (SCM_RIGHTS), and the
monitor's lines are compared byte for byte.  Masked besides timestamps and versions:
descriptor numbers (each process numbers its own files).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from qemu_harness import (
    SAFETY_TIMEOUT,
    Referee,
    assert_same_bytes,
    connect_unix,
    dropin_process,
    mask,
    qemu_process,
)

pytestmark = pytest.mark.qemu

Message = dict[str, Any]
_FD = re.compile(rb'"fd": \d+')


@dataclass
class Monitor:
    """A QMP client that sends descriptors with its requests and keeps every line read."""

    path: str
    lines: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connect_unix(self.sock, self.path)
        self.sock.settimeout(SAFETY_TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.lines.append(self.file.readline())

    def send(self, request: Message, fds: Sequence[int] = ()) -> Message:
        """Send ``request`` with ``fds``; read up to its reply (events before it kept)."""
        data = json.dumps(request).encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)
        return self.read_until(lambda m: "event" not in m)

    def read_until(self, done: Any) -> Message:
        while True:
            line = self.file.readline()
            assert line, f"the monitor closed; so far: {self.lines}"
            self.lines.append(line)
            message: Message = json.loads(line)
            if done(message):
                return message

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def sides(referee: Referee, *argv: str) -> Iterator[tuple[str, str]]:
    """The QMP socket of the real QEMU and of the drop-in, both started with ``argv``."""
    with (
        qemu_process(*argv, referee=referee) as real,
        dropin_process(*argv, referee=referee) as sim,
    ):
        yield real, sim


def pipe_fds(stack: ExitStack, count: int) -> list[int]:
    """``count`` fresh descriptors (pipe ends), closed here when the test is done."""
    fds: list[int] = []
    while len(fds) < count:
        for fd in os.pipe():
            stack.callback(os.close, fd)
            fds.append(fd)
    return fds[:count]


Step = tuple[str, Message | None, int]
"""A command, its arguments, how many descriptors go with it; ``reconnect`` starts a
new connection."""


def play(path: str, steps: Sequence[Step]) -> bytes:
    """The monitor's lines for ``steps``, masked."""
    lines: list[bytes] = []
    with ExitStack() as stack:
        monitor = Monitor(path, lines)
        for command, arguments, count in [("qmp_capabilities", None, 0), *steps]:
            if command == "reconnect":
                monitor.close()
                monitor = Monitor(path, lines)
                monitor.send({"execute": "qmp_capabilities"})
                continue
            request: Message = {"execute": command}
            if arguments is not None:
                request["arguments"] = arguments
            monitor.send(request, pipe_fds(stack, count))
        monitor.close()
    return _FD.sub(b'"fd": N', mask(b"".join(lines)))


def compare(referee: Referee, argv: Sequence[str], steps: Sequence[Step]) -> None:
    with sides(referee, *argv) as (real, sim):
        expected = play(real, steps)
        got = play(sim, steps)
    assert_same_bytes(got, expected)


GETFD: list[Step] = [
    ("getfd", {"fdname": "a"}, 0),
    ("getfd", {"fdname": "a"}, 1),
    ("getfd", {"fdname": "a"}, 1),  # the name again: the old descriptor is closed
    ("getfd", {"fdname": "1a"}, 1),
    ("getfd", {"fdname": ""}, 1),
    ("closefd", {"fdname": "b"}, 0),
    ("closefd", {"fdname": "a"}, 0),
    ("closefd", {"fdname": "a"}, 0),
    ("closefd", {"fdname": ""}, 0),
    # descriptors sent with another command wait for the next one that takes one
    ("query-status", None, 2),
    ("getfd", {"fdname": "late"}, 0),
    ("getfd", {"fdname": "later"}, 0),
    # and more of them replace those that wait
    ("query-name", None, 1),
    ("query-name", None, 3),
    ("getfd", {"fdname": "x"}, 0),
    ("getfd", {"fdname": "y"}, 0),
    ("reconnect", None, 0),
    ("closefd", {"fdname": "late"}, 0),  # named descriptors outlive the connection
    ("closefd", {"fdname": "x"}, 0),
    ("closefd", {"fdname": "y"}, 0),
]


def test_getfd_and_closefd(referee: Referee) -> None:
    compare(referee, [], GETFD)


FDSETS: list[Step] = [
    ("query-fdsets", None, 0),
    ("add-fd", None, 0),
    ("add-fd", {"opaque": "x"}, 1),
    ("add-fd", {"fdset-id": 5, "opaque": "y"}, 1),
    ("add-fd", {"fdset-id": 5}, 1),
    ("add-fd", {"fdset-id": -1}, 1),
    ("add-fd", None, 2),
    ("add-fd", {"fdset-id": 3}, 1),
    ("add-fd", None, 1),
    ("query-fdsets", None, 0),
    ("remove-fd", {"fdset-id": 9}, 0),
    ("remove-fd", {"fdset-id": 9, "fd": 3}, 0),
    ("remove-fd", {"fdset-id": 5, "fd": 9999}, 0),
    ("remove-fd", {"fdset-id": 1}, 0),
    ("query-fdsets", None, 0),
    ("remove-fd", {"fdset-id": 1}, 0),
    ("reconnect", None, 0),
    ("query-fdsets", None, 0),
    ("cont", None, 0),
    ("remove-fd", {"fdset-id": 2}, 0),
    ("query-fdsets", None, 0),
]


@pytest.mark.parametrize("argv", [[], ["-S"]], ids=["running", "paused"])
def test_fd_sets(referee: Referee, argv: list[str]) -> None:
    # 7.2 closes only while the VM runs, and closes what no one used once its client
    # has gone; 10.0 closes at remove-fd, and fd sets outlive their client
    compare(referee, argv, FDSETS)


EVENTS_ON = {"capabilities": [{"capability": "events", "state": True}]}


def migrate_into_pipe(path: str, command: str) -> tuple[bytes, bytes]:
    """``getfd`` a pipe's writing end, ``migrate fd:`` into it, then ``command``: the
    MIGRATION story and the stream's first bytes (it ends when the VM closes the pipe)."""
    read, write = os.pipe()
    stream = bytearray()
    # read as the VM writes (a pipe holds 64 KiB), to the end: the VM closed the descriptor
    reader = threading.Thread(target=_drain, args=(read, stream), daemon=True)
    reader.start()
    monitor = Monitor(path, [])
    try:
        monitor.send({"execute": "qmp_capabilities"})
        monitor.send({"execute": "migrate-set-capabilities", "arguments": EVENTS_ON})
        # slow enough to cancel; else fast enough that the drop-in's guest RAM (a real
        # QEMU has no guest) goes within QEMU's first 100 ms, as a guestless VM's does
        bandwidth = {"max-bandwidth": 50000 if command == "migrate_cancel" else 1 << 40}
        monitor.send({"execute": "migrate-set-parameters", "arguments": bandwidth})
        monitor.send({"execute": "getfd", "arguments": {"fdname": "migrate"}}, [write])
        os.close(write)
        write = -1
        monitor.send({"execute": "migrate", "arguments": {"uri": "fd:migrate"}})
        if command == "migrate_cancel":
            monitor.read_until(lambda m: m.get("data", {}).get("status") == "active")
            sent = len(monitor.lines)
            monitor.send({"execute": command})
            # QEMU's migration thread can finish cancelling before the main loop writes
            # the reply, which then follows `cancelled`: put it back after `cancelling`,
            # where the main loop's own event puts it, so that both orders read the same
            reply = monitor.lines.pop()
            after = monitor.lines[sent:]
            at = next((i + 1 for i, line in enumerate(after) if _status(line) == "cancelling"), 0)
            monitor.lines.insert(sent + at, reply)
        final = ("completed", "failed", "cancelled")
        if not any(_status(line) in final for line in monitor.lines):
            monitor.read_until(lambda m: m.get("data", {}).get("status") in final)
        reader.join(SAFETY_TIMEOUT)
        assert not reader.is_alive(), "the VM never closed the descriptor"
        monitor.send({"execute": "migrate", "arguments": {"uri": "fd:migrate"}})
        monitor.send({"execute": "query-migrate"})
        monitor.send({"execute": "query-status"})
    finally:
        monitor.close()
        os.close(read)
        if write >= 0:
            os.close(write)
    story = b"".join(_story(json.loads(line)) for line in monitor.lines[1:])
    return story, bytes(stream[:8])


def _status(line: bytes) -> str | None:
    status = json.loads(line).get("data", {}).get("status")
    return status if isinstance(status, str) else None


def _drain(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 1 << 20):
        into += chunk


def _story(message: Message) -> bytes:
    """What a line says apart from figures that depend on the host's speed."""
    if "event" in message:
        return json.dumps([message["event"], message.get("data")]).encode() + b"\n"
    answer = message.get("return", message.get("error"))
    if isinstance(answer, dict) and "status" in answer:
        answer = {k: answer[k] for k in ("status", "error-desc") if k in answer}
    return json.dumps(answer).encode() + b"\n"


@pytest.mark.parametrize("command", ["none", "migrate_cancel"])
def test_migrate_into_a_descriptor(referee: Referee, command: str) -> None:
    for _ in range(3):
        with sides(referee, "-M", "pc", "-S") as (real, sim):
            expected, real_stream = migrate_into_pipe(real, command)
            got, sim_stream = migrate_into_pipe(sim, command)
        # a loaded host made QEMU take over 100 ms for its first round: it synced again
        if b'"pass": 3' not in expected:
            break
    assert real_stream == sim_stream == b"QEVM\x00\x00\x00\x03"
    assert_same_bytes(got, expected)


def real_stream(referee: Referee, where: Path) -> Path:
    """A migration stream of a stopped guestless ``-M pc`` written by the real QEMU."""
    state = where / "state"
    with qemu_process("-M", "pc", "-S", referee=referee) as path:
        monitor = Monitor(path, [])
        monitor.send({"execute": "qmp_capabilities"})
        monitor.send({"execute": "migrate-set-capabilities", "arguments": EVENTS_ON})
        # paused by the user: the destination takes the source's run state from the
        # stream, which qmpsim's outline does not carry (it assumes paused)
        monitor.send({"execute": "cont"})
        monitor.send({"execute": "stop"})
        monitor.send({"execute": "migrate", "arguments": {"uri": f"exec:cat > {state}"}})
        final = ("completed", "failed")
        done = monitor.read_until(lambda m: m.get("data", {}).get("status") in final)
        monitor.close()
    assert done["data"]["status"] == "completed"
    return state


def migrate_in(path: str, state: Path | None) -> bytes:
    """A destination waiting with ``-incoming defer`` loads ``state`` from a descriptor
    passed with ``getfd`` (``None``: is asked for a name it does not have)."""
    monitor = Monitor(path, [])
    try:
        monitor.send({"execute": "qmp_capabilities"})
        monitor.send({"execute": "migrate-set-capabilities", "arguments": EVENTS_ON})
        if state is None:
            # QEMU stays in setup after this from 9.1 and refuses to try again (Illegal
            # migration incoming state: setup); qmpsim lets it try again, as 7.2 does
            monitor.send({"execute": "migrate-incoming", "arguments": {"uri": "fd:nope"}})
            monitor.send({"execute": "query-migrate"})
            return b"".join(_story(json.loads(line)) for line in monitor.lines[1:])
        with state.open("rb") as file:
            monitor.send({"execute": "getfd", "arguments": {"fdname": "in"}}, [file.fileno()])
        monitor.send({"execute": "migrate-incoming", "arguments": {"uri": "fd:in"}})
        final = ("completed", "failed")
        monitor.read_until(lambda m: m.get("data", {}).get("status") in final)
        monitor.send({"execute": "closefd", "arguments": {"fdname": "in"}})
        monitor.send({"execute": "query-status"})
    finally:
        monitor.close()
    return b"".join(_story(json.loads(line)) for line in monitor.lines[1:])


@pytest.mark.parametrize("given", [True, False], ids=["getfd", "unknown-name"])
def test_migrate_incoming_from_a_descriptor(referee: Referee, tmp_path: Path, given: bool) -> None:
    state = real_stream(referee, tmp_path) if given else None
    with sides(referee, "-M", "pc", "-S", "-incoming", "defer") as (real, sim):
        expected = migrate_in(real, state)
        got = migrate_in(sim, state)
    assert (b'"completed"' in expected) == given
    if not given and referee.profile != "qemu-7.2":
        # the refusal is the same; then QEMU 10.0 stays in setup (9.1's
        # migration_incoming_state_setup), which vm.migration does not model yet
        refusal = expected.splitlines()[:-1]
        assert_same_bytes(b"\n".join(got.splitlines()[:-1]), b"\n".join(refusal))
        pytest.xfail("after a failed migrate-incoming QEMU 10.0's query-migrate says setup")
    assert_same_bytes(got, expected)
