"""Postcopy against real QEMU 7.2 and 10.0: a guestless ``-M pc`` migrating into a second
real QEMU (userfaultfd on its side), switched to postcopy, paused, then cancelled —
7.2 takes the cancel, 10.0 refuses it.  The recovery (``migrate-recover`` on the
destination, ``migrate`` ``resume`` on the source) was watched by hand on both
versions: a real destination
paused in postcopy can have its main loop held by a vCPU faulting on a page that will
not come, so a test cannot rely on its monitor answering.

The source's conversation is compared message by message with qmpsim's (whose
destination is simulated: it accepts the stream).  Masked besides the figures
test_diff_migration.py masks: ``remaining`` and the postcopy counters, which follow how
fast the host ran and how often the destination's firmware faulted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from block_harness import Pair, Real, pair
from qemu_harness import Referee, qemu_process
from test_diff_machine import RealMonitor
from test_diff_migration import TIMING, conforms, run_until

pytestmark = pytest.mark.qemu

MEMORY = "16384"  # a RAM 10.0 cannot send in the seconds the test takes, even as zero pages
CAPS = {
    "capabilities": [
        {"capability": "events", "state": True},
        {"capability": "postcopy-ram", "state": True},
    ]
}
SLOW = {"max-bandwidth": 20_000, "max-postcopy-bandwidth": 20_000}
HIDE = (*TIMING, "remaining", "postcopy-requests", "postcopy-bytes")


def read_until_pass(real: Real, count: int) -> None:
    """Read the real side until MIGRATION_PASS ``count`` (7.2 sends it after
    ``postcopy-active``, 10.0 before)."""
    while not any(
        m.get("event") == "MIGRATION_PASS" and m["data"]["pass"] == count for m in real.messages
    ):
        line = real.monitor.file.readline()
        assert line, "QEMU closed the monitor"
        real.messages.append(json.loads(line))


def resumed(dst: RealMonitor) -> None:
    """Read the real destination until it runs: it has loaded the device state the
    source sent at the switch."""
    while not any(m.get("event") == "RESUME" for m in dst.messages):
        line = dst.file.readline()
        assert line, "the destination closed its monitor"
        dst.messages.append(json.loads(line))


def test_postcopy_switch_pause_and_cancel(referee: Referee, tmp_path: Path) -> None:
    uri = f"unix:{tmp_path / 'in.sock'}"
    with qemu_process("-M", "pc", "-m", MEMORY, "-incoming", uri, referee=referee) as destination:
        dst = RealMonitor(destination)
        try:
            dst.execute("migrate-set-capabilities", CAPS)
            with pair(referee, ["-m", MEMORY]) as both:
                steps(both, dst, uri, modern=referee.profile != "qemu-7.2")
        finally:
            dst.close()
    both.compare(hide=HIDE)
    conforms(both)


def steps(both: Pair, dst: RealMonitor, uri: str, *, modern: bool) -> None:
    both.run("cont")
    both.run("migrate-set-capabilities", CAPS)
    both.run("migrate-set-parameters", SLOW)
    run_until(both, "migrate", {"uri": uri}, "active")
    run_until(both, "migrate-start-postcopy", None, "postcopy-active")
    read_until_pass(both.real, 2)
    resumed(dst)
    both.run("query-status")
    both.run("query-migrate")
    both.run("migrate-set-capabilities", CAPS)  # refused: a migration runs
    both.run("migrate", {"uri": uri, "resume": True})  # refused: nothing is paused
    run_until(both, "migrate-pause", None, "postcopy-paused")
    both.run("query-migrate")
    both.run("migrate", {"uri": uri})  # refused: a migration runs
    both.run("migrate-pause")  # refused: the connection is gone already
    both.run("migrate-recover", {"uri": uri})  # refused: a source's side is not paused
    both.run("query-status")
    # 7.2 says cancelling; whether its thread, waiting for a recovery, then sees the cancel
    # (cancelled, the source in postmigrate) or not is a race: the comparison ends here
    both.run("migrate_cancel")  # refused from 9.2
