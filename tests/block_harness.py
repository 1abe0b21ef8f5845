"""A real QEMU and qmpsim's machine side by side, for the block layer's differential tests.

Both get one QEMU command line: the real QEMU runs it (``-M pc -S``, real images
``qemu-img`` made in a temporary directory), and qmpsim builds its VM from it
as the drop-in does (:func:`qmpsim.qemu.vmdesc.build_vm`), plus what the image
files say of themselves (format, sizes, backing file, from ``qemu-img info``).
Each step runs on both; the real side then reads events until the one the
step waits for, and the simulated side lets virtual time pass until it has
emitted that event too.  The messages are compared at the end with
timestamps removed and the two random digits of automatic node names masked
(``#block`` + counter + two random digits: the counters must agree); host file
system values are masked only where a test says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from qemu_harness import SAFETY_TIMEOUT, Referee, qemu_process
from test_diff_machine import RealMonitor

from qmpsim.qemu.cmdline import parse_command_line
from qmpsim.qemu.vmdesc import build_vm
from qmpsim.qmp.profiles import get_profile
from qmpsim.qmp.protocol import Request, ServerConnection
from qmpsim.vm.machine import CommandError, DiskConfig, ImageConfig, Machine, ManualClock

Message = dict[str, Any]
_AUTO = re.compile(r"#block(\d+)\d\d")
_HANG = 2000  # virtual-time steps a simulated wait may take before the test gives up


def qemu_img(*args: str) -> str:
    binary = shutil.which("qemu-img")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-img is missing under CI=true; `make test` installs it")
        pytest.skip("qemu-img not installed (make qemu installs it)")
    done = subprocess.run([binary, *args], check=True, capture_output=True, text=True)
    return done.stdout


def make_image(path: Path, fmt: str, size: str, *, backing: Path | None = None) -> str:
    """Create an image as a user does; its path as a string."""
    extra = ["-b", str(backing), "-F", "qcow2"] if backing is not None else []
    qemu_img("create", "-f", fmt, *extra, str(path), size)
    return str(path)


def write_data(path: str, fmt: str, offset: int, length: int) -> None:
    """Fill part of an image with data, as a guest would have."""
    binary = shutil.which("qemu-io")
    assert binary is not None, "qemu-io ships with qemu-img"
    subprocess.run(
        [binary, "-f", fmt, "-c", f"write -P 7 {offset} {length}", path],
        check=True,
        capture_output=True,
    )


def host_image(path: str) -> ImageConfig:
    """What ``path`` is, as QEMU will find it: format, sizes, backing file, data."""
    facts = json.loads(qemu_img("info", "--output=json", "-U", path))
    extents = json.loads(qemu_img("map", "--output=json", "-U", path))
    # the image's own data: extents it holds (depth 0), not its backing file's
    data = sum(e["length"] for e in extents if e["data"] and e["depth"] == 0)
    return ImageConfig(
        path,
        facts["format"],
        facts["virtual-size"],
        os.stat(path).st_blocks * 512,
        facts.get("full-backing-filename"),
        os.stat(path).st_size,
        data,
    )


def mask(value: Any, hide: Sequence[str] = ()) -> Any:
    """``value`` with automatic node names' random digits masked and ``hide`` keys blanked."""
    if isinstance(value, dict):
        return {
            k: "<host>" if k in hide else mask(v, hide)
            for k, v in value.items()
            if k != "timestamp"
        }
    if isinstance(value, list):
        return [mask(v, hide) for v in value]
    if isinstance(value, str):
        return _AUTO.sub(r"#block\1NN", value)
    return value


def events_of(messages: Sequence[Message]) -> list[str]:
    return [m["event"] for m in messages if "event" in m]


class Sim:
    """qmpsim's machine behind its protocol; virtual time passes only when asked."""

    def __init__(self, argv: Sequence[str], images: Sequence[ImageConfig], profile: Any) -> None:
        inv = parse_command_line(["-M", "pc", "-S", *argv])
        vm = build_vm(inv)
        known = {i.file: i for i in images}
        disks = tuple(
            d if d.file not in known else _with_backing(d, known[d.file]) for d in vm.disks
        )
        # a CD-ROM device without a drive: an empty tray (the drop-in lists only drives)
        disks += tuple(
            DiskConfig(str(d["id"]), device="", qdev=str(d["id"]), media="cdrom")
            for d in inv.devices
            if d["driver"] in ("ide-cd", "scsi-cd") and "drive" not in d
        )
        vm = dataclasses.replace(vm, disks=disks, images=tuple(images))
        self.clock = ManualClock()
        self.machine = Machine(vm, profile, self.clock)
        self.conn = ServerConnection(profile)
        self.conn.greeting()
        self.messages: list[Message] = []
        self.execute("qmp_capabilities")
        self.messages.clear()

    def _out(self, data: bytes) -> None:
        for line in data.split(b"\r\n")[:-1]:
            self.messages.append(json.loads(line))

    def _events(self) -> None:
        for event in self.machine.poll():
            self._out(self.conn.send_event(event.to_json()))

    def execute(self, command: str, arguments: Message | None = None) -> Message:
        request: Message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.conn.receive_data(json.dumps(request).encode())
        reply: Message = {}
        while (item := self.conn.next_request()) is not None:
            if isinstance(item, bytes):
                self._out(item)
                continue
            assert isinstance(item, Request)
            outcome = self.machine.execute(item.command, item.arguments)
            for event in outcome.events:
                self._out(self.conn.send_event(event.to_json()))
            if isinstance(outcome.reply, CommandError):
                self._out(self.conn.send_error(item, outcome.reply.error_class, outcome.reply.desc))
            else:
                self._out(self.conn.send_return(item, outcome.reply))
            reply = self.messages[-1]
            self._events()
        return reply

    def cause(self, cause: Any) -> None:
        """Make ``cause`` happen (what the real side's own devices make happen)."""
        for event in self.machine.cause(cause):
            self._out(self.conn.send_event(event.to_json()))
        self._events()

    def wait_for(self, event: str, start: int) -> None:
        """Let virtual time pass until ``event`` was emitted after message ``start``."""
        for _ in range(_HANG):
            if event in events_of(self.messages[start:]):
                return
            deadline = self.machine.next_deadline()
            assert deadline is not None, f"qmpsim will never emit {event}: nothing is pending"
            self.clock.now = max(self.clock.now, deadline)
            self._events()
        pytest.fail(f"qmpsim did not emit {event} within {_HANG} steps of virtual time")


def _with_backing(disk: Any, image: ImageConfig) -> Any:
    return dataclasses.replace(
        disk, backing=image.backing, file_size=image.file_size, data=image.data
    )


class Real:
    """A real QEMU monitor that also reads the events that follow a reply."""

    def __init__(self, monitor: RealMonitor) -> None:
        self.monitor = monitor
        self.messages = monitor.messages

    def execute(self, command: str, arguments: Message | None = None) -> Message:
        return self.monitor.execute(command, arguments)

    def wait_for(self, event: str, start: int) -> None:
        while event not in events_of(self.messages[start:]):
            line = self.monitor.file.readline()
            assert line, "QEMU closed the monitor"
            self.messages.append(json.loads(line))

    def settle(self, command: str, done: Callable[[Any], bool]) -> None:
        """Ask ``command`` until its answer satisfies ``done`` (QEMU finishing I/O it
        started on its own); the probes are not part of the conversation."""
        deadline = time.monotonic() + SAFETY_TIMEOUT
        while True:
            start = len(self.messages)
            reply = self.execute(command)
            probes = [m for m in self.messages[start:] if "event" not in m]
            for probe in probes:
                self.messages.remove(probe)
            if done(reply.get("return")):
                return
            assert time.monotonic() < deadline, f"QEMU never settled: {reply}"
            time.sleep(0.01)  # waiting on a real process's I/O, not syncing the model


class Pair:
    """The real QEMU and the simulated one, stepped together."""

    def __init__(self, real: Real, sim: Sim) -> None:
        self.real = real
        self.sim = sim

    def run(self, command: str, arguments: Message | None = None, *, until: str = "") -> None:
        """Run ``command`` on both; with ``until``, read on until that event came."""
        for side in (self.real, self.sim):
            start = len(side.messages)
            side.execute(command, arguments)
            if until:
                side.wait_for(until, start)

    def compare(self, hide: Sequence[str] = ()) -> None:
        """The two conversations agree, message by message (the first difference shown)."""
        sim, real = mask(self.sim.messages, hide), mask(self.real.messages, hide)
        for i, (s, r) in enumerate(zip(sim, real, strict=False)):
            if s != r:
                pytest.fail(f"message {i} differs:\n{_diff(s, r)}")
        if len(sim) != len(real):
            longer, which = (sim, "qmpsim") if len(sim) > len(real) else (real, "QEMU")
            pytest.fail(f"{which} said more: {json.dumps(longer[min(len(sim), len(real))])}")


def _diff(sim: Any, real: Any, path: str = "") -> str:
    """Where ``sim`` and ``real`` differ, one line per difference."""
    if isinstance(sim, dict) and isinstance(real, dict):
        lines = [_diff(sim.get(k), real.get(k), f"{path}.{k}") for k in {**real, **sim}]
        return "\n".join(line for line in lines if line)
    if isinstance(sim, list) and isinstance(real, list) and len(sim) == len(real):
        lines = [
            _diff(s, r, f"{path}[{i}]") for i, (s, r) in enumerate(zip(sim, real, strict=True))
        ]
        return "\n".join(line for line in lines if line)
    if sim == real:
        return ""
    return f"  {path or 'message'}: qmpsim {json.dumps(sim)}, QEMU {json.dumps(real)}"


@contextmanager
def pair(
    referee: Referee, argv: Sequence[str], images: Sequence[ImageConfig] = ()
) -> Iterator[Pair]:
    """A real QEMU and qmpsim, both started from ``argv`` (after ``-M pc -S``)."""
    with qemu_process("-M", "pc", "-S", *argv, referee=referee) as path:
        monitor = RealMonitor(path)
        try:
            yield Pair(Real(monitor), Sim(argv, images, get_profile(referee.profile)))
        finally:
            monitor.close()
