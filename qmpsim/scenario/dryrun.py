"""A scenario on the real machine: the machine it describes, and ``qmpsim show``'s
timeline, the steps dry-run on that machine under a manual clock."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from qmpsim.qmp.profiles import PROFILES
from qmpsim.qmp.schema import problems
from qmpsim.scenario.model import Scenario
from qmpsim.scenario.steps import (
    CauseStep,
    EmitStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Step,
    UntilStep,
    WaitStep,
)
from qmpsim.scenario.vm_section import has_balloon
from qmpsim.vm import machine as m
from qmpsim.vm.images import DEFAULT_SIZE, DiskConfig

# --- the machine a scenario runs on ------------------------------------------------


def build_machine(
    scenario: Scenario, seed: int | None = None, clock: m.Clock = time.time
) -> m.Machine:
    """A fresh machine for ``scenario`` (``seed`` overrides the scenario's ``vm.seed``)."""
    seed = scenario.seed if seed is None else seed
    return m.Machine(
        vm=scenario.vm,
        profile=PROFILES[scenario.profile],
        clock=clock,
        seed=seed,
    )


# --- the timeline a person can read (`qmpsim show`) --------------------------------------


def _step_text(step: Step) -> str:
    if isinstance(step, CauseStep):
        args = {k: v for k, v in vars(step.cause).items() if v not in (None, False)}
        return " ".join([f"cause {step.kind}", *(f"{k}={_word(v)}" for k, v in args.items())])
    if isinstance(step, EmitStep):
        return f"emit {step.event}" + (" (fake data)" if step.fake else "")
    if isinstance(step, WaitStep):
        return f"wait {step.seconds:g}s"
    if isinstance(step, UntilStep):
        cond = f" {json.dumps(step.arguments)}" if step.arguments else ""
        limit = f", at most {step.timeout:g}s" if step.timeout is not None else ""
        return f"until the client sends {step.command}{cond}{limit}"
    if isinstance(step, ReplyStep):
        what = (
            f"error {step.error_class}" if step.error_class else f"return {json.dumps(step.result)}"
        )
        return f"reply to {step.command} with {what} ({_times(step.times)})"
    if isinstance(step, OnStep):
        return f"on {step.command} ({_times(step.times)}):"
    if isinstance(step, RepeatStep):
        return "repeat forever:" if step.count is None else f"repeat {step.count} times:"
    if isinstance(step, IncludeStep):
        return f"include {step.path}:"
    extra: dict[str, Any] = {"chunk": step.chunk} if step.kind == "split" else {}
    if step.kind == "delayed-reply":
        extra = {"command": step.command, "delay": f"{step.delay:g}s"}
    return " ".join([f"fault {step.kind}", *(f"{k}={v}" for k, v in extra.items())])


def _word(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _times(times: int | None) -> str:
    return "always" if times is None else "once" if times == 1 else f"{times} times"


class _Show:
    def __init__(self, scenario: Scenario) -> None:
        self.clock = m.ManualClock(0.0)
        self.machine = build_machine(scenario, clock=self.clock)
        self.lines: list[str] = []
        self.start = 0.0

    def events(self, events: Sequence[m.Event]) -> str:
        return ", ".join(e.name + _detail(e) for e in events)

    def line(self, depth: int, text: str, events: str = "", live: bool = True) -> None:
        stamp = f"{self.start:8.3f}s" if live else " " * 9
        row = f"{stamp}  {'  ' * depth}{text}"
        self.lines.append(f"{row:<60} -> {events}" if events else row)

    def run(self, steps: Sequence[Step], depth: int, live: bool) -> None:
        for step in steps:
            text = _step_text(step)
            self.start = self.clock.now
            if not live:
                self.line(depth, text, live=False)
                if isinstance(step, OnStep | RepeatStep | IncludeStep):
                    self.run(step.steps, depth + 1, live=False)
                continue
            if isinstance(step, CauseStep):
                problem = self.machine.cause_error(step.cause)
                if problem:
                    self.line(depth, text, f"nothing: {problem}")
                else:
                    self.line(depth, text, self.events(self.machine.cause(step.cause)))
            elif isinstance(step, EmitStep):
                self.line(depth, text, step.event)
            elif isinstance(step, WaitStep):
                end = self.clock.now + step.seconds
                seen: list[m.Event] = []
                # each deadline in turn, as the engine meets them (a throttle's windows)
                while (deadline := self.machine.next_deadline()) is not None and deadline < end:
                    self.clock.now = max(self.clock.now, deadline)
                    seen += self.machine.poll()
                self.clock.now = end
                due = self.events([*seen, *self.machine.poll()])
                self.line(depth, text, f"{due} (while waiting)" if due else "")
            elif isinstance(step, UntilStep):
                args = step.arguments or {}
                spec = self.machine.profile.commands.get(step.command)
                if spec is not None and next(iter(problems(spec.arguments, args)), None):
                    # the step matches on part of the arguments: what the command does
                    # depends on the rest, which only the client's request will say
                    self.line(depth, text, "when it does: what its arguments say")
                    continue
                out = self.machine.execute(step.command, args)
                shown = self.events([*out.events, *self.machine.poll()])
                self.line(depth, text, f"when it does: {shown}" if shown else "")
            elif isinstance(step, OnStep):
                self.line(depth, text)
                self.run(step.steps, depth + 1, live=False)
            elif isinstance(step, RepeatStep):
                self.line(depth, text)
                self.run(step.steps, depth + 1, live=True)
                if step.count != 1:
                    self.line(depth + 1, "(and so on)", live=False)
            elif isinstance(step, IncludeStep):
                self.line(depth, text)
                self.run(step.steps, depth + 1, live=True)
            else:
                self.line(depth, text)


def _size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        scale = 1024 ** ("KMGT".index(unit) + 1)
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def _detail(e: m.Event) -> str:
    """What a person wants to see of an event beside its name."""
    d = e.data or {}
    if e.name == "JOB_STATUS_CHANGE":
        return f" ({d['id']}: {d['status']})"
    if e.name == "BLOCK_JOB_ERROR":
        return f" ({d['device']}: {d['operation']}, {d['action']})"
    if e.name.startswith("BLOCK_JOB_"):
        if "error" in d:
            return f" ({d['device']}: {d['error']})"
        if "len" in d:
            return f" ({d['device']} at {_size(d['offset'])} of {_size(d['len'])})"
        return f" ({d.get('id', d.get('device'))})"
    if e.name == "MIGRATION":
        return f" ({d['status']})"
    if e.name == "MIGRATION_PASS":
        return f" ({d['pass']})"
    if e.name == "DEVICE_TRAY_MOVED":
        return f" ({d['device'] or d['id']} {'open' if d['tray-open'] else 'closed'})"
    if "action" in d:
        return f" ({d['action']})"
    if e.name == "RTC_CHANGE":
        return f" ({d['offset']:+d}s)"
    if e.name == "BALLOON_CHANGE":
        actual = d["actual"]
        return f" ({_size(actual) if actual % (1 << 20) == 0 else f'{actual / (1 << 20):.1f}M'})"
    return ""


def _disk_text(d: DiskConfig) -> str:
    text = f"disk {d.name}"
    if d.media == "cdrom":
        text += " cdrom" + ("" if d.file else " (empty)")
    else:
        text += f" rerror={d.on_read_error} werror={d.on_write_error}"
    if d.virtual_size != DEFAULT_SIZE:
        text += f" {_size(d.virtual_size)}"
    if d.data is not None:
        text += f" ({_size(d.data)} of data)"
    if d.backing:
        text += f" on {d.backing}"
    return text + (" thin" if d.thin else "")


def show_timeline(scenario: Scenario) -> str:
    """The scenario as a person reads it: each step and the events the VM answers with.

    ``until`` steps assume the client sends the command; ``on`` handlers and
    actions are listed without their effects (they depend on the client);
    repeated blocks are played once.
    """
    vm = scenario.vm
    head = [f"{scenario.name}: {scenario.description}".rstrip(": ")]
    clock = (
        "starts when the first client has negotiated"
        if scenario.clock == "first-client"
        else "starts with the server, like QEMU"
    )
    head.append(f"profile {scenario.profile}; clock {scenario.clock} ({clock})")
    parts = [f"VM {vm.name or '(unnamed)'}, {vm.initial_state}"]
    parts += [_disk_text(d) for d in vm.disks]
    if vm.watchdog:
        parts.append(f"watchdog {vm.watchdog}")
    if vm.no_shutdown:
        parts.append("-no-shutdown")
    if vm.vnc:
        parts.append(f"VNC {vm.vnc.host}:{vm.vnc.port} auth {vm.vnc.auth}")
    if vm.spice:
        parts.append(f"SPICE {vm.spice.host}:{vm.spice.port}{' tls' if vm.spice.tls else ''}")
    if vm.cpus:
        parts.append(f"pc, {vm.cpus} vCPU{'s' if vm.cpus > 1 else ''}")
    if vm.memory != m.VmConfig().memory:
        parts.append(f"{_size(vm.memory)} of RAM")
    if has_balloon(vm):
        parts.append("virtio-balloon balloon0")
    if vm.guest:
        g = vm.guest
        text = f"guest: power button {g.powerdown}, unplug {g.unplug}, tray {g.tray}"
        if has_balloon(vm):
            default = g.balloon_rate == m.GuestConfig().balloon_rate
            rate = "" if default else f" at {_size(g.balloon_rate)}/s"
            text += f", balloon {g.balloon}{rate if g.balloon == 'follow' else ''}"
        parts.append(text)
    if vm.incoming:
        parts.append(f"-incoming {vm.incoming} (waits in inmigrate for its source)")
    head.append("; ".join(parts))
    show = _Show(scenario)
    show.run(scenario.steps, 0, live=True)
    body = show.lines or ["(no steps: an idle VM that answers commands)"]
    tail: list[str] = []
    for name, block in scenario.actions.items():
        tail.append(f"action {name}:")
        sub = _Show(scenario)
        sub.run(block, 1, live=False)
        tail += sub.lines
    return "\n".join([*head, "", *body, *(["", *tail] if tail else [])]) + "\n"
