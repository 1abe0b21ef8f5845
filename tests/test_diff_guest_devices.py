"""Guest devices against a real QEMU 7.2: pvpanic, the ib700 watchdog and the CMOS RTC.

A real ``-M pc`` runs firmware that only halts, so nothing but the test touches
the devices: the test writes their I/O ports through ``human-monitor-command``
(``o /b PORT VALUE``), which is what a guest driver would do, and qmpsim's
machine undergoes the matching cause (:class:`GuestPanic`,
:class:`WatchdogExpired`, :class:`RtcChange`).  The events both send are
compared after masking timestamps; the replies to the HMP port writes are left
out (qmpsim has no I/O ports).  Throttled events are replayed in time: the
machine's clock follows the real one, and where QEMU released a held-back event
the machine's clock moves to the end of its own throttle window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_diff_machine import Message, RealMonitor, SimMonitor, assert_same, real

from qmpsim.machine import Cause, GuestPanic, VmConfig

pytestmark = pytest.mark.qemu

PVPANIC = 0x505  # -device pvpanic: bit 0 of a write is "guest panicked"


@pytest.fixture
def halting_bios(tmp_path: Path) -> str:
    """64 KiB of HLT: the vCPU starts running and halts at the reset vector."""
    path = tmp_path / "halt.bin"
    path.write_bytes(b"\xf4" * 65536)
    return str(path)


@contextmanager
def guest(bios: str, *extra: str) -> Iterator[RealMonitor]:
    with real("-M", "pc", "-bios", bios, *extra) as qemu:
        yield qemu


def port_write(qemu: RealMonitor, port: int, value: int) -> None:
    """``o /b``: its reply leaves the record, the events it caused stay."""
    reply = qemu.execute("human-monitor-command", {"command-line": f"o /b {port:#x} {value:#x}"})
    assert reply == {"return": ""}
    qemu.messages.pop()
    qemu.raw.pop()


def await_event(qemu: RealMonitor, name: str) -> None:
    """Read until QEMU sends ``name`` (a throttled event, released when its window closes)."""
    while True:
        try:
            line = qemu.file.readline()
        except TimeoutError:
            pytest.fail(f"QEMU never sent the {name} it held back")
        if not line:
            pytest.fail(f"QEMU closed the monitor before sending {name}")
        message = json.loads(line)
        qemu.messages.append(message)
        qemu.raw.append(line)
        if message.get("event") == name:
            return


def events(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if "event" in m]


# --- pvpanic ------------------------------------------------------------------------


PANIC_STEPS: list[tuple[str, Message | None] | Cause] = [
    ("query-status", None),
    GuestPanic(),
    ("query-status", None),
    ("human-monitor-command", {"command-line": "info status"}),
    ("cont", None),  # QEMU 7.2 resumes a panicked guest: no reset needed
    ("query-status", None),
    GuestPanic(),
    ("human-monitor-command", {"command-line": "cont"}),
    ("query-status", None),
    GuestPanic(),
    ("system_reset", None),
    ("query-status", None),
    ("cont", None),
    ("query-status", None),
]


def test_a_panicked_guest_pauses_and_cont_resumes_it(halting_bios: str) -> None:
    sim = SimMonitor(VmConfig(no_shutdown=True))
    with guest(halting_bios, "-device", "pvpanic", "-no-shutdown") as qemu:
        for step in PANIC_STEPS:
            if isinstance(step, tuple):
                qemu.execute(*step)
                sim.execute(*step)
            else:
                port_write(qemu, PVPANIC, 1)
                sim.cause(step)
    assert [m.get("event") for m in events(qemu.messages)] == [
        "GUEST_PANICKED", "STOP", "RESUME",
        "GUEST_PANICKED", "STOP", "RESUME",
        "GUEST_PANICKED", "STOP", "RESET", "RESUME",
    ]  # fmt: skip
    assert_same(qemu.messages, sim.messages)


def test_a_panicked_guest_powers_off_by_default(halting_bios: str) -> None:
    sim = SimMonitor(VmConfig())
    with guest(halting_bios, "-device", "pvpanic") as qemu:
        port_write(qemu, PVPANIC, 1)
        assert qemu.file.readline() == b""  # QEMU exited
        sim.cause(GuestPanic())
    assert sim.machine.exited
    assert [m.get("event") for m in qemu.messages] == ["GUEST_PANICKED", "STOP", "SHUTDOWN"]
    assert_same(qemu.messages, sim.messages)
