"""Strict mode and a test's expectations: what the fixture core compares the traffic
with, the scenario steps it tracks, and the report a failing test is given."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Any

from qmpsim.testing.fixture_config import DEFAULT_ALLOW, _Config, _Expectation

if TYPE_CHECKING:
    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario, Step


@dataclass
class _Tracking:
    """What strict mode compares the traffic with."""

    expected: set[str] = field(default_factory=lambda: {"qmp_capabilities"})
    allowed: tuple[str, ...] = DEFAULT_ALLOW
    """Patterns of commands strict mode tolerates (fnmatch)."""
    expectations: list[_Expectation] = field(default_factory=list)
    in_order: bool = False

    @classmethod
    def of(cls, config: _Config) -> _Tracking:
        """What a fixture configured by ``config`` expects before its test runs."""
        tracking = cls(
            allowed=config.allow, expectations=list(config.expect), in_order=config.in_order
        )
        tracking.expected |= {e.command for e in config.expect}
        return tracking

    def tolerates(self, command: str) -> bool:
        return command in self.expected or any(fnmatch(command, p) for p in self.allowed)

    untils: dict[int, tuple[Any, str]] = field(default_factory=dict)  # id(step) -> step, state
    replies: list[tuple[Any, int]] = field(default_factory=list)  # (step, sent before it)


def _where(step: Any) -> str:
    where = step.where
    return f"{where.file or '<scenario>'}:{where.line}"


def _walk(steps: Any, *, timeline: bool) -> Iterator[Any]:
    """Every step, nested ones included; ``timeline``: only those the timeline itself runs."""
    from qmpsim.scenario.model import IncludeStep, OnStep, RepeatStep

    for step in steps:
        yield step
        if isinstance(step, IncludeStep):
            yield from _walk(step.steps, timeline=timeline)
        elif isinstance(step, RepeatStep):
            if not timeline or step.count is not None:
                yield from _walk(step.steps, timeline=timeline)
        elif isinstance(step, OnStep) and not timeline:
            yield from _walk(step.steps, timeline=timeline)


def _commands_named(scenario: Scenario) -> set[str]:
    from qmpsim.scenario.model import FaultStep, OnStep, ReplyStep, UntilStep

    names: set[str] = set()
    blocks = [scenario.steps, *scenario.actions.values()]
    for block in blocks:
        for step in _walk(block, timeline=False):
            command = getattr(step, "command", None)
            if isinstance(step, UntilStep | OnStep | ReplyStep | FaultStep) and command:
                names.add(command)
    return names


class _StrictMode:
    """What a test expects of its client and whether it got it (a base of ``_Core``)."""

    config: _Config
    sim: Simulator
    scenario: Scenario
    runners: list[ScenarioRunner]
    tracking: _Tracking

    def expect(
        self, command: str, arguments: Mapping[str, Any] | None, count: int | None, origin: str
    ) -> None:
        if count is not None and count < 0:
            raise ValueError("expect: count must not be negative")
        self.tracking.expected.add(command)
        self.tracking.expectations.append(_Expectation(command, arguments, count, origin))

    def allow(self, command: str) -> None:
        self.tracking.expected.add(command)

    def strict_report(self, *, strict: bool = True) -> str | None:
        """A readable report of what the test's expectations object to, or ``None``.

        Expectations (``expect=``, ``expect()``) are always checked; ``strict``
        adds unexpected commands and the scenario's unmet ``until``/``reply`` steps.
        """
        from qmpsim.qmp.transcript import arguments_match

        tracking = self.tracking
        transcript = self.sim.transcript
        sent = transcript.commands_sent()
        start = transcript.entries[0].time if transcript.entries else 0.0
        unexpected = [c for c in sent if not tracking.tolerates(c.command)] if strict else []
        unmet: list[str] = []
        if strict:
            unmet += self._unmet_steps(transcript)
        for expectation in tracking.expectations:
            got = [
                c
                for c in transcript.commands_sent(expectation.command)
                if expectation.arguments is None
                or arguments_match(c.arguments, expectation.arguments)
            ]
            count = expectation.count
            if (count is None and got) or len(got) == count:
                continue
            args = f" {json.dumps(expectation.arguments)}" if expectation.arguments else ""
            wanted = "at least once" if count is None else f"exactly {_n(count, 'time')}"
            unmet.append(
                f"{expectation.command}{args} ({expectation.origin}): expected {wanted}, "
                f"sent {_n(len(got), 'time')}"
            )
        if tracking.in_order and not unmet:
            from qmpsim.qmp.transcript import sequence_mismatch

            wanted_order = [(e.command, e.arguments) for e in tracking.expectations]
            problem = sequence_mismatch(sent, wanted_order)
            if problem is not None:
                unmet.append(f"in order (marker): {problem}")
        if not unexpected and not unmet:
            return None
        if self.runners:
            source = f" ({self.scenario.source})" if self.scenario.source else ""
            whose = f"scenario {self.scenario.name!r}{source}"
        else:
            whose = "the test"
        mode = "strict mode" if strict else "expectations"
        lines = [f"qmpsim {mode}: the client did not do what {whose} expects"]
        if unexpected:
            lines.append("unexpected commands:")
            lines += [f"  {_dump(c.message)}  (+{c.time - start:.3f}s)" for c in unexpected]
        if unmet:
            lines.append("unmet expectations:")
            lines += [f"  {line}" for line in unmet]
        if strict:
            allowed = f" (and {', '.join(tracking.allowed)})" if tracking.allowed else ""
            lines.append(f"commands expected: {', '.join(sorted(tracking.expected))}{allowed}")
        if sent:
            lines.append("commands sent, in order: " + ", ".join(c.command for c in sent))
        else:
            lines.append("no command was sent")
        return "\n".join(lines)

    def _unmet_steps(self, transcript: Transcript) -> list[str]:
        """The scenario's ``until`` and counted ``reply`` steps the client did not satisfy."""
        unmet: list[str] = []
        for step, state in self.tracking.untils.values():
            args = f" {json.dumps(step.arguments)}" if step.arguments else ""
            unmet.append(f"until {step.command}{args} ({_where(step)}): {state}")
        pending: dict[str, int] = {}
        for step, before in self.tracking.replies:
            pending[step.command] = pending.get(step.command, 0) + step.times
            used = len(transcript.commands_sent(step.command)) - before
            if used < pending[step.command]:
                unmet.append(
                    f"reply to {step.command} ({_where(step)}): "
                    f"{_n(step.times, 'time')} scripted, the client sent it {_n(used, 'time')}"
                )
        return unmet


def _n(count: int | None, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tracked_runner(
    core: _StrictMode, scenario: Scenario, *, speed: float, seed: int | None
) -> ScenarioRunner:
    """A scenario runner that tells strict mode which ``until`` and ``reply`` steps it met."""
    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.scenario.model import ReplyStep, UntilStep

    tracking = core.tracking

    class Runner(ScenarioRunner):
        async def run_step(self, step: Step) -> None:
            if isinstance(step, UntilStep) and id(step) in tracking.untils:
                tracking.untils[id(step)] = (step, "the client never sent it")
                notes = len(self.notes)
                await super().run_step(step)
                if len(self.notes) > notes:
                    tracking.untils[id(step)] = (step, f"timed out after {step.timeout:g}s")
                else:
                    del tracking.untils[id(step)]
                return
            if isinstance(step, ReplyStep) and step.times is not None:
                sent = len(core.sim.transcript.commands_sent(step.command))
                tracking.replies.append((step, sent))
            await super().run_step(step)

    return Runner(core.sim, scenario, speed=speed, seed=seed)
