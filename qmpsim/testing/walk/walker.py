"""The walker: a walk in progress, and the size control that keeps its stream within
the bounds asked for.

A walk alternates a wait with one legal move.  A move that would overshoot the bound, or
end the VM too early, is undone from a saved copy of the machine's own state
(:mod:`~qmpsim.testing.walk.undo`), so each step costs the same however long the walk.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qmpsim.qmp.profiles import ProfileSpec
from qmpsim.testing.walk.catalogue import (
    BALLOON,
    DEVICES,
    JOBS,
    MAY_END,
    MIGRATION,
    MOST_PER_MOVE,
    MOVE_ORDER,
    VNC,
    Move,
)
from qmpsim.testing.walk.choices import Choices
from qmpsim.testing.walk.migration_moves import migration_moves
from qmpsim.testing.walk.moves import (
    balloon_moves,
    device_moves,
    drawn_cause,
    fixed_moves,
    job_moves,
    legal,
    prepare_command,
    vnc_moves,
)
from qmpsim.testing.walk.undo import restore_state, saved_state, shared_tables
from qmpsim.testing.walk.vms import choose_vm
from qmpsim.vm import machine as m
from qmpsim.vm.migration import MOST_AHEAD, Migration

__all__ = ["Walk"]

_START = 1_700_000_000.0


@dataclass
class _Saved:
    """What undoing one move restores."""

    machine: bytes  # the machine's own state, pickled
    now: float
    steps: int
    vnc_seen: int
    vnc_live: list[str]
    nics: int


@dataclass
class Walk:
    """A walk in progress: the machine, its clock, and what was done so far.

    ``count`` is the number of events emitted; ``steps`` the walk as scenario
    steps (``wait`` and ``cause``), kept when ``record`` is true.
    """

    machine: m.Machine
    clock: m.ManualClock
    allowed: frozenset[str]
    min_size: int
    max_size: int
    record: bool = True
    steps: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    copies: int = 0
    """How many times the machine was copied (to undo a move): at most a few a step."""
    vnc_seen: int = 0
    vnc_live: list[str] = field(default_factory=list)
    nics: int = 0
    """How many NICs the walk plugged (each gets the next id)."""
    _fixed: dict[str, list[Move]] = field(default_factory=dict, repr=False)
    _tables: frozenset[str] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        ch: Choices,
        profile: ProfileSpec,
        vm: m.VmConfig | None,
        min_size: int,
        max_size: int,
        allowed: frozenset[str],
        *,
        record: bool = True,
    ) -> tuple[Walk, int]:
        """A new walk on ``vm`` (drawn when ``None``) and the number of events it aims for."""
        config = choose_vm(ch, profile) if vm is None else vm
        clock = m.ManualClock(_START)
        rng = random.Random(ch.integer(0, 2**32 - 1))
        machine = m.Machine(vm=config, profile=profile, clock=clock, rng=rng)
        target = ch.integer(min_size, max_size)
        return cls(machine, clock, allowed, min_size, max_size, record), target

    def run(self, ch: Choices, target: int) -> Iterator[dict[str, Any]]:
        """Walk until ``target`` events (or the VM's end), yielding each event once it is final."""
        for _ in range(2 * self.max_size + 4):
            if self.count >= target or self.machine.exited:
                break
            yield from ch.step(self._step)
        # let held-back events go out when their throttle window closes
        while self.machine.pending_events():
            deadline = self.machine.next_deadline()
            assert deadline is not None
            self.clock.now = max(self.clock.now, deadline)
            out = [e.to_json() for e in self.machine.poll()]
            self.count += len(out)
            yield from out

    def _record(self, step: dict[str, Any]) -> None:
        if self.record:
            self.steps.append(step)

    def _step(self, ch: Choices) -> list[dict[str, Any]]:
        """One wait (in milliseconds), then one legal move that keeps the stream within bounds."""
        pause = ch.integer(1, 3000)
        self.clock.advance(pause / 1000)
        self._record({"wait": f"{pause}ms"})
        out = [e.to_json() for e in self.machine.poll()]
        moves = self.candidates()
        while (move := ch.pick(moves, self._legal)) is not None:
            emitted = self.count + len(out)
            held = self._held()
            # (a migration move may also start what the migration says later)
            most = MOST_PER_MOVE + (MOST_AHEAD if move.kind in MIGRATION else 0)
            careful = emitted + held + most > self.max_size or (
                emitted < self.min_size and move.kind in MAY_END
            )
            saved = self._save() if careful else None
            new = self.apply(ch, move)
            total = emitted + len(new) + self._held()
            if saved is not None and (
                total > self.max_size or (self.machine.exited and total < self.min_size)
            ):
                self._restore(saved)
                continue
            out += [e.to_json() for e in new]
            break
        self.count += len(out)
        return out

    def _held(self) -> int:
        """Events already decided but not out yet: those a throttle holds back, and those
        a migration under way will say as its virtual time passes (the wait before the
        next move lets them out, so they count now against the walk's bound)."""
        return len(self.machine.pending_events()) + self.machine.part(Migration).events_ahead()

    def _save(self) -> _Saved:
        self.copies += 1
        if self._tables is None:
            self._tables = shared_tables(self.machine)
        return _Saved(
            saved_state(self.machine, self._tables),
            self.clock.now,
            len(self.steps),
            self.vnc_seen,
            list(self.vnc_live),
            self.nics,
        )

    def _restore(self, saved: _Saved) -> None:
        restore_state(self.machine, saved.machine)
        self.clock.now = saved.now
        del self.steps[saved.steps :]
        self.vnc_seen = saved.vnc_seen
        self.vnc_live = saved.vnc_live
        self.nics = saved.nics

    def candidates(self) -> list[Move]:
        """The moves of the allowed kinds, in a fixed order, legal now or not."""
        if not self._fixed:
            # what the VM's description alone decides, once per walk
            self._fixed = {kind: fixed_moves(self.machine.vm, kind) for kind in MOVE_ORDER}
        found: list[Move] = []
        for kind in MOVE_ORDER:
            if kind in self.allowed:
                found += self._offered(kind)
        return found

    def _offered(self, kind: str) -> list[Move]:
        if kind in VNC:
            return vnc_moves(kind, self.vnc_seen, self.vnc_live)
        if kind in JOBS:
            return job_moves(self.machine, kind)
        if kind in DEVICES:
            return device_moves(self.machine, kind, self.nics)
        if kind in BALLOON:
            return balloon_moves(self.machine, kind)
        if kind in MIGRATION:
            return migration_moves(kind)
        return self._fixed[kind]

    def moves(self) -> list[Move]:
        """The legal moves now, in a fixed order."""
        return [move for move in self.candidates() if self._legal(move)]

    def _legal(self, move: Move) -> bool:
        return legal(self.machine, move)

    def apply(self, ch: Choices, move: Move) -> list[m.Event]:
        """Make the move; its arguments that do not decide legality are chosen now."""
        if move.cause is None:
            if move.kind == "device_add":
                self.nics += 1
            outcome = self.machine.execute(move.kind, prepare_command(ch, self.machine, move))
            # events a command defers until after its reply (a disk's retry)
            return [*outcome.events, *self.machine.poll()]
        args, cause = drawn_cause(ch, self.machine, move)
        if isinstance(cause, m.VncConnect):
            self.vnc_seen += 1
            self.vnc_live.append(cause.client)
        elif isinstance(cause, m.VncDisconnect):
            self.vnc_live.remove(cause.client)
        self._record({"cause": move.kind, **args})
        # with what it makes happen right after (a job's next state), as a command's reply
        return [*self.machine.cause(cause), *self.machine.poll()]
