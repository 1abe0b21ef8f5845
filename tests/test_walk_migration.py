"""Walks and strategies that migrate: opt-in moves (``migrate``, ``migrate_cancel``, a switch
to postcopy, a pause and its resumption), within the walk's bound although a migration
says most of what it says later, on the virtual clock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from qmpsim.testing import strategies, walk
from qmpsim.testing.conformance import check_events

MOVES = ("stop", "cont", "rtc-change", "vnc-connect", *walk.MIGRATION_COMMANDS)


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["status"] for e in events if e["event"] == "MIGRATION"]


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-10.0"])
def test_seeded_walks_migrate_cancel_and_recover_within_their_bound(profile: str) -> None:
    seen: Counter[str] = Counter()
    for seed in range(60):
        for count, causes in ((40, MOVES), (60, walk.MOVES)):
            events = walk.generate(seed=seed, count=count, profile=profile, causes=causes)
            assert len(events) <= count, f"seed {seed}: {len(events)} events, bound {count}"
            assert check_events(events, profile=profile) == [], f"seed {seed}"
            seen.update(statuses(events))
    # migrations that complete, that are cancelled, that switch, pause and go on
    wanted = ["completed", "cancelled", "postcopy-active", "postcopy-paused", "postcopy-recover"]
    assert all(seen[s] > 0 for s in wanted), seen


def test_the_bound_holds_where_the_walk_used_to_overshoot_it() -> None:
    # 400 events (a migration's later events once pushed such a walk to 401)
    for seed in range(12):
        events = walk.generate(seed=seed, count=400, causes=walk.MOVES)
        assert len(events) <= 400
        assert check_events(events) == []


def test_the_migration_moves_are_drawn_only_when_named() -> None:
    for seed in range(40):
        assert "MIGRATION" not in {e["event"] for e in walk.generate(seed=seed, count=30)}
    with pytest.raises(ValueError, match="unknown causes: migrate-now"):
        walk.generate(seed=1, causes=["migrate-now"])


def test_a_stream_drawn_with_a_cancel_shrinks_to_the_cancel() -> None:
    drawn = strategies.event_streams(max_size=30, causes=("stop", "cont", *walk.MIGRATION_COMMANDS))
    smallest = find(
        drawn,
        lambda events: "cancelled" in statuses(events),
        settings=settings(max_examples=2000, database=None, derandomize=True),
    )
    # one slow migration (a fast one completes before any cancel), cancelled: the rest
    # of the walk shrunk away
    assert statuses(smallest)[0] == "setup" and statuses(smallest)[-2:] == [
        "cancelling",
        "cancelled",
    ]
    assert statuses(smallest).count("setup") == 1 and len(smallest) <= 8


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_drawn_streams_that_migrate_conform(data: st.DataObject) -> None:
    profile = data.draw(st.sampled_from(["qemu-7.2", "qemu-10.0"]))
    events = data.draw(strategies.event_streams(profile=profile, max_size=40, causes=MOVES))
    assert len(events) <= 40
    assert check_events(events, profile=profile) == []


def test_the_pages_generate_command_migrates() -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "migration.md"
    (command,) = re.findall(r"```console\n\$ qmpsim (generate .*)\n```", page.read_text())
    ran = subprocess.run(
        [sys.executable, "-m", "qmpsim", *command.split()],
        capture_output=True,
        text=True,
        check=True,
    )
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert len(events) == 12
    assert statuses(events)[:2] == ["setup", "active"]
    assert check_events(events) == []
