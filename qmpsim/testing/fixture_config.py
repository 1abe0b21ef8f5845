"""What configures the fixtures: the ``qmpsim`` marker's arguments, the scenario and
cassette they name, and a private socket path per simulator."""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from qmpsim.errors import suggest

if TYPE_CHECKING:
    from qmpsim.scenario.model import Scenario

DEFAULT_TIMEOUT = 10.0
"""Seconds the blocking ``wait_*`` methods of :class:`QmpServer` wait by default."""

_MARKER_ARGS = (
    "scenario",
    "profile",
    "vm",
    "strict",
    "tcp",
    "seed",
    "speed",
    "multi_client",
    "replay",
    "record_mode",
    "qemu",
    "allow",
    "expect",
    "in_order",
    "timeout",
    "strict_commands",
)
_MARKER_HELP = (
    "qmpsim(scenario=None, profile=None, vm=None, strict=False, tcp=False, seed=None, "
    "speed=1.0, multi_client=False, replay=None, record_mode=None, qemu=(), "
    "allow=('query-*',), expect=(), in_order=False, timeout=10.0, strict_commands=False): "
    "configure the qmp_server and trio_qmp_server fixtures"
)

DEFAULT_ALLOW = ("query-*",)
"""What strict mode tolerates unless the marker says otherwise: read-only queries.
Every real client sends some when it connects, and none changes the VM."""


@dataclass(frozen=True)
class _Expectation:
    command: str
    arguments: Mapping[str, Any] | None
    count: int | None
    origin: str


class _Sockets:
    """One private directory per process for the fixtures' sockets.

    Removing a directory costs milliseconds on some filesystems, far more than a
    simulator; each socket file is removed by its simulator.
    """

    def __init__(self) -> None:
        self.directory: str | None = None
        self.count = 0
        self.lock = threading.Lock()


_sockets = _Sockets()


def _socket_path() -> str:
    with _sockets.lock:
        if _sockets.directory is None:
            _sockets.directory = tempfile.mkdtemp(prefix="qmpsim-")
            atexit.register(shutil.rmtree, _sockets.directory, ignore_errors=True)
        _sockets.count += 1
        return os.path.join(_sockets.directory, f"qmp-{_sockets.count}.sock")


# --- configuration from the marker ----------------------------------------------------


@dataclass(frozen=True)
class _Config:
    scenario: Scenario
    scripted: bool  # the scenario came from the marker (its timeline plays)
    strict: bool
    tcp: bool
    seed: int | None
    speed: float
    multi_client: bool
    base: Path | None  # the test file's directory
    cassette: _Cassette | None = None
    allow: tuple[str, ...] = DEFAULT_ALLOW
    expect: tuple[_Expectation, ...] = ()
    in_order: bool = False
    timeout: float = 10.0
    strict_commands: bool = False  # a command whose reply would be generated fails the test


@dataclass(frozen=True)
class _Cassette:
    path: Path
    mode: str
    qemu: tuple[str, ...] | None
    upstream: str | None


def _config(node: pytest.Item | None) -> _Config:
    marker = node.get_closest_marker("qmpsim") if node is not None else None
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        if len(marker.args) > 1 or "scenario" in kwargs:
            _usage("takes keyword arguments (and at most one positional: the scenario)")
        kwargs["scenario"] = marker.args[0]
    return _config_from(kwargs, node)


def _config_from(kwargs: Mapping[str, Any], node: pytest.Item | None) -> _Config:
    """A configuration from the marker's (or ``make_qmp_server``'s) keyword arguments."""
    for name in kwargs:
        if name not in _MARKER_ARGS:
            hint = suggest(name, _MARKER_ARGS)
            _usage(f"unknown argument {name!r}{hint}; it takes: {', '.join(_MARKER_ARGS)}")
    strict = kwargs.get("strict", False)
    tcp = kwargs.get("tcp", False)
    multi_client = kwargs.get("multi_client", False)
    strict_commands = kwargs.get("strict_commands", False)
    for name, value in (
        ("strict", strict),
        ("tcp", tcp),
        ("multi_client", multi_client),
        ("strict_commands", strict_commands),
    ):
        if not isinstance(value, bool):
            _usage(f"{name} must be True or False, not {value!r}")
    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        _usage(f"seed must be an integer, not {seed!r}")
    speed = kwargs.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or speed <= 0:
        _usage(f"speed must be a positive number, not {speed!r}")
    base = Path(node.path).parent if node is not None else None
    cassette = _cassette(kwargs, node, base)
    scenario, scripted = _scenario(kwargs, base)
    return _Config(
        scenario,
        scripted,
        strict,
        tcp,
        seed,
        float(speed),
        multi_client,
        base,
        cassette,
        *_expectations(kwargs),
        strict_commands,
    )


def _expectations(
    kwargs: Mapping[str, Any],
) -> tuple[tuple[str, ...], tuple[_Expectation, ...], bool, float]:
    """``allow=``, ``expect=``, ``in_order=`` and ``timeout=``, checked."""
    allow = kwargs.get("allow", DEFAULT_ALLOW)
    if isinstance(allow, str) or not all(isinstance(a, str) for a in allow):
        _usage(f"allow must be a list of command names or patterns (query-*), not {allow!r}")
    expected: list[_Expectation] = []
    items = kwargs.get("expect", ())
    if isinstance(items, str | Mapping):
        _usage(f"expect must be a list of commands, not {items!r}")
    for item in items:
        if isinstance(item, str):
            expected.append(_Expectation(item, None, None, "marker"))
        elif isinstance(item, Mapping) and isinstance(item.get("command"), str):
            unknown = set(item) - {"command", "arguments", "count"}
            if unknown:
                _usage(f"expect: unknown key(s) {sorted(unknown)} (use command, arguments, count)")
            expected.append(
                _Expectation(item["command"], item.get("arguments"), item.get("count"), "marker")
            )
        else:
            _usage(
                "expect takes command names or {'command': ..., 'arguments': ..., "
                f"'count': ...}} mappings, not {item!r}"
            )
    in_order = kwargs.get("in_order", False)
    if not isinstance(in_order, bool):
        _usage(f"in_order must be True or False, not {in_order!r}")
    timeout = kwargs.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        _usage(f"timeout must be a positive number of seconds, not {timeout!r}")
    return tuple(allow), tuple(expected), in_order, float(timeout)


def _cassette(
    kwargs: Mapping[str, Any], node: pytest.Item | None, base: Path | None
) -> _Cassette | None:
    """The cassette of ``replay=``: its path (relative: to the test file) and how to use it."""
    source = kwargs.get("replay")
    for name in ("record_mode", "qemu"):
        if kwargs.get(name) is not None and source is None:
            _usage(f"{name}= goes with replay=CASSETTE")
    if source is None:
        return None
    if not isinstance(source, str | os.PathLike):
        _usage(f"replay must be a cassette's path, not {source!r}")
    for name in ("scenario", "vm", "profile"):
        if kwargs.get(name) is not None:
            _usage(f"give {name}= or replay=, not both: the cassette holds the VM's side")
    path = Path(source)
    if not path.is_absolute() and base is not None:
        path = base / path
    options = node.config if node is not None else None
    mode = kwargs.get("record_mode")
    if mode is None:
        mode = options.getoption("qmpsim_record_mode", "none") if options is not None else "none"
    command = options.getoption("qmpsim_qemu", None) if options is not None else None
    upstream = options.getoption("qmpsim_upstream", None) if options is not None else None
    extra = kwargs.get("qemu") or ()
    if isinstance(extra, str) or not all(isinstance(a, str) for a in extra):
        _usage(f"qemu must be a list of QEMU arguments, not {extra!r}")
    qemu = (*shlex.split(command), *extra) if command else None
    from qmpsim.qmp.cassette import CassetteError
    from qmpsim.runtime.vcr import check_mode

    try:
        check_mode(path, str(mode), can_record=qemu is not None or upstream is not None)
    except CassetteError as exc:
        problem = str(exc)
    else:
        return _Cassette(path, str(mode), qemu, upstream)
    _usage(problem)


def _scenario(kwargs: Mapping[str, Any], base: Path | None) -> tuple[Scenario, bool]:
    from qmpsim.errors import ScenarioError

    source = kwargs.get("scenario")
    if source is not None:
        for name in ("vm", "profile"):
            if kwargs.get(name) is not None:
                _usage(f"give {name}= or scenario=, not both: the scenario describes its VM")
        from qmpsim.scenario.model import Scenario

        if isinstance(source, Scenario):
            return source, True
        if not isinstance(source, str | os.PathLike):
            _usage(
                f"scenario must be a shipped scenario's name, a path or a Scenario, not {source!r}"
            )
        try:
            return _load_file(_resolve_scenario(str(source), base)), True
        except ScenarioError as exc:
            problem = f"cannot load the scenario: {exc}"
        _usage(problem)
    document: dict[str, Any] = {"clock": "startup", "steps": []}
    vm = kwargs.get("vm")
    if vm is not None:
        if not isinstance(vm, Mapping):
            _usage(f"vm must be a mapping written like a scenario's `vm` section, not {vm!r}")
        document["vm"] = dict(vm)
    if kwargs.get("profile") is not None:
        document["profile"] = kwargs["profile"]
    try:
        # JSON is YAML: the scenario loader validates vm and profile with its usual messages.
        return _load_text(json.dumps(document, default=str, sort_keys=True)), False
    except ScenarioError as exc:
        problem = exc.message + (f" (at {exc.path})" if exc.path else "")
    _usage(problem)


# Parsing YAML costs more than starting a simulator: tests that share a marker share
# its (frozen) scenario.
_loaded: dict[Any, Scenario] = {}


def _load_text(text: str) -> Scenario:
    scenario = _loaded.get(text)
    if scenario is None:
        from qmpsim.scenario.loader import loads_scenario

        scenario = _loaded[text] = loads_scenario(text, None)
    return scenario


def _load_file(path: Path) -> Scenario:
    """A scenario file, loaded again only when it changed (includes are not watched)."""
    from qmpsim.scenario.loader import load_scenario

    try:
        st = path.stat()
        key: Any = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return load_scenario(path)  # its error message says what is wrong
    scenario = _loaded.get(key)
    if scenario is None:
        scenario = _loaded[key] = load_scenario(path)
    return scenario


def _resolve_scenario(name: str, base: Path | None) -> Path:
    """A shipped scenario's name, or a file (relative paths: from the current
    directory, else from the test file's directory)."""
    from qmpsim.scenario.library import resolve

    path = resolve(name)
    if not path.exists() and base is not None and not path.is_absolute():
        beside = base / name
        if beside.exists():
            return beside
    if not path.exists():
        from qmpsim.scenario.library import unknown_scenario

        raise unknown_scenario(name)
    return path


def _scenario_arg(scenario: Scenario | str | os.PathLike[str], base: Path | None) -> Scenario:
    """A scenario given as an object (drawn by Hypothesis, built in code) or by name/path."""
    from qmpsim.scenario.model import Scenario

    if isinstance(scenario, Scenario):
        return scenario
    if not isinstance(scenario, str | os.PathLike):
        raise TypeError(f"a scenario is a name, a path or a Scenario, not {scenario!r}")
    return _load_file(_resolve_scenario(str(scenario), base))


def _usage(message: str) -> NoReturn:
    pytest.fail(f"@pytest.mark.qmpsim: {message}", pytrace=False)
