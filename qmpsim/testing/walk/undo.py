"""A machine's own state, saved and put back: how a walk undoes a move.

A move that would overshoot the size asked for, or end the VM too early, is undone
from a saved copy of the machine's state (a few small dicts), never of what the walk
has emitted, so a step costs the same however long the walk has been going.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import random
from typing import Any

from qmpsim.vm import machine as m

__all__ = ["restore_state", "saved_state", "shared_tables"]

# The machine's state is pickled to undo a move: several times cheaper than a deep
# copy.  What a move never replaces is kept by reference, wherever it sits (the
# machine's components point back to it): the machine itself, its profile, VM and
# clock (whose time is saved apart), its random generators (whose state is 625
# ints: an undone move leaves them advanced, which keeps the walk as reproducible),
# and the tables every machine of its kind shares.


def _kept(machine: m.Machine) -> dict[int, object]:
    kept: list[object] = [machine, machine.profile, machine.vm, machine.clock]
    kept += [v for v in vars(machine).values() if isinstance(v, random.Random)]
    return {id(obj): obj for obj in kept}


def shared_tables(machine: m.Machine) -> frozenset[str]:
    """The machine's attributes that every machine of its kind shares (dispatch tables)."""
    twin = type(machine)(vm=machine.vm, profile=machine.profile, clock=m.ManualClock())
    theirs = vars(twin)
    # (a value is only a table when it is not one of the interned atoms every machine
    # holds alike: a status string, a flag)
    atoms = (str, bytes, int, float, bool, tuple, type(None))
    return frozenset(
        k for k, v in vars(machine).items() if theirs.get(k) is v and not isinstance(v, atoms)
    )


def _kept_ref(key: int) -> object:
    """Stands for a kept object in a pickle; :class:`_MachineUnpickler` resolves it."""
    raise AssertionError("resolved by _MachineUnpickler")


class _MachinePickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, machine: m.Machine) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._kept = _kept(machine)
        # by type, so that every other object takes the pickler's fast path
        table = dict(copyreg.dispatch_table)
        table.update((type(obj), self._reduce) for obj in self._kept.values())
        self.dispatch_table = table

    def _reduce(self, obj: Any) -> Any:
        if id(obj) in self._kept:
            return _kept_ref, (id(obj),)
        return obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


class _MachineUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, machine: m.Machine) -> None:
        super().__init__(file)
        self._kept = _kept(machine)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "_kept_ref"):
            return self._kept.__getitem__
        return super().find_class(module, name)


def saved_state(machine: m.Machine, tables: frozenset[str]) -> bytes:
    """The machine's state but its ``tables`` (:func:`shared_tables`), pickled."""
    state = {k: v for k, v in vars(machine).items() if k not in tables}
    buffer = io.BytesIO()
    _MachinePickler(buffer, machine).dump(state)
    return buffer.getvalue()


def restore_state(machine: m.Machine, saved: bytes) -> None:
    """Put back into ``machine`` the state :func:`saved_state` saved from it."""
    state = _MachineUnpickler(io.BytesIO(saved), machine).load()
    vars(machine).update(state)
