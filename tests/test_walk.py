"""The seeded walk behind ``qmpsim generate``: its cost per step does not grow with the stream.

Counted, not timed: the legality checks the walk makes, and the bytes of machine
state it saves to undo a move.  A walk that revisits what it already did (every
VNC client that ever connected, the events emitted so far) grows both with the
length of the stream, so a walk four times as long would cost ~16 times more.
"""

from __future__ import annotations

from typing import Any

import pytest

from qmpsim.qmp.profiles import PROFILES
from qmpsim.testing import walk
from qmpsim.testing.conformance import check_events
from qmpsim.vm import machine as m


def work(monkeypatch: pytest.MonkeyPatch, count: int, seeds: range) -> tuple[int, int, int]:
    """Legality checks, machine copies and bytes copied for ``count`` events per seed."""
    checks = [0]
    copied = [0]
    check = m.Machine.cause_error
    save = walk.Walk._save

    def counting_check(self: m.Machine, cause: Any) -> str | None:
        checks[0] += 1
        return check(self, cause)

    def counting_save(self: walk.Walk) -> Any:
        saved = save(self)
        copied[0] += len(saved.machine)
        return saved

    monkeypatch.setattr(m.Machine, "cause_error", counting_check)
    monkeypatch.setattr(walk.Walk, "_save", counting_save)
    copies = 0
    for seed in seeds:
        ch = walk.Seeded(seed)
        allowed = frozenset((*walk.CAUSES, *walk.COMMANDS))
        w, target = walk.Walk.start(ch, walk.check_profile("qemu-7.2"), None, count, count, allowed)
        assert sum(1 for _ in w.run(ch, target)) <= count
        copies += w.copies
    monkeypatch.undo()
    return checks[0], copies, copied[0]


def test_the_cost_of_a_walk_grows_linearly(monkeypatch: pytest.MonkeyPatch) -> None:
    # VMs with VNC, where a long walk sees many clients come and go
    seeds = range(4)
    short = work(monkeypatch, 400, seeds)
    long = work(monkeypatch, 1600, seeds)
    names = ("legality checks", "machine copies", "bytes copied")
    for name, a, b in zip(names, short, long, strict=True):
        assert 0 < b < 5.5 * a, f"{name}: {a} for 400 events, {b} for 1600"


def test_a_step_saves_the_machine_at_most_once_per_move_tried() -> None:
    ch = walk.Seeded(3)
    allowed = frozenset((*walk.CAUSES, *walk.COMMANDS))
    w, target = walk.Walk.start(ch, walk.check_profile("qemu-7.2"), None, 500, 500, allowed)
    events = list(w.run(ch, target))
    assert len(events) == 500
    steps = len(w.steps) // 2  # a wait and a cause or command each
    assert w.copies <= 2 * steps


def test_the_walk_offers_only_connected_vnc_clients() -> None:
    vm = m.VmConfig(vnc=m.VncConfig(), initial_state="running")
    ch = walk.Seeded(0)
    w, _ = walk.Walk.start(ch, walk.check_profile("qemu-7.2"), vm, 0, 10, frozenset(walk.CAUSES))
    for label in ("viewer0", "viewer1", "viewer2"):
        connect = next(mv for mv in w.moves() if mv.kind == "vnc-connect")
        assert connect.args == {"client": label}
        w.apply(ch, connect)
    leave = next(mv for mv in w.moves() if mv.kind == "vnc-disconnect")
    w.apply(ch, leave)
    offered = [mv for mv in w.candidates() if mv.kind.startswith("vnc-")]
    assert {mv.args["client"] for mv in offered} == {"viewer1", "viewer2", "viewer3"}
    assert all(mv in w.moves() for mv in offered)


@pytest.mark.parametrize("seed", range(6))
def test_a_seeded_stream_is_conformant_and_as_long_as_asked(seed: int) -> None:
    stream = walk.generate(seed=seed, count=300)
    assert stream == walk.generate(seed=seed, count=300)
    assert len(stream) <= 300
    assert check_events(stream, "qemu-7.2") == []


def test_lines_come_as_the_walk_goes() -> None:
    lines = walk.generate_lines(seed=1, count=10**9)
    first = next(lines)  # a billion events are never walked to give the first one
    assert first.endswith("}\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": -1}, "count must be an integer >= 0"),
        ({"causes": ["meteor"]}, "unknown causes: meteor"),
        ({"profile": "qemu-9"}, "unknown profile"),
    ],
)
def test_bad_arguments_raise_value_error_at_the_call(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        walk.generate_lines(seed=0, **kwargs)


@pytest.mark.parametrize("seed", range(5))
def test_an_ending_too_early_is_undone(seed: int) -> None:
    # quit ends the VM at once (a third of the moves offered): each time it is drawn
    # too early, the machine is restored as it was and the walk goes on from there
    vm = m.VmConfig(initial_state="running")
    stream = walk.generate(seed=seed, count=30, vm=vm, causes=["stop", "cont", "quit"])
    assert len(stream) >= 20  # (steps that change nothing use up the walk's step budget)
    assert all(e["event"] != "SHUTDOWN" for e in stream[:-1])  # only as the last one
    assert check_events(stream, "qemu-7.2") == []


@pytest.mark.parametrize("profile", sorted(PROFILES), ids=str)
def test_every_profile_walks_to_a_conformant_stream(profile: str) -> None:
    # each version has the events and enum values it has: a job, a migration, a panic
    # must speak as that QEMU did (before 3.0 no JOB_STATUS_CHANGE, before 2.6 no
    # MIGRATION_PASS, before 2.9 a panic only pauses)
    moves = {*walk.MOVES, *walk.MIGRATION_COMMANDS}
    for seed in range(4):
        for causes in (None, moves):
            events = walk.generate(seed=seed, count=40, profile=profile, causes=causes)
            assert check_events(events, PROFILES[profile]) == [], (profile, seed, causes)
