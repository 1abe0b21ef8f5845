"""The timeline's causal order, checked as a scenario loads: the steps dry-run on a
machine built from the scenario's description, which says what it refuses.

A cause the machine refuses whatever a client sends (a VNC client that never
connected: :meth:`~qmpsim.vm.machine.Machine.order_error`) is an error at its line,
and so is a step after the VM has exited; a cause refused for what a client may
change (a paused VM) is left to run time, where it is skipped.  ``until`` steps play
as if the client sent the command, ``wait`` steps move the virtual clock.  Apart
from the machine: a block repeated forever must take time, or it floods the client.
"""

from __future__ import annotations

from collections.abc import Sequence

from qmpsim.errors import ScenarioError
from qmpsim.qmp.profiles import ProfileSpec
from qmpsim.qmp.schema import problems
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
from qmpsim.vm.description import VmConfig
from qmpsim.vm.machine import Machine, ManualClock

__all__ = ["check_causal"]


def check_causal(
    steps: Sequence[Step],
    vm: VmConfig,
    profile: ProfileSpec,
    path: str = "steps",
    *,
    strict: bool = True,
) -> None:
    """Refuse (:class:`~qmpsim.errors.ScenarioError`, located) a step that can never run
    on ``vm``; with ``strict=False`` only a block repeated forever without time is."""
    _check_time(steps, path)
    if strict:
        _DryRun(vm, profile).steps(steps, path)


def _error(text: str, step: Step, path: str) -> ScenarioError:
    w = step.where
    return ScenarioError(text, w.file, w.line, w.column, path)


def _check_time(steps: Sequence[Step], path: str) -> None:
    for i, step in enumerate(steps):
        here = f"{path}[{i}]"
        if isinstance(step, RepeatStep) and step.count is None and not _takes_time(step.steps):
            raise _error(
                "a block repeated forever needs a `wait` (or an `until`) with a duration,"
                " or it floods the client",
                step,
                here,
            )
        if isinstance(step, RepeatStep | OnStep):
            _check_time(step.steps, f"{here}.steps")
        elif isinstance(step, IncludeStep):
            _check_time(step.steps, f"{here}.include")


def _takes_time(steps: Sequence[Step]) -> bool:
    for step in steps:
        if (isinstance(step, WaitStep) and step.seconds > 0) or isinstance(step, UntilStep):
            return True
        if isinstance(step, RepeatStep | IncludeStep) and _takes_time(step.steps):
            return True
    return False


class _DryRun:
    def __init__(self, vm: VmConfig, profile: ProfileSpec) -> None:
        self.clock = ManualClock(0.0)
        self.machine = Machine(vm=vm, profile=profile, clock=self.clock, seed=0)
        self.exited: Where | None = None

    def steps(self, steps: Sequence[Step], path: str) -> None:
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            # reply and on steps only arm handlers, which an exited VM never calls
            if self.exited is not None and not isinstance(step, ReplyStep | OnStep):
                raise _error(
                    f"the VM has already exited (on line {self.exited.line}), so this step"
                    " can never run",
                    step,
                    here,
                )
            self.step(step, here)
            if self.exited is None and self.machine.exited:
                self.exited = step.where

    def step(self, step: Step, here: str) -> None:
        machine = self.machine
        if isinstance(step, CauseStep):
            problem = machine.order_error(step.cause)
            if problem is not None:
                raise _error(problem, step, here)
            if machine.cause_error(step.cause) is None:
                machine.cause(step.cause)
        elif isinstance(step, WaitStep):
            self.clock.now += step.seconds
            machine.poll()
        elif isinstance(step, UntilStep) and step.timeout is None:
            # the step ends only when the client sends the command: it has happened
            spec = machine.profile.commands.get(step.command)
            args = step.arguments or {}
            # a step that matches part of the arguments: the rest is the client's to say
            if spec is not None and next(iter(problems(spec.arguments, args)), None) is None:
                machine.execute(step.command, args)
        elif isinstance(step, RepeatStep):
            self.steps(step.steps, f"{here}.steps")
            # a block that leaves something behind (a client connected…) fails on its
            # second round; one that does not can repeat forever
            if step.count != 1:
                self.steps(step.steps, f"{here}.steps")
        elif isinstance(step, IncludeStep):
            self.steps(step.steps, f"{here}.include")
