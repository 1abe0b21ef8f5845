"""YAML scenarios loaded strictly.

The loader composes the YAML node tree (safe loading, no object construction) so every
mistake is reported with its file, line, column and path in the document
(:mod:`qmpsim.scenario.nodes`).  The ``vm`` section becomes the one VM description
(:mod:`qmpsim.scenario.vm_section`); each step is checked as it is read (``emit``:
:mod:`qmpsim.scenario.emit`; ``cause``: a machine built from the description says
what the cause lacks, :meth:`~qmpsim.vm.machine.Machine.cause_unmet`), and the
timeline's causal order by a dry run on that machine (:mod:`qmpsim.scenario.causal`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmpsim.errors import ScenarioError, suggest
from qmpsim.qmp.profiles import DEFAULT_PROFILE, PROFILES, ProfileSpec
from qmpsim.scenario.causal import check_causal
from qmpsim.scenario.emit import emit_step
from qmpsim.scenario.grammar import (
    _FAULTS,
    _HEADS,
    _STEP_KEYS,
    _TOP,
)
from qmpsim.scenario.grammar_causes import _CAUSES
from qmpsim.scenario.grammar_kinds import (
    _NAME,
    _Key,
    _Obj,
)
from qmpsim.scenario.model import Scenario
from qmpsim.scenario.nodes import NodeReader, describe
from qmpsim.scenario.steps import (
    CauseStep,
    FaultStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Step,
    UntilStep,
    WaitStep,
    Where,
)
from qmpsim.scenario.vm_section import read_vm
from qmpsim.vm.description import VmConfig
from qmpsim.vm.machine import Machine, ManualClock

if TYPE_CHECKING:
    import yaml

__all__ = ["load_scenario", "load_steps", "loads_scenario"]


class _Loader(NodeReader):
    """A scenario document (or steps) read against a profile and the VM they run on."""

    def __init__(self, file: str | None, stack: tuple[Path, ...] = ()) -> None:
        super().__init__(file)
        global yaml
        import yaml

        self.stack = stack
        self.base = Path(file).resolve().parent if file else Path.cwd()
        self.profile: ProfileSpec = PROFILES[DEFAULT_PROFILE]
        self.vm = VmConfig()
        self._machine: tuple[VmConfig, ProfileSpec, Machine] | None = None
        self.includes = True
        """Whether ``include:`` may read files (not for steps sent over a socket)."""

    def machine(self) -> Machine:
        """A machine built from the VM and profile read so far, to ask about causes."""
        built = self._machine
        if built is None or built[0] is not self.vm or built[1] is not self.profile:
            machine = Machine(vm=self.vm, profile=self.profile, clock=ManualClock(0.0), seed=0)
            built = self._machine = (self.vm, self.profile, machine)
        return built[2]

    def scenario(self, text: str) -> Scenario:
        root = self.compose(text)
        if root is None:
            raise ScenarioError("the file is empty; expected a mapping with `steps`", self.file)
        top = self.mapping(root, "", _TOP, heads=False)
        if "profile" in top:
            self.profile = PROFILES[top["profile"][0]]
        seed = 0
        if "vm" in top:
            self.vm, seed = read_vm(self, top["vm"][0], top["vm"][1])
        steps_node = top.get("steps", (None, None))[1]
        steps = self.steps(steps_node, "steps") if steps_node is not None else ()
        actions: dict[str, tuple[Step, ...]] = {}
        if "actions" in top:
            node = top["actions"][1]
            for key_node, value_node in self.pairs(node, "actions"):
                name = self.scalar(key_node, "actions", _NAME)
                actions[name] = self.steps(value_node, f"actions.{name}")
        check_causal(steps, self.vm, self.profile)
        for name, block in actions.items():
            check_causal(block, self.vm, self.profile, f"actions.{name}", strict=False)
        default_name = Path(self.file).stem if self.file else "scenario"
        return Scenario(
            name=top.get("name", (default_name,))[0],
            description=top.get("description", ("",))[0],
            profile=self.profile.name,
            vm=self.vm,
            clock=top.get("clock", ("first-client",))[0],
            steps=steps,
            actions=actions,
            source=self.file,
            seed=seed,
        )

    # generic validation ----------------------------------------------------------

    def steps(self, node: yaml.Node, path: str) -> tuple[Step, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, path, f"expected a list of steps, found {describe(node)}")
        out: list[Step] = []
        for i, item in enumerate(node.value):
            out.append(self.step(item, f"{path}[{i}]"))
        return tuple(out)

    def step(self, node: yaml.Node, path: str) -> Step:
        self.spend(node, path)
        kinds = ", ".join(_HEADS)
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                node,
                path,
                f"expected a step (a mapping with one of: {kinds}), found {describe(node)}",
            )
        pairs = self.pairs(node, path)
        heads = [(k, v) for k, v in pairs if k.value in _HEADS]
        if not heads:
            first = pairs[0][0] if pairs else node
            word = first.value if isinstance(first, yaml.ScalarNode) else ""
            raise self.error(
                first,
                path,
                f"a step needs one of: {kinds}; found {word!r}{suggest(word, list(_HEADS))}",
            )
        head_node, value_node = heads[0]
        head = head_node.value
        head_kind, _ = _HEADS[head]
        value = self.value(value_node, f"{path}.{head}", head_kind)
        if head in ("until", "reply", "on"):
            self.check_command(value, value_node, f"{path}.{head}")
        where = Where(self.file, node.start_mark.line + 1, node.start_mark.column + 1)
        if head == "cause":
            keys, build, _ = _CAUSES[value]
            spec = _Obj(f"a {value} cause step", (_Key("cause", head_kind), *keys))
        elif head == "fault":
            fkeys, _ = _FAULTS[value]
            spec = _Obj(f"a {value} fault step", (_Key("fault", head_kind), *fkeys))
        else:
            spec = _Obj(f"a {head} step", (_Key(head, head_kind), *_STEP_KEYS[head]))
        raw = self.mapping(node, path, spec, heads=True)
        args = {k: v for k, (v, _) in raw.items() if k != head}
        if head == "cause":
            cause = build(args)
            unmet = self.machine().cause_unmet(cause)
            if unmet is not None:
                member = unmet.member if unmet.member in raw else "cause"
                raise self.error(raw[member][1], f"{path}.{member}", unmet.text)
            return CauseStep(value, cause, where)
        if head == "fault" and "command" in raw:
            self.check_command(raw["command"][0], raw["command"][1], f"{path}.command")
        if head == "fault":
            return FaultStep(
                value,
                args.get("text", args.get("event")),
                args.get("command"),
                args.get("chunk", 1),
                args.get("delay", 0.0),
                where,
            )
        if head == "emit":
            return emit_step(self, self.profile, value, raw, value_node, path, where)
        if head == "wait":
            return WaitStep(value, where)
        if head == "until":
            return UntilStep(value, args.get("arguments"), args.get("timeout"), where)
        if head == "reply":
            if ("return" in args) == ("error" in args):
                raise self.error(
                    node, path, "a reply step needs exactly one of `return` or `error`"
                )
            err = args.get("error")
            return ReplyStep(
                value,
                args.get("return"),
                err["class"][0] if err else None,
                err["desc"][0] if err else None,
                args.get("times"),
                where,
            )
        if head == "on":
            steps = self.steps(raw["steps"][1], f"{path}.steps")
            return OnStep(value, args.get("arguments"), steps, args.get("times"), where)
        if head == "repeat":
            return RepeatStep(value, self.steps(raw["steps"][1], f"{path}.steps"), where)
        return self.include(value, value_node, path, where)

    def check_command(self, command: str, node: yaml.Node, path: str) -> None:
        """A command the profile does not have could never be sent: a mistake."""
        if command not in self.profile.commands:
            raise self.error(
                node,
                path,
                f"unknown command {command!r}{suggest(command, list(self.profile.commands))}"
                f" in profile {self.profile.name}",
            )

    def include(self, target: str, node: yaml.Node, path: str, where: Where) -> IncludeStep:
        if not self.includes:
            raise self.error(
                node,
                f"{path}.include",
                "include is refused here: it would read a file on the server's side; "
                "send the steps themselves",
            )
        resolved = (self.base / target).resolve()
        if resolved in self.stack:
            chain = " -> ".join(p.name for p in (*self.stack, resolved))
            raise self.error(node, f"{path}.include", f"include cycle: {chain}")
        try:
            text = resolved.read_text(encoding="utf-8")
        except OSError as exc:
            raise self.error(
                node,
                f"{path}.include",
                f"cannot read {target!r} ({exc.strerror}); paths are "
                "relative to the including file",
            ) from None
        sub = _Loader(str(resolved), (*self.stack, resolved))
        sub.profile = self.profile
        sub.vm = self.vm
        sub.budget = self.budget
        root = sub.compose(text)
        if root is None:
            return IncludeStep(target, (), where)
        top = sub.mapping(root, "", _TOP, heads=False)
        steps_node = top.get("steps", (None, None))[1]
        steps = sub.steps(steps_node, "steps") if steps_node is not None else ()
        return IncludeStep(target, steps, where)


def loads_scenario(text: str, file: str | None = None) -> Scenario:
    """Load a scenario from YAML text; ``file`` names it in errors and anchors includes."""
    try:
        return _Loader(file, (Path(file).resolve(),) if file else ()).scenario(text)
    except RecursionError:
        raise ScenarioError("the document is nested too deeply", file) from None


def load_steps(
    steps: Any, scenario: Scenario, origin: str = "<control>", *, includes: bool = True
) -> tuple[Step, ...]:
    """Steps given as JSON data (a list of step mappings), validated against ``scenario``.

    ``includes=False`` refuses ``include:`` steps, for steps that come from a
    client, which must not make the server read its files.
    """
    loader = _Loader(scenario.source)
    loader.file = origin
    loader.includes = includes
    loader.profile = PROFILES[scenario.profile]
    loader.vm = scenario.vm
    try:
        root = loader.compose(json.dumps(steps))
        assert root is not None
        out = loader.steps(root, "steps")
        check_causal(out, scenario.vm, loader.profile, strict=False)
    except RecursionError:
        raise ScenarioError("the steps are nested too deeply", origin) from None
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file (:class:`~qmpsim.errors.ScenarioError` otherwise)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read the file ({exc.strerror})", name) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"the file is not UTF-8 text ({exc.reason})", name) from None
    return loads_scenario(text, name)
