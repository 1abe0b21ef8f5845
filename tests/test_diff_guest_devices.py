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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from qemu_harness import Referee
from test_diff_machine import Message, RealMonitor, SimMonitor, assert_same, real

from qmpsim.qmp.profiles import ProfileSpec, get_profile
from qmpsim.vm.machine import (
    Cause,
    GuestCrashLoaded,
    GuestPanic,
    ManualClock,
    RtcChange,
    VmConfig,
    WatchdogExpired,
    rtc_path,
)

pytestmark = pytest.mark.qemu

PVPANIC = 0x505  # -device pvpanic: bit 0 of a write is "guest panicked"


@pytest.fixture
def halting_bios(tmp_path: Path) -> str:
    """64 KiB of HLT: the vCPU starts running and halts at the reset vector."""
    path = tmp_path / "halt.bin"
    path.write_bytes(b"\xf4" * 65536)
    return str(path)


@contextmanager
def guest(bios: str, *extra: str, referee: Referee) -> Iterator[RealMonitor]:
    with real("-M", "pc", "-bios", bios, *extra, referee=referee) as qemu:
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


def test_a_panicked_guest_pauses_and_cont_resumes_it(halting_bios: str, real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    sim = SimMonitor(VmConfig(no_shutdown=True), profile)
    with guest(halting_bios, "-device", "pvpanic", "-no-shutdown", referee=real_qemu) as qemu:
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
    assert_same(qemu.messages, sim.messages, profile)


def test_a_panicked_guest_powers_off_by_default(halting_bios: str, real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    sim = SimMonitor(VmConfig(), profile)
    with guest(halting_bios, "-device", "pvpanic", referee=real_qemu) as qemu:
        port_write(qemu, PVPANIC, 1)
        assert qemu.file.readline() == b""  # QEMU exited
        sim.cause(GuestPanic())
    assert sim.machine.exited
    assert [m.get("event") for m in qemu.messages] == ["GUEST_PANICKED", "STOP", "SHUTDOWN"]
    assert_same(qemu.messages, sim.messages, profile)


def test_a_loaded_crash_kernel_is_reported_and_the_guest_runs_on(
    halting_bios: str, real_qemu: Referee
) -> None:
    """pvpanic's second bit: the guest's kdump kernel took over after a panic."""
    profile = get_profile(real_qemu.profile)
    sim = SimMonitor(VmConfig(), profile)
    with guest(halting_bios, "-device", "pvpanic", referee=real_qemu) as qemu:
        for _ in range(2):  # not throttled: each load is reported
            port_write(qemu, PVPANIC, 2)
            sim.cause(GuestCrashLoaded())
            qemu.execute("query-status")
            sim.execute("query-status")
    assert [m.get("event") for m in events(qemu.messages)] == ["GUEST_CRASHLOADED"] * 2
    assert_same(qemu.messages, sim.messages, profile)


# --- throttled events: the watchdog and the RTC ----------------------------------------

IB700 = 0x443  # -device ib700: a write starts the timer; 15 is a timeout of 0 s
CMOS_INDEX, CMOS_DATA, CMOS_YEAR = 0x70, 0x71, 0x09
SECONDS_PER_YEAR = 31_556_952  # a mean Gregorian year


@dataclass(frozen=True)
class Watchdog:
    action: str


@dataclass(frozen=True)
class RtcYear:
    """The guest sets its RTC's year (BCD, 20xx); the offset is QEMU's to compute."""

    year: int


Step = tuple[float, str, object]


class Recorder:
    """Drives the real QEMU and notes when each thing happened, for the replay."""

    def __init__(self, qemu: RealMonitor) -> None:
        self.qemu = qemu
        self.start = time.monotonic()
        self.steps: list[Step] = []
        self.action: str | None = None

    def _note(self, kind: str, what: object) -> None:
        self.steps.append((time.monotonic() - self.start, kind, what))

    def cause(self, what: Watchdog | RtcYear) -> None:
        self._note("cause", what)
        if isinstance(what, Watchdog):
            if what.action != self.action:  # the host changes the action: not in the record
                reply = self.qemu.execute("set-action", {"watchdog": what.action})
                assert reply == {"return": {}}
                self.qemu.messages.pop()
                self.qemu.raw.pop()
                self.action = what.action
            port_write(self.qemu, IB700, 15)
        else:
            port_write(self.qemu, CMOS_INDEX, CMOS_YEAR)
            port_write(self.qemu, CMOS_DATA, int(str(what.year % 100), 16))

    def release(self, event: str) -> None:
        await_event(self.qemu, event)
        self._note("release", event)

    def execute(self, command: str) -> None:
        self._note("execute", command)
        self.qemu.execute(command)


def replay(steps: Sequence[Step], offsets: dict[int, int], profile: ProfileSpec) -> SimMonitor:
    """The recorded steps on a machine whose clock follows the recorded times.

    Where QEMU released a held-back event, the machine's clock moves on to the end
    of its own throttle window (if it holds nothing back, nothing comes out).
    """
    sim = SimMonitor(VmConfig(watchdog="reset"), profile)
    clock = sim.machine.clock
    assert isinstance(clock, ManualClock)
    origin = clock.now
    for at, kind, what in steps:
        clock.now = max(clock.now, origin + at)
        if kind == "release":
            deadline = sim.machine.next_deadline()
            if deadline is not None and deadline > clock.now:
                origin += deadline - clock.now
                clock.now = deadline
        elif kind == "execute":
            assert isinstance(what, str)
            sim.execute(what)
        elif isinstance(what, Watchdog):
            sim.cause(WatchdogExpired(what.action))
        else:
            assert isinstance(what, RtcYear)
            sim.cause(RtcChange(offsets[what.year]))
    sim.execute("query-status")  # what the machine still holds back comes out before it
    return sim


def rtc_offsets(messages: Sequence[Message], years: Sequence[int]) -> dict[int, int]:
    """Each year's offset as QEMU reported it (found by its size); a guess where QEMU
    reported none (a throttled write whose event was replaced)."""
    first = next(m for m in messages if m.get("event") == "RTC_CHANGE")
    host_year = time.gmtime(stamp(first)).tm_year
    offsets = {y: (y - host_year) * SECONDS_PER_YEAR for y in years}
    for m in messages:
        if m.get("event") == "RTC_CHANGE":
            offset = m["data"]["offset"]
            offsets[host_year + round(offset / SECONDS_PER_YEAR)] = offset
    return offsets


def stamp(message: Message) -> float:
    t = message["timestamp"]
    return float(t["seconds"]) + t["microseconds"] / 1e6


def assert_same_in_time(real_messages: list[Message], sim: SimMonitor) -> None:
    """Same messages (timestamps masked), and each event as far from the first as in QEMU:
    a held-back event keeps the time it happened, not the time it was released."""
    assert_same(real_messages, sim.messages, sim.profile)
    real_events, sim_events = events(real_messages), events(sim.messages)
    for r, s in zip(real_events, sim_events, strict=True):
        real_delta = stamp(r) - stamp(real_events[0])
        sim_delta = stamp(s) - stamp(sim_events[0])
        assert abs(real_delta - sim_delta) < 0.5, (r, s)


def test_watchdog_throttle_and_actions(halting_bios: str, real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    with guest(
        halting_bios, "-device", "ib700", "-action", "watchdog=none", referee=real_qemu
    ) as qemu:
        run = Recorder(qemu)
        for _ in range(3):  # the first goes out, the last is held for the rest of the second
            run.cause(Watchdog("none"))
        run.release("WATCHDOG")
        # in the next window: each reset and powerdown happens now, one WATCHDOG later
        run.cause(Watchdog("reset"))
        run.cause(Watchdog("shutdown"))
        run.release("WATCHDOG")
        # pause: the STOP comes now, the held WATCHDOG after it
        run.cause(Watchdog("pause"))
        run.execute("query-status")
        run.release("WATCHDOG")
        run.execute("query-status")
        run.execute("cont")
        qemu.execute("query-status")
    assert [(m.get("event"), m.get("data")) for m in events(qemu.messages)] == [
        ("WATCHDOG", {"action": "none"}),
        ("WATCHDOG", {"action": "none"}),
        ("RESET", {"guest": True, "reason": "guest-reset"}),
        ("POWERDOWN", None),
        ("WATCHDOG", {"action": "shutdown"}),
        ("STOP", None),
        ("WATCHDOG", {"action": "pause"}),
        ("RESUME", None),
    ]
    assert_same_in_time(qemu.messages, replay(run.steps, {}, profile))


def test_rtc_change_throttle_beside_the_watchdog(halting_bios: str, real_qemu: Referee) -> None:
    profile = get_profile(real_qemu.profile)
    years = (2030, 2040, 2050, 2060)
    with guest(
        halting_bios, "-device", "ib700", "-action", "watchdog=none", referee=real_qemu
    ) as qemu:
        run = Recorder(qemu)
        # two throttle windows of their own, open at once
        run.cause(RtcYear(2030))
        run.cause(Watchdog("none"))
        run.cause(RtcYear(2040))
        run.cause(Watchdog("none"))
        run.cause(RtcYear(2050))
        run.release("RTC_CHANGE")
        run.release("WATCHDOG")
        run.cause(RtcYear(2060))  # the window reopened when the held event went out
        run.release("RTC_CHANGE")
        qemu.execute("query-status")
    offsets = rtc_offsets(qemu.messages, years)
    rtc = rtc_path(profile)
    assert [(m["event"], m["data"]) for m in events(qemu.messages)] == [
        ("RTC_CHANGE", {"offset": offsets[2030], "qom-path": rtc}),
        ("WATCHDOG", {"action": "none"}),
        ("RTC_CHANGE", {"offset": offsets[2050], "qom-path": rtc}),
        ("WATCHDOG", {"action": "none"}),
        ("RTC_CHANGE", {"offset": offsets[2060], "qom-path": rtc}),
    ]
    assert_same_in_time(qemu.messages, replay(run.steps, offsets, profile))
