"""What a profile is: one QEMU version's commands, events and greeting, as data.

:class:`ProfileSpec` holds them; :mod:`qmpsim.qmp.profiles` finds one by name,
whether written by hand (:mod:`qmpsim.qmp.profile_0_14`) or compiled from
recordings of real QEMU (:mod:`qmpsim.qmp.profile_data`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qmpsim.qmp.qapi import Object, Type

__all__ = ["CommandSpec", "EventSpec", "ProfileSpec", "Recorded"]


@dataclass(frozen=True)
class CommandSpec:
    """A command: its arguments (an object type), its return type, whether it may run
    out-of-band.  ``returns`` is ``None`` where the schema does not say (hand-written
    profiles, commands QEMU dispatches without introspection)."""

    name: str
    arguments: Object
    allow_oob: bool = False
    allow_preconfig: bool = False
    returns: Type | None = None


@dataclass(frozen=True)
class EventSpec:
    """An event's name and the schema of its ``data`` member (``None``: the event has no data)."""

    name: str
    data: Object | None


@dataclass(frozen=True)
class Recorded:
    """A reply a real QEMU gave to one request, whether that QEMU ran with KVM and
    which machine (``none``: ``-M none``, ``pc``: a ``-M pc`` VM)."""

    command: str
    arguments: Mapping[str, Any] | None
    kvm: bool
    machine: str
    reply: Mapping[str, Any]
    """``{"return": …}`` or ``{"error": {"class": …, "desc": …}}``."""
    borrowed: str | None = None
    """The profile whose QEMU gave this reply, when not this one's: the nearest
    recorded version's answer to a query this version's recordings did not ask,
    where it fits this version's return type."""
    modules: bool = False
    """Given once QEMU had loaded its modules (``qom-list-types`` does), where that
    changed the answer (a display module adds its option group)."""


@dataclass(frozen=True)
class ProfileSpec:
    """Everything one protocol profile says about the wire.

    ``throttle`` maps event names to QEMU's minimum interval between two of
    them (seconds); ``run_states`` is whether ``query-status`` reports ``status``
    (QEMU 1.1 and later) and commands check it.  ``recorded`` holds the replies of
    the real QEMU the profile was compiled from, by command (``query-qmp-schema``
    among them; empty for a hand-written profile).
    """

    name: str
    version: tuple[int, int, int]
    package: str
    capabilities: tuple[str, ...]
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)
    events: Mapping[str, EventSpec] = field(default_factory=dict)
    throttle: Mapping[str, float] = field(default_factory=dict)
    run_states: bool = True
    recorded: Mapping[str, Sequence[Recorded]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<ProfileSpec {self.name}: QEMU {'.'.join(map(str, self.version))}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints its arguments with IPython's protocol: all of a schema is too much
        printer.text(repr(self))

    def greeting(self) -> dict[str, Any]:
        """The greeting object, in the member order QEMU builds it."""
        major, minor, micro = self.version
        return {
            "QMP": {
                "version": {
                    "qemu": {"major": major, "minor": minor, "micro": micro},
                    "package": self.package,
                },
                "capabilities": list(self.capabilities),
            }
        }

    def recorded_reply(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        kvm: bool = False,
        machine: str = "none",
        other_machines: bool = True,
        modules_loaded: bool = False,
    ) -> Mapping[str, Any] | None:
        """What the recorded QEMU answered to the same request, or ``None``.

        A reply recorded on the same machine type (``none``, ``pc``) is preferred,
        then one given in the same state of QEMU's modules, then one with the same
        accelerator; ``other_machines=False`` takes only the same machine type.  The
        defaults ask for an idle ``-M none`` without KVM, as the facts of a build
        (its types and their properties) are recorded.
        """
        best: tuple[int, Mapping[str, Any]] | None = None
        for rec in self.recorded.get(command, ()):
            if (rec.arguments or {}) != (arguments or {}):
                continue
            if rec.machine != machine and not other_machines:
                continue
            rank = (rec.machine != machine) * 4 + (rec.modules != modules_loaded) * 2
            rank += rec.kvm != kvm
            if best is None or rank < best[0]:
                best = (rank, rec.reply)
        return best[1] if best is not None else None
