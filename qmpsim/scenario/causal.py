"""The timeline's causal order, checked as a scenario loads.

The rules are the machine's (:func:`qmpsim.vm.display.display_refusal`,
:func:`qmpsim.vm.machine.cause_exits`), asked along the timeline with the state this
check tracks instead of a running VM: a VNC client initializes only once connected,
no step follows the VM's exit, a block repeated forever takes time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qmpsim.errors import ScenarioError
from qmpsim.scenario.steps import (
    CauseStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Step,
    UntilStep,
    WaitStep,
    Where,
)
from qmpsim.vm import machine as m
from qmpsim.vm.description import VmConfig
from qmpsim.vm.display import (
    ClientState,
    DisplayCause,
    display_after,
    display_key,
    display_refusal,
)

__all__ = ["check_causal"]


def check_causal(
    steps: Sequence[Step], vm: VmConfig, path: str = "steps", *, strict: bool = True
) -> None:
    """Refuse (:class:`~qmpsim.errors.ScenarioError`, located) a step that can never run
    on ``vm``; with ``strict=False`` only a block repeated forever without time is."""
    _Check(vm).steps(steps, _State(strict=strict), path)


@dataclass
class _State:
    """Causal facts tracked along the timeline to catch impossible orders."""

    strict: bool = True
    exited: Where | None = None
    # each display client or channel (vm.display's key) -> where it is
    display: dict[tuple[Any, ...], ClientState] = field(default_factory=dict)

    def copy(self, strict: bool | None = None) -> _State:
        return _State(self.strict if strict is None else strict, self.exited, dict(self.display))


@dataclass
class _Check:
    vm: VmConfig

    def steps(self, steps: Sequence[Step], state: _State, path: str) -> None:
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            if (
                state.exited is not None
                and state.strict
                and not isinstance(step, ReplyStep | OnStep)
            ):
                raise ScenarioError(
                    f"the VM has already exited (on line {state.exited.line}), so this step"
                    " can never run",
                    step.where.file,
                    step.where.line,
                    step.where.column,
                    here,
                )
            if isinstance(step, CauseStep):
                problem = self.causal(step, state)
                if problem and state.strict:
                    raise ScenarioError(
                        problem, step.where.file, step.where.line, step.where.column, here
                    )
            elif isinstance(step, RepeatStep):
                if step.count is None and not _takes_time(step.steps):
                    raise ScenarioError(
                        "a block repeated forever needs a `wait` (or an `until`) with a"
                        " duration, or it floods the client",
                        step.where.file,
                        step.where.line,
                        step.where.column,
                        here,
                    )
                before = state.copy()
                self.steps(step.steps, state, f"{here}.steps")
                # A block that changes the state (leaves a client connected…) fails on
                # its second round; one that does not can repeat forever.
                if step.count != 1 and state != before:
                    self.steps(step.steps, state, f"{here}.steps")
            elif isinstance(step, IncludeStep):
                self.steps(step.steps, state, f"{here}.include")
            elif isinstance(step, OnStep):
                self.steps(step.steps, state.copy(strict=False), f"{here}.steps")

    def causal(self, step: CauseStep, state: _State) -> str | None:
        # The rules are the machine's (vm.display, vm.machine): asked here along the
        # timeline, with the state this check tracks instead of a running VM.
        c = step.cause
        if isinstance(c, DisplayCause):
            key = display_key(c)
            problem = display_refusal(c, state.display.get(key))
            if problem is not None:
                if key not in state.display:
                    first = "vnc-connect" if key[0] == "vnc" else "spice-connect"
                    problem += f": it must connect ({first}) first"
                return problem
            after = display_after(c)
            if after is None:
                del state.display[key]
            else:
                state.display[key] = after
        elif m.cause_exits(c, watchdog=self.vm.watchdog, no_shutdown=self.vm.no_shutdown):
            state.exited = step.where
        return None


def _takes_time(steps: Sequence[Step]) -> bool:
    for step in steps:
        if (isinstance(step, WaitStep) and step.seconds > 0) or isinstance(step, UntilStep):
            return True
        if isinstance(step, RepeatStep | IncludeStep) and _takes_time(step.steps):
            return True
    return False
