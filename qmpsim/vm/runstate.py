"""QEMU's run states and the moves between them: one table, asked by the machine and the checker.

QEMU keeps its run state in ``system/runstate.c``: ``runstate_set()`` aborts on a
move its ``runstate_transitions_def`` does not list, ``runstate_needs_reset()``
names the states only a reset leaves, and ``vm_stop()`` sends STOP only from a
*live* state.  :class:`Transitions` is that table for one QEMU version: the
machine (:mod:`qmpsim.vm.machine`) refuses every change of its run state the
table forbids, and the conformance checker (:mod:`qmpsim.testing.conformance`)
judges the STOP, RESUME and RESET of a recorded stream by the same table.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .values import MachineError

if TYPE_CHECKING:
    from qmpsim.qmp.profiles import ProfileSpec


class RunState(StrEnum):
    """QEMU's ``RunState`` values, as ``query-status`` reports them (7.2's order)."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


RUN_STATES = tuple(RunState)
"""Every run state, as ``query-status`` spells it."""

INITIAL_STATES = (RunState.RUNNING, RunState.PAUSED, RunState.PRELAUNCH)
"""The run states a VM description may start in (``prelaunch``: ``-S``)."""

_S = RunState

# runstate_transitions_def of QEMU 7.2 (softmmu/runstate.c): from -> the states it may go to
_QEMU_7_2: Mapping[RunState, frozenset[RunState]] = {
    _S.DEBUG: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.PRELAUNCH, _S.SUSPENDED}),
    _S.INMIGRATE: frozenset(
        {
            _S.INTERNAL_ERROR,
            _S.IO_ERROR,
            _S.PAUSED,
            _S.RUNNING,
            _S.SHUTDOWN,
            _S.SUSPENDED,
            _S.WATCHDOG,
            _S.GUEST_PANICKED,
            _S.FINISH_MIGRATE,
            _S.PRELAUNCH,
            _S.POSTMIGRATE,
            _S.COLO,
        }
    ),
    _S.INTERNAL_ERROR: frozenset({_S.PAUSED, _S.FINISH_MIGRATE, _S.PRELAUNCH}),
    _S.IO_ERROR: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.PRELAUNCH}),
    _S.PAUSED: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.POSTMIGRATE, _S.PRELAUNCH, _S.COLO}),
    _S.POSTMIGRATE: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.PRELAUNCH}),
    _S.PRELAUNCH: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.INMIGRATE}),
    _S.FINISH_MIGRATE: frozenset({_S.RUNNING, _S.PAUSED, _S.POSTMIGRATE, _S.PRELAUNCH, _S.COLO}),
    _S.RESTORE_VM: frozenset({_S.RUNNING, _S.PRELAUNCH}),
    _S.COLO: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.SHUTDOWN}),
    _S.RUNNING: frozenset(
        {
            _S.DEBUG,
            _S.INTERNAL_ERROR,
            _S.IO_ERROR,
            _S.PAUSED,
            _S.FINISH_MIGRATE,
            _S.RESTORE_VM,
            _S.SAVE_VM,
            _S.SHUTDOWN,
            _S.WATCHDOG,
            _S.GUEST_PANICKED,
            _S.COLO,
            _S.SUSPENDED,
        }
    ),
    _S.SAVE_VM: frozenset({_S.RUNNING}),
    _S.SHUTDOWN: frozenset({_S.PAUSED, _S.FINISH_MIGRATE, _S.PRELAUNCH, _S.COLO}),
    _S.SUSPENDED: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.PRELAUNCH, _S.COLO}),
    _S.WATCHDOG: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.PRELAUNCH, _S.COLO}),
    _S.GUEST_PANICKED: frozenset({_S.RUNNING, _S.FINISH_MIGRATE, _S.PRELAUNCH}),
}

# the moves later versions added, from the version on
_ADDED: tuple[tuple[tuple[int, int, int], Mapping[RunState, frozenset[RunState]]], ...] = (
    # 8.1: a migration that fails after the switchover puts back any state the VM was in
    (
        (8, 1, 0),
        {
            _S.FINISH_MIGRATE: frozenset(
                {
                    _S.INTERNAL_ERROR,
                    _S.IO_ERROR,
                    _S.SHUTDOWN,
                    _S.SUSPENDED,
                    _S.WATCHDOG,
                    _S.GUEST_PANICKED,
                }
            )
        },
    ),
    # 9.0: a suspended VM stays suspended across stop/cont, snapshots and migration
    (
        (9, 0, 0),
        {
            _S.PRELAUNCH: frozenset({_S.SUSPENDED}),
            _S.PAUSED: frozenset({_S.SUSPENDED}),
            _S.RESTORE_VM: frozenset({_S.SUSPENDED}),
            _S.SAVE_VM: frozenset({_S.SUSPENDED}),
            _S.SUSPENDED: frozenset({_S.PAUSED, _S.SAVE_VM, _S.RESTORE_VM, _S.SHUTDOWN}),
        },
    ),
)


@dataclass(frozen=True)
class Transitions:
    """QEMU's run-state rules for one version: the moves ``runstate_set()`` accepts,
    the states only a reset leaves, the states ``vm_stop()`` stops with a STOP.

    ``policed`` is false for a QEMU without run states (before 1.0), which knew only
    running and stopped and let ``cont`` restart a VM whatever had stopped it.
    """

    version: tuple[int, int, int]
    moves: Mapping[RunState, frozenset[RunState]]
    policed: bool = True

    def allows(self, old: RunState, new: RunState) -> bool:
        """Whether ``runstate_set(new)`` accepts the move from ``old`` (staying is no move)."""
        return not self.policed or old == new or new in self.moves.get(old, frozenset())

    def needs_reset(self, state: RunState) -> bool:
        """``runstate_needs_reset()``: ``state`` is stopped and only a reset leaves it
        for ``running`` (``shutdown`` and ``internal-error``)."""
        return self.policed and state != _S.RUNNING and not self.allows(state, _S.RUNNING)

    def live(self, state: RunState) -> bool:
        """Whether ``vm_stop()`` stops a VM in ``state`` with a STOP: a running one, and
        from QEMU 9.0 (``runstate_is_live()``) a suspended one too."""
        return state == _S.RUNNING or (state == _S.SUSPENDED and self.version >= (9, 0, 0))

    def change(self, old: RunState, new: str) -> RunState:
        """``runstate_set()``: ``new`` as a :class:`RunState`, or a :class:`MachineError`
        for a move the table forbids (where QEMU aborts)."""
        state = RunState(new)
        if not self.allows(old, state):
            raise MachineError(f"invalid runstate transition: '{old}' -> '{state}'")
        return state


@functools.cache
def transitions(version: tuple[int, int, int], *, policed: bool = True) -> Transitions:
    """The run-state rules of QEMU ``version`` (those before 7.2 are taken as 7.2's:
    the moves between the states qmpsim models did not change before it)."""
    moves = {state: set(to) for state, to in _QEMU_7_2.items()}
    for since, added in _ADDED:
        if version >= since:
            for state, to in added.items():
                moves.setdefault(state, set()).update(to)
    return Transitions(version, {s: frozenset(to) for s, to in moves.items()}, policed)


def rules(profile: ProfileSpec) -> Transitions:
    """The run-state rules of ``profile``'s QEMU."""
    return transitions(profile.version, policed=profile.run_states)
