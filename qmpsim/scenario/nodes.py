"""Reading a YAML node tree strictly: one place that turns nodes into values or a
located :class:`~qmpsim.errors.ScenarioError` (file, line, column, path).

A :class:`NodeReader` validates mappings against the grammar's definitions
(:mod:`qmpsim.scenario.grammar`), scalars, durations, sizes, counts and plain JSON,
and counts every value it reads so that aliases cannot multiply a document beyond
reason.  The scenario loader and the parts that read the VM section and the steps
build on it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from qmpsim.errors import ScenarioError, suggest
from qmpsim.scenario.grammar import _HEADS
from qmpsim.scenario.grammar_kinds import (
    _Count,
    _Duration,
    _Json,
    _Kind,
    _List,
    _Obj,
    _Scalar,
    _Size,
)

if TYPE_CHECKING:
    import yaml

__all__ = ["DURATION", "MAX_VALUES", "SIZE", "NodeReader", "Raw", "describe"]

Raw = dict[str, tuple[Any, "yaml.Node"]]
"""A validated mapping: each key's value and the node it was read from."""

MAX_VALUES = 100_000
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$")
_SIZE_UNITS = ("", "K", "M", "G", "T")
_TAGS = {
    "tag:yaml.org,2002:str": "str",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
}
_JSON_TAGS = {*_TAGS, "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = _TAGS.get(node.tag, "a value")
    if kind == "null":
        return "nothing (null)"
    return f"{kind} {node.value!r}" if kind in ("str", "int", "number", "bool") else kind


class NodeReader:
    """Reads one document's nodes; errors name ``file`` and the place in it."""

    def __init__(self, file: str | None) -> None:
        # PyYAML is bound here, on first use: the types, the machine builder and the
        # engine serve idle VMs and control channels without it.
        global yaml
        import yaml

        self.file = file
        self.constructor = yaml.constructor.SafeConstructor()
        self.budget = [MAX_VALUES]  # shared with included files' readers

    def error(self, node: yaml.Node | None, path: str, message: str) -> ScenarioError:
        if node is None:
            return ScenarioError(message, self.file, None, None, path)
        mark = node.start_mark
        return ScenarioError(message, self.file, mark.line + 1, mark.column + 1, path)

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

    def pairs(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, f"expected a mapping, found {describe(node)}")
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

    def mapping(self, node: yaml.Node, path: str, spec: _Obj, heads: bool) -> Raw:
        """Validate a mapping against ``spec``: key -> (value, value node)."""
        out: Raw = {}
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
                    f"{suggest(name, [k.name for k in spec.keys])}; expected one of: {expected}",
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
                raise self.error(node, path, f"expected a list, found {describe(node)}")
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
            raise self.error(node, path, f"expected {want[kind.type]}, found {describe(node)}")
        tag = _TAGS.get(node.tag)
        ok = tag == kind.type or (kind.type == "number" and tag == "int")
        if not ok:
            raise self.error(node, path, f"expected {want[kind.type]}, found {describe(node)}")
        value = self.constructor.construct_object(node) if tag != "str" else node.value
        if kind.enum and value not in kind.enum:
            raise self.error(
                node,
                path,
                f"unknown value {value!r}{suggest(str(value), kind.enum)};"
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
            raise self.error(node, path, f"{expected}, found {describe(node)}")
        match = DURATION.match(node.value)
        if (
            node.tag
            not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
            or not match
        ):
            raise self.error(node, path, f"{expected}, found {describe(node)}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    def size(self, node: yaml.Node, path: str) -> int:
        expected = "expected a size (bytes, or a string like 512K, 64M, 16G)"
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int":
                value = int(node.value)
                if value >= 0:
                    return value
            match = SIZE.match(node.value) if node.tag == "tag:yaml.org,2002:str" else None
            if match:
                return int(float(match.group(1)) * 1024 ** _SIZE_UNITS.index(match.group(2)))
        raise self.error(node, path, f"{expected}, found {describe(node)}")

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
        raise self.error(node, path, f"{expected}, found {describe(node)}")

    def json(self, node: yaml.Node, path: str, object_only: bool) -> Any:
        if object_only and not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, f"expected a mapping, found {describe(node)}")
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
                f"the document expands to more than {MAX_VALUES} values "
                "(aliases repeating aliases?)",
            )
