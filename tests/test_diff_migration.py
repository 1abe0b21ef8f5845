"""Outgoing migration against real QEMU 7.2 and 10.0: a guestless ``-M pc`` migrated to
a command's standard input, cancelled, held before switchover, and refused.

Both sides run the same steps; the real side reads until the MIGRATION status a step
waits for, the simulated side lets virtual time pass until it said the same.  Masked
besides timestamps: the figures that depend on how fast the host ran (times, rates, the
bytes and pages SeaBIOS had touched by then).  Everything else — events and their
order, run states, ``query-migrate``'s members per status, the refusals' texts — is
compared as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from block_harness import Pair, Real, Sim, events_of, pair
from qemu_harness import SAFETY_TIMEOUT, Referee, qemu_process
from test_diff_machine import RealMonitor

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events

pytestmark = pytest.mark.qemu

TIMING = (
    "transferred",
    "duplicate",
    "normal",
    "normal-bytes",
    "mbps",
    "pages-per-second",
    "setup-time",
    "total-time",
    "downtime",
    "precopy-bytes",
    "downtime-bytes",
)
EVENTS_ON = {"capabilities": [{"capability": "events", "state": True}]}


def _reached(messages: list[dict[str, Any]], status: str) -> bool:
    return any(m.get("event") == "MIGRATION" and m["data"]["status"] == status for m in messages)


def wait_status(side: Real | Sim, status: str, start: int) -> None:
    """Read (or let virtual time pass) until MIGRATION ``status`` came after ``start``."""
    for _ in range(2000):
        if _reached(side.messages[start:], status):
            return
        if isinstance(side, Real):
            line = side.monitor.file.readline()
            assert line, "QEMU closed the monitor"
            side.messages.append(json.loads(line))
        else:
            deadline = side.machine.next_deadline()
            assert deadline is not None, f"qmpsim will never reach {status}"
            side.clock.now = max(side.clock.now, deadline)
            side._events()
    pytest.fail(f"{status} never came: {events_of(side.messages[start:])}")


def run_until(both: Pair, command: str, args: dict[str, Any] | None, status: str) -> None:
    """Run ``command`` on both sides until MIGRATION ``status``.

    QEMU's migration thread races the monitor: what it does once a command has woken it
    (the first MIGRATION_PASS after ``migrate``, ``device`` after ``migrate-continue``)
    can reach the client before the command's reply.  qmpsim always answers first; the
    real side's order is put the same way (``migrate``'s ``setup``, which the main loop
    sends, stays before the reply).
    """
    for side in (both.real, both.sim):
        start = len(side.messages)
        side.execute(command, args)
        if isinstance(side, Real) and command in ("migrate", "migrate-continue"):
            mine = side.messages[start:]
            first = [m for m in mine if m.get("data") == {"status": "setup"}]
            side.messages[start:] = [
                *first,
                *(m for m in mine if "event" not in m),
                *(m for m in mine if "event" in m and m not in first),
            ]
        wait_status(side, status, start)


def postmigrate(both: Pair) -> None:
    """QEMU's main loop sets ``postmigrate`` just after the migration thread said
    ``completed``: ask the real side until it did (the probes are dropped)."""
    settle(both.real, "query-status", lambda r: r["status"] != "finish-migrate")


def settle(real: Real, command: str, done: Any) -> None:
    """Ask ``command`` until ``done(answer)``; its replies leave the conversation (by
    place: an earlier equal reply stays), the events that came meanwhile stay."""
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while True:
        start = len(real.messages)
        reply = real.execute(command)
        real.messages[start:] = [m for m in real.messages[start:] if "event" in m]
        if done(reply.get("return")):
            return
        assert time.monotonic() < deadline, f"QEMU never settled: {reply}"
        time.sleep(0.01)  # waiting on a real process's migration thread, not syncing


def slow(real: Real) -> bool:
    """Whether the real QEMU took more than 100 ms for its first round: it had measured
    its bandwidth by then and synced its bitmap once more before switching over
    (qmpsim does the same for a round that long; a loaded host makes QEMU that slow)."""
    for m in real.messages:
        if m.get("event") == "MIGRATION_PASS" and m["data"]["pass"] > 2:
            return True
        if m.get("event") == "STOP" or (
            m.get("event") == "MIGRATION" and m["data"]["status"] == "pre-switchover"
        ):
            return any(
                p.get("event") == "MIGRATION_PASS" and p["data"]["pass"] == 2
                for p in real.messages[: real.messages.index(m)]
            )
        ram = m.get("return", {}).get("ram", {}) if isinstance(m.get("return"), dict) else {}
        if ram.get("dirty-sync-count", 0) > 2:
            return True
    return False


def compare_fast(referee: Referee, steps: Callable[[Pair], None], hide: tuple[str, ...]) -> None:
    """Run ``steps`` on both sides and compare; again (up to 3 times) when the real QEMU
    was too slow for the path the test is about."""
    for _ in range(3):
        with pair(referee, []) as both:
            steps(both)
        if not slow(both.real):
            both.compare(hide=hide)
            conforms(both)
            return
    pytest.fail("QEMU took over 100 ms for its first round three times in a row")


def conforms(both: Pair) -> None:
    """QEMU's own stream, and qmpsim's, pass the checker's rules (migration's among them)."""
    for side in (both.real, both.sim):
        events = [m for m in side.messages if "event" in m]
        assert check_events(events, get_profile(both.sim.machine.profile.name)) == []


@pytest.fixture
def out(tmp_path: Path) -> str:
    return f"exec:cat > {tmp_path / 'state'}"


def test_a_running_vm_migrates_stops_and_stays_in_postmigrate(referee: Referee, out: str) -> None:
    def steps(both: Pair) -> None:
        both.run("cont")
        both.run("query-migrate")
        both.run("query-migrate-capabilities")
        both.run("query-migrate-parameters")
        both.run("migrate-set-capabilities", EVENTS_ON)
        run_until(both, "migrate", {"uri": out}, "completed")
        postmigrate(both)
        both.run("query-migrate")
        both.run("query-status")
        both.run("migrate", {"uri": out})
        both.run("migrate-start-postcopy")
        both.run("cont")
        both.run("query-status")

    compare_fast(referee, steps, TIMING)


def test_a_paused_vm_migrates_without_stop(referee: Referee, out: str) -> None:
    def steps(both: Pair) -> None:
        both.run("migrate-set-capabilities", EVENTS_ON)
        run_until(both, "migrate", {"uri": out}, "completed")
        postmigrate(both)
        both.run("query-migrate")
        both.run("query-status")

    compare_fast(referee, steps, TIMING)


def test_events_only_with_the_capability(referee: Referee, out: str) -> None:
    def steps(both: Pair) -> None:
        both.run("cont")
        both.run("migrate", {"uri": out})
        settle(both.real, "query-status", lambda r: r["status"] == "postmigrate")
        while both.sim.machine.status != "postmigrate":
            deadline = both.sim.machine.next_deadline()
            assert deadline is not None
            both.sim.clock.now = max(both.sim.clock.now, deadline)
            both.sim._events()
        both.run("query-status")
        both.run("query-migrate")

    compare_fast(referee, steps, TIMING)


def test_cancel_while_active(referee: Referee, out: str) -> None:
    with pair(referee, []) as both:
        both.run("cont")
        both.run("migrate-set-capabilities", EVENTS_ON)
        both.run("migrate-set-parameters", {"max-bandwidth": 50000})
        run_until(both, "migrate", {"uri": out}, "active")
        both.run("query-migrate")
        both.run("migrate", {"uri": out})
        both.run("migrate-set-capabilities", EVENTS_ON)
        run_until(both, "migrate_cancel", None, "cancelled")
        both.run("query-migrate")
        both.run("query-status")
        both.run("migrate_cancel")
    both.compare(hide=(*TIMING, "remaining"))
    conforms(both)


def test_pause_before_switchover_waits_for_migrate_continue(referee: Referee, out: str) -> None:
    caps = [{"capability": c, "state": True} for c in ("events", "pause-before-switchover")]

    def steps(both: Pair) -> None:
        both.run("cont")
        both.run("migrate-set-capabilities", {"capabilities": caps})
        run_until(both, "migrate", {"uri": out}, "pre-switchover")
        both.run("query-migrate")
        both.run("query-status")
        both.run("migrate-continue", {"state": "active"})
        run_until(both, "migrate-continue", {"state": "pre-switchover"}, "completed")
        postmigrate(both)
        both.run("query-migrate")

    compare_fast(referee, steps, TIMING)


BAD_URIS = ["foo:bar", "tcp:", "tcp:localhost", "unix:", "fd:", "fd:nofd", "file:", "vsock:"]


def test_refusals(referee: Referee) -> None:
    with pair(referee, []) as both:
        both.run("migrate-set-capabilities", EVENTS_ON)
        for uri in BAD_URIS:
            both.run("migrate", {"uri": uri})
            both.run("query-migrate")
        both.run("migrate-start-postcopy")
        both.run("migrate-pause")
        both.run("migrate-recover", {"uri": "tcp:127.0.0.1:4444"})
        both.run("migrate-incoming", {"uri": "tcp:127.0.0.1:4444"})
        both.run("migrate-continue", {"state": "pre-switchover"})
        both.run("migrate-set-parameters", {"downtime-limit": 2000001})
        both.run(
            "migrate-set-capabilities",
            {"capabilities": [{"capability": "postcopy-ram", "state": True}]},
        )
        both.run("migrate-start-postcopy")
        both.run("query-migrate-capabilities")
        both.run("migrate-set-parameters", {"downtime-limit": 100, "max-bandwidth": 1000})
        both.run("query-migrate-parameters")
    both.compare()


def test_a_destination_waits_in_inmigrate(referee: Referee, tmp_path: Path) -> None:
    sock = str(tmp_path / "incoming.sock")
    with pair(referee, ["-incoming", "defer"]) as both:
        both.run("query-status")
        both.run("query-migrate")
        both.run("migrate", {"uri": f"unix:{sock}"})
        both.run("migrate-set-capabilities", EVENTS_ON)
        both.run("migrate-incoming", {"uri": "foo:bar"})
        both.run("query-migrate")
        both.run("migrate-incoming", {"uri": f"unix:{sock}"})
        both.run("query-migrate")
        both.run("migrate-incoming", {"uri": f"unix:{sock}"})
        both.run("cont")
        both.run("stop")
        both.run("query-status")
        both.run("migrate-recover", {"uri": f"unix:{sock}"})
        both.run("migrate-pause")
        both.run("migrate-start-postcopy")
        both.run("migrate_cancel")
    both.compare()


def test_a_destination_listening_from_its_command_line(referee: Referee, tmp_path: Path) -> None:
    sock = str(tmp_path / "incoming.sock")
    with pair(referee, ["-incoming", f"unix:{sock}"]) as both:
        both.run("query-migrate")
        both.run("query-status")
        both.run("migrate-incoming", {"uri": f"unix:{sock}"})
    both.compare()


def test_a_real_qemu_migrates_into_a_simulator(real_qemu: Referee, tmp_path: Path) -> None:
    from qmpsim.runtime.background import BackgroundSimulator
    from qmpsim.runtime.server import Simulator
    from qmpsim.vm.machine import VmConfig

    uri = f"unix:{tmp_path / 'incoming.sock'}"
    waiting = Simulator(vm=VmConfig(machine="pc", cpus=1, incoming=uri))
    with (
        BackgroundSimulator(waiting, unix=tmp_path / "qmp.sock") as bg,
        qemu_process("-M", "pc", referee=real_qemu) as path,
    ):
        source = RealMonitor(path)
        try:
            source.execute("migrate-set-capabilities", EVENTS_ON)
            source.execute("migrate", {"uri": uri})
            while not _reached(source.messages, "completed"):
                source.messages.append(json.loads(source.file.readline()))
            deadline = time.monotonic() + SAFETY_TIMEOUT
            while bg.call(lambda: waiting.machine.status) == "inmigrate":
                assert time.monotonic() < deadline, "the simulator never took the VM's state"
                time.sleep(0.01)  # waiting on the simulator's thread reading a real stream
            assert bg.call(lambda: waiting.machine.status) == "running"
            info = bg.call(lambda: waiting.machine.execute("query-migrate", {}).reply)
            assert info == {"status": "completed"}
        finally:
            source.close()
