"""YAML scenarios loaded strictly.

The loader composes the YAML node tree (safe loading, no object construction) so every
mistake is reported with its file, line, column and path in the document; it checks
the timeline's causal order with the machine's rules (:mod:`qmpsim.vm.display`,
:func:`qmpsim.vm.machine.cause_exits`)."""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmpsim.errors import ScenarioError
from qmpsim.qmp.profiles import DEFAULT_PROFILE, PROFILES, Enum, Object, ProfileSpec, Type
from qmpsim.qmp.schema import member_names, problems, type_at, value_at
from qmpsim.scenario.causal import check_causal
from qmpsim.scenario.grammar import (
    _CAUSES,
    _FAULTS,
    _HEADS,
    _NAME,
    _STEP_KEYS,
    _TOP,
    _Count,
    _Duration,
    _Json,
    _Key,
    _Kind,
    _List,
    _Obj,
    _Scalar,
    _Size,
)
from qmpsim.scenario.model import (
    CauseStep,
    Disk,
    EmitStep,
    FaultStep,
    Guest,
    Image,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    Scenario,
    Spice,
    Step,
    UntilStep,
    VmSpec,
    Vnc,
    WaitStep,
    Where,
)

if TYPE_CHECKING:
    import yaml


# --- loading ----------------------------------------------------------------------

_MAX_VALUES = 100_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$")
_SIZE_UNITS = ("", "K", "M", "G", "T")
_TAGS = {
    "tag:yaml.org,2002:str": "str",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
}
_JSON_TAGS = {*_TAGS, "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = _TAGS.get(node.tag, "a value")
    if kind == "null":
        return "nothing (null)"
    return f"{kind} {node.value!r}" if kind in ("str", "int", "number", "bool") else kind


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# schema.Problem's `expected` word -> how the scenario language says it
_WANT = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing (null)",
    "object": "a mapping",
    "array": "a list",
}


class _Loader:
    def __init__(self, file: str | None, stack: tuple[Path, ...] = ()) -> None:
        # PyYAML is bound here, on first use: the types, the machine builder and the
        # engine serve idle VMs and control channels without it.
        global yaml
        import yaml

        self.file = file
        self.stack = stack
        self.base = Path(file).resolve().parent if file else Path.cwd()
        self.constructor = yaml.constructor.SafeConstructor()
        self.profile: ProfileSpec = PROFILES[DEFAULT_PROFILE]
        self.vm = VmSpec()
        self.budget = [_MAX_VALUES]  # shared with included files' loaders
        self.includes = True
        """Whether ``include:`` may read files (not for steps sent over a socket)."""

    # errors --------------------------------------------------------------------

    def error(self, node: yaml.Node | None, path: str, message: str) -> ScenarioError:
        if node is None:
            return ScenarioError(message, self.file, None, None, path)
        mark = node.start_mark
        return ScenarioError(message, self.file, mark.line + 1, mark.column + 1, path)

    # documents -----------------------------------------------------------------

    def compose(self, text: str) -> yaml.Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or "invalid YAML"
            if exc.context:
                problem = f"{exc.context}, {problem}"
            raise ScenarioError(
                f"not valid YAML: {problem}",
                self.file,
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
            ) from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"not valid YAML: {exc}", self.file) from None

    def scenario(self, text: str) -> Scenario:
        root = self.compose(text)
        if root is None:
            raise ScenarioError("the file is empty; expected a mapping with `steps`", self.file)
        top = self.mapping(root, "", _TOP, heads=False)
        if "profile" in top:
            self.profile = PROFILES[top["profile"][0]]
        if "vm" in top:
            self.vm = self.vm_spec(top["vm"][0])
        steps_node = top.get("steps", (None, None))[1]
        steps = self.steps(steps_node, "steps") if steps_node is not None else ()
        actions: dict[str, tuple[Step, ...]] = {}
        if "actions" in top:
            node = top["actions"][1]
            for key_node, value_node in self.pairs(node, "actions"):
                name = self.scalar(key_node, "actions", _NAME)
                actions[name] = self.steps(value_node, f"actions.{name}")
        check_causal(steps, self.vm)
        for name, block in actions.items():
            check_causal(block, self.vm, f"actions.{name}", strict=False)
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
        )

    # generic validation ----------------------------------------------------------

    def pairs(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, f"expected a mapping, found {_describe(node)}")
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, path, "expected a plain key, found a complex key")
            if key_node.value in seen:
                first = seen[key_node.value].start_mark.line + 1
                raise self.error(
                    key_node,
                    path,
                    f"duplicate key {key_node.value!r} (first given on line {first})",
                )
            seen[key_node.value] = key_node
        return list(node.value)

    def mapping(
        self, node: yaml.Node, path: str, spec: _Obj, heads: bool
    ) -> dict[str, tuple[Any, yaml.Node]]:
        """Validate a mapping against ``spec``: key -> (value, value node)."""
        out: dict[str, tuple[Any, yaml.Node]] = {}
        for key_node, value_node in self.pairs(node, path):
            name = key_node.value
            key = spec.key(name)
            sub = f"{path}.{name}" if path else name
            if key is None:
                if heads and name in _HEADS:
                    raise self.error(
                        key_node, path, f"a step has exactly one kind, but {name!r} is a second one"
                    )
                expected = ", ".join(k.name for k in spec.keys) or "no other key"
                raise self.error(
                    key_node,
                    sub,
                    f"unknown key {name!r} in {spec.name}"
                    f"{_suggest(name, [k.name for k in spec.keys])}; expected one of: {expected}",
                )
            out[name] = (self.value(value_node, sub, key.kind), value_node)
        for key in spec.keys:
            if key.required and key.name not in out:
                raise self.error(node, path, f"{spec.name} needs the key {key.name!r}")
        return out

    def value(self, node: yaml.Node, path: str, kind: _Kind) -> Any:
        if isinstance(kind, _Scalar):
            return self.scalar(node, path, kind)
        if isinstance(kind, _Duration):
            return self.duration(node, path)
        if isinstance(kind, _Size):
            return self.size(node, path)
        if isinstance(kind, _Json):
            return self.json(node, path, kind.object_only)
        if isinstance(kind, _Count):
            return self.count(node, path, kind.word)
        if isinstance(kind, _Obj):
            return self.mapping(node, path, kind, heads=False)
        if isinstance(kind, _List):
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(node, path, f"expected a list, found {_describe(node)}")
            return [self.value(n, f"{path}[{i}]", kind.item) for i, n in enumerate(node.value)]
        return None  # steps and step maps are built by the caller from the node

    def scalar(self, node: yaml.Node, path: str, kind: _Scalar) -> Any:
        want = {
            "str": "a string",
            "int": "an integer",
            "number": "a number",
            "bool": "true or false",
        }
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, path, f"expected {want[kind.type]}, found {_describe(node)}")
        tag = _TAGS.get(node.tag)
        ok = tag == kind.type or (kind.type == "number" and tag == "int")
        if not ok:
            raise self.error(node, path, f"expected {want[kind.type]}, found {_describe(node)}")
        value = self.constructor.construct_object(node) if tag != "str" else node.value
        if kind.enum and value not in kind.enum:
            raise self.error(
                node,
                path,
                f"unknown value {value!r}{_suggest(str(value), kind.enum)};"
                f" expected one of: {', '.join(kind.enum)}",
            )
        if kind.minimum is not None and value < kind.minimum:
            raise self.error(
                node, path, f"expected a value of at least {kind.minimum:g}, got {value}"
            )
        if kind.pattern is not None and not re.match(kind.pattern, value):
            raise self.error(node, path, f"{value!r} does not match the pattern {kind.pattern}")
        return value

    def duration(self, node: yaml.Node, path: str) -> float:
        expected = "expected a duration (seconds, or a string like 500ms, 2s, 1.5m, 1h)"
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, path, f"{expected}, found {_describe(node)}")
        match = _DURATION.match(node.value)
        if (
            node.tag
            not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
            or not match
        ):
            raise self.error(node, path, f"{expected}, found {_describe(node)}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    def size(self, node: yaml.Node, path: str) -> int:
        expected = "expected a size (bytes, or a string like 512K, 64M, 16G)"
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int":
                value = int(node.value)
                if value >= 0:
                    return value
            match = _SIZE.match(node.value) if node.tag == "tag:yaml.org,2002:str" else None
            if match:
                return int(float(match.group(1)) * 1024 ** _SIZE_UNITS.index(match.group(2)))
        raise self.error(node, path, f"{expected}, found {_describe(node)}")

    def count(self, node: yaml.Node, path: str, word: str) -> int | None:
        expected = f"expected a positive count, `once` or `{word}`"
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int":
                value = int(node.value)
                if value >= 1:
                    return value
            elif node.value == word:
                return None
            elif node.value == "once":
                return 1
        raise self.error(node, path, f"{expected}, found {_describe(node)}")

    def json(self, node: yaml.Node, path: str, object_only: bool) -> Any:
        if object_only and not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, f"expected a mapping, found {_describe(node)}")
        for sub, sub_path in self.walk(node, path):
            if sub.tag not in _JSON_TAGS:
                raise self.error(sub, sub_path, f"{sub.tag} is not plain JSON data")
            if isinstance(sub, yaml.MappingNode):
                for key_node, _ in self.pairs(sub, sub_path):
                    if key_node.tag != "tag:yaml.org,2002:str":
                        raise self.error(key_node, sub_path, "JSON object keys must be strings")
        return self.constructor.construct_object(node, deep=True)

    def walk(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        out: list[tuple[yaml.Node, str]] = []
        todo = [(node, path)]
        while todo:
            node, path = todo.pop()
            self.spend(node, path)
            out.append((node, path))
            if isinstance(node, yaml.MappingNode):
                todo += [(v, f"{path}.{k.value}") for k, v in reversed(node.value)]
            elif isinstance(node, yaml.SequenceNode):
                todo += [(v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node.value)))]
        return out

    def spend(self, node: yaml.Node, path: str) -> None:
        """Count a value; aliases that multiply a document beyond reason are refused."""
        self.budget[0] -= 1
        if self.budget[0] < 0:
            raise self.error(
                node,
                path,
                f"the document expands to more than {_MAX_VALUES} values "
                "(aliases repeating aliases?)",
            )

    # the VM ------------------------------------------------------------------------

    def vm_spec(self, raw: dict[str, tuple[Any, yaml.Node]]) -> VmSpec:
        disks: list[Disk] = []
        for i, d in enumerate(raw.get("disks", ([], None))[0]):
            disk = Disk(**{k: v for k, (v, _) in d.items()})
            if any(x.name == disk.name for x in disks):
                node = raw["disks"][1].value[i]
                raise self.error(node, f"vm.disks[{i}]", f"a second disk named {disk.name!r}")
            if disk.node_name is not None and any(x.node_name == disk.node_name for x in disks):
                node = d["node_name"][1]
                raise self.error(
                    node,
                    f"vm.disks[{i}].node_name",
                    f"a second disk with node name {disk.node_name!r}",
                )
            disks.append(disk)

        images = tuple(
            Image(**{k: v for k, (v, _) in i.items()}) for i in raw.get("images", ([], None))[0]
        )

        def sub(key: str, cls: type[Vnc] | type[Spice] | type[Guest]) -> Any:
            if key not in raw:
                return None
            return cls(**{k: v for k, (v, _) in raw[key][0].items()})

        if raw.get("balloon", (False,))[0] and not raw.get("cpus", (0,))[0]:
            raise self.error(
                raw["balloon"][1],
                "vm.balloon",
                "a balloon device needs a PCI bus: give the VM cpus (1 or more)",
            )
        return VmSpec(
            name=raw.get("name", (None,))[0],
            uuid=raw.get("uuid", (None,))[0],
            seed=raw.get("seed", (0,))[0],
            no_shutdown=raw.get("no_shutdown", (False,))[0],
            initial_state=raw.get("initial_state", ("running",))[0],
            watchdog=raw.get("watchdog", (None,))[0],
            disks=tuple(disks),
            vnc=sub("vnc", Vnc),
            spice=sub("spice", Spice),
            cpus=raw.get("cpus", (0,))[0],
            guest=sub("guest", Guest),
            images=images,
            memory=raw.get("memory", (None,))[0],
            balloon=raw.get("balloon", (False,))[0],
            incoming=raw.get("incoming", (None,))[0],
        )

    # steps ---------------------------------------------------------------------------

    def steps(self, node: yaml.Node, path: str) -> tuple[Step, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, path, f"expected a list of steps, found {_describe(node)}")
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
                f"expected a step (a mapping with one of: {kinds}), found {_describe(node)}",
            )
        pairs = self.pairs(node, path)
        heads = [(k, v) for k, v in pairs if k.value in _HEADS]
        if not heads:
            first = pairs[0][0] if pairs else node
            word = first.value if isinstance(first, yaml.ScalarNode) else ""
            raise self.error(
                first,
                path,
                f"a step needs one of: {kinds}; found {word!r}{_suggest(word, list(_HEADS))}",
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
            self.check_cause(value, raw, path)
            return CauseStep(value, build(args), where)
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
            return self.emit_step(value, raw, value_node, path, where)
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
                f"unknown command {command!r}{_suggest(command, list(self.profile.commands))}"
                f" in profile {self.profile.name}",
            )

    def check_cause(self, kind: str, raw: dict[str, tuple[Any, yaml.Node]], path: str) -> None:
        if kind in ("disk-error", "disk-repaired", "disk-io", "tray-moved"):
            device, node = raw["device"]
            names = [d.name for d in self.vm.disks]
            if device not in names:
                known = ", ".join(names) if names else "none: add them under vm.disks"
                raise self.error(
                    node,
                    f"{path}.device",
                    f"no disk named {device!r}{_suggest(device, names)};"
                    f" the VM's disks are: {known}",
                )
            nospace = raw.get("nospace")
            if nospace is not None and nospace[0] and not self.vm.disks[names.index(device)].thin:
                raise self.error(
                    nospace[1],
                    f"{path}.nospace",
                    f"disk {device!r} is not thin-provisioned, so it cannot run out of space;"
                    " add `thin: true` to it in vm.disks",
                )
            if kind == "tray-moved" and self.vm.disks[names.index(device)].media != "cdrom":
                raise self.error(
                    node,
                    f"{path}.device",
                    f"disk {device!r} has no tray; add `media: cdrom` to it in vm.disks",
                )
        elif kind.startswith("vnc-") and self.vm.vnc is None:
            raise self.error(
                raw["cause"][1], f"{path}.cause", f"{kind} needs a VNC server: add vm.vnc"
            )
        elif kind.startswith("spice-") and self.vm.spice is None:
            raise self.error(
                raw["cause"][1], f"{path}.cause", f"{kind} needs a SPICE server: add vm.spice"
            )
        elif kind == "watchdog" and "action" not in raw and self.vm.watchdog is None:
            raise self.error(
                raw["cause"][1],
                f"{path}.cause",
                "the VM has no watchdog: set vm.watchdog to its action, or give `action`",
            )
        elif kind == "watchdog":
            action, node = raw.get("action", (self.vm.watchdog, raw["cause"][1]))
            spec = self.profile.events.get("WATCHDOG")
            member = spec.data.member("action") if spec and spec.data else None
            values = member.type.values if member and isinstance(member.type, Enum) else ()
            if values and action not in values:
                raise self.error(
                    node,
                    f"{path}.action" if "action" in raw else f"{path}.cause",
                    f"watchdog action {action!r} does not exist in profile "
                    f"{self.profile.name}; expected one of: {', '.join(values)}",
                )
        elif kind == "guest-balloon" and not self.vm.balloon:
            raise self.error(
                raw["cause"][1], f"{path}.cause", "guest-balloon needs a balloon: add vm.balloon"
            )
        elif kind == "guest-suspend" and not self.vm.cpus:
            raise self.error(
                raw["cause"][1],
                f"{path}.cause",
                "guest-suspend needs ACPI, which a VM without cpus (-M none) lacks: give it cpus",
            )
        elif kind == "guest-panic" and "GUEST_PANICKED" not in self.profile.events:
            raise self.error(
                raw["cause"][1],
                f"{path}.cause",
                f"profile {self.profile.name} has no guest panic notification (GUEST_PANICKED)",
            )

    def emit_step(
        self,
        event: str,
        raw: dict[str, tuple[Any, yaml.Node]],
        event_node: yaml.Node,
        path: str,
        where: Where,
    ) -> EmitStep:
        spec = self.profile.events.get(event) if self.profile.events else None
        if self.profile.events and spec is None:
            names = sorted(self.profile.events)
            raise self.error(
                event_node,
                f"{path}.emit",
                f"unknown event {event!r}{_suggest(event, names)} in profile {self.profile.name}",
            )
        fake = bool(raw.get("fake", (False,))[0])
        data_node = raw["data"][1] if "data" in raw else None
        if spec is not None:
            if spec.data is None and (data_node is not None or fake):
                node = data_node if data_node is not None else raw["fake"][1]
                raise self.error(node, f"{path}.data", f"{event} carries no data")
            if spec.data is not None and data_node is not None:
                self.check_data(data_node, f"{path}.data", spec.data, partial=fake)
            elif (
                spec.data is not None and not fake and any(not f.optional for f in spec.data.fields)
            ):
                raise self.error(
                    event_node, path, f"{event} needs `data` (or `fake: true` to fill it)"
                )
        data = raw["data"][0] if data_node is not None else None
        return EmitStep(event, data, fake, where)

    def check_data(self, node: yaml.Node, path: str, type_: Type, partial: bool) -> None:
        """Check event data against its schema with the profile's one walker
        (:func:`qmpsim.qmp.schema.problems`), reporting its first problem where it is."""
        value = self.constructor.construct_object(node, deep=True)
        found = list(itertools.islice(problems(type_, value, partial=partial), 64))
        if not found:
            return
        first = found[0]
        nodes = {p.lstrip("."): n for n, p in self.walk(node, "")}
        parent = first.path.rpartition(".")[0] if first.kind in ("missing", "unexpected") else ""
        at = nodes.get(first.path if first.kind != "missing" else parent, node)
        where = path + ("." if first.path and not first.path.startswith("[") else "") + first.path
        owner = type_at(type_, parent, value)
        label = f"`{path}.{parent}`" if parent else f"`{path}`"
        if isinstance(owner, Object) and not owner.name.isdigit():
            label = owner.name
        if first.kind == "missing":
            same = [
                p.name for p in found if p.kind == "missing" and p.path.rpartition(".")[0] == parent
            ]
            where = path + (f".{parent}" if parent else "")
            raise self.error(at, where, f"{label} is missing {', '.join(str(n) for n in same)}")
        if first.kind == "unexpected":
            names = member_names(owner, value_at(value, parent))
            key = first.name or ""
            mapping = nodes.get(parent)
            if isinstance(mapping, yaml.MappingNode):  # point at the key, not its value
                at = next((k for k, _ in mapping.value if k.value == key), at)
            raise self.error(
                at,
                where,
                f"{label} has no member {key!r}{_suggest(key, names)};"
                f" expected: {', '.join(names)}",
            )
        if first.kind == "value":
            enum = type_at(type_, first.path, value)
            values = enum.values if isinstance(enum, Enum) else ()
            raise self.error(
                at,
                where,
                f"unknown value {first.value!r}{_suggest(str(first.value), values)};"
                f" expected one of: {', '.join(values)}",
            )
        want = _WANT.get(first.expected, first.expected)
        raise self.error(at, where, f"expected {want}, found {_describe(at)}")

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
        check_causal(out, scenario.vm, strict=False)
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
