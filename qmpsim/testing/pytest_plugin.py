"""pytest plugin for qmpsim (registered through the ``pytest11`` entry point).

Two fixtures and a marker:

- ``qmp_server``: a simulator serving a fresh Unix socket (or loopback TCP) from a
  background thread, for sync, asyncio and trio clients alike;
- ``trio_qmp_server``: the same simulator running in the test's own trio run
  (pytest-trio), so ``autojump_clock`` makes scenario delays free;
- ``@pytest.mark.qmpsim(scenario=..., profile=..., vm=..., strict=..., ...)``
  configures either fixture.

Cheap to import: pytest loads it in every run of the environment, so trio and the
simulator are imported inside the fixtures.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import json
import logging
import os
import shlex
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest

from qmpsim.errors import QmpSimError

if TYPE_CHECKING:
    import trio

    from qmpsim.qmp.transcript import SentCommand, Transcript
    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.runtime.server import Simulator
    from qmpsim.runtime.vcr import CassetteDeck
    from qmpsim.scenario.model import Scenario, Step
    from qmpsim.vm.machine import Cause, CommandError, Outcome

__all__ = ["DEFAULT_TIMEOUT", "QmpServer", "SimulatorError", "TrioQmpServer"]

T = TypeVar("T")

log = logging.getLogger("qmpsim.pytest")

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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qmpsim", "qmpsim cassettes (replay=... in the qmpsim marker)")
    group.addoption(
        "--qmpsim-record-mode",
        default="none",
        choices=("none", "once", "new_episodes", "all"),
        help="none (replay only, the default), once (record missing cassettes), "
        "new_episodes (also record connections a cassette lacks), all (record again)",
    )
    group.addoption(
        "--qmpsim-qemu",
        metavar="COMMAND",
        help="a QEMU command line to record with, started per test with its monitor added "
        "(e.g. 'qemu-system-x86_64 -M none -nodefaults -display none')",
    )
    group.addoption(
        "--qmpsim-upstream",
        metavar="SOCKET",
        help="the monitor socket of a running QEMU to record with",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


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
            close = difflib.get_close_matches(name, _MARKER_ARGS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
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


# --- the simulator side, shared by both fixtures (runs in trio) ---------------------


@dataclass(frozen=True)
class _Expectation:
    command: str
    arguments: Mapping[str, Any] | None
    count: int | None
    origin: str


@dataclass
class _Tracking:
    """What strict mode compares the traffic with."""

    expected: set[str] = field(default_factory=lambda: {"qmp_capabilities"})
    allowed: tuple[str, ...] = DEFAULT_ALLOW
    """Patterns of commands strict mode tolerates (fnmatch)."""
    expectations: list[_Expectation] = field(default_factory=list)
    in_order: bool = False

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


class _Core:
    """The simulator, the scenarios it plays and the strict-mode bookkeeping."""

    def __init__(self, config: _Config) -> None:
        from qmpsim.runtime.server import Simulator
        from qmpsim.scenario.dryrun import build_machine

        self.config = config
        self.scenario = config.scenario
        self.deck: CassetteDeck | None = None
        if config.cassette is not None:
            from qmpsim.runtime.vcr import CassetteDeck

            cassette = config.cassette
            self.deck = CassetteDeck(
                cassette.path,
                cassette.mode,
                qemu=cassette.qemu,
                upstream=cassette.upstream,
                workdir=os.path.dirname(_socket_path()),
                multi_client=config.multi_client,
            )
            self.sim = self.deck.sim
        else:
            self.sim = Simulator(
                build_machine(config.scenario, config.seed), multi_client=config.multi_client
            )
        self.sim.machine.strict_commands = config.strict_commands
        self.tracking = _Tracking(
            allowed=config.allow,
            expectations=list(config.expect),
            in_order=config.in_order,
        )
        self.tracking.expected |= {e.command for e in config.expect}
        self.runners: list[ScenarioRunner] = []
        self.scopes: list[trio.CancelScope] = []
        self.claimed: set[int] = set()
        self.seen = 0
        self.path = ""
        self.address: str | tuple[str, int] = ""
        from qmpsim.logs import log_traffic

        # caplog and --log-cli-level=DEBUG show a test's traffic.
        self.sim.transcript.subscribe(log_traffic)

    async def listen(self, nursery: trio.Nursery) -> None:
        if self.deck is not None:
            self.path = await nursery.start(self.deck.serve_unix, _socket_path())
            self.address = self.path
            if self.config.tcp:
                self.address = await nursery.start(self.deck.serve_tcp)
            return
        self.path = await self.sim.listen_unix(_socket_path())
        self.address = self.path
        if self.config.tcp:
            self.address = await self.sim.listen_tcp("127.0.0.1", 0)

    def simulated(self, what: str) -> None:
        """Refuse ``what`` when no client can reach the simulator (every connection records)."""
        if self.deck is not None and not self.deck.simulated:
            raise RuntimeError(
                f"{what}: this test records a real QEMU (record mode {self.deck.mode}, "
                f"cassette {self.deck.path}); ask the VM itself"
            )

    def report(self) -> str | None:
        """What fails a test that passed: strict mode's report, a replay's objections."""
        parts = [self.strict_report(strict=self.config.strict)]
        if self.deck is not None:
            problems = self.deck.problems(strict=self.config.strict)
            if problems:
                lines = [f"qmpsim replay of {self.deck.path}: the client did not do as recorded"]
                parts.append("\n".join([*lines, *(f"  {p}" for p in problems)]))
        text = "\n".join(p for p in parts if p)
        return text or None

    def save(self) -> None:
        """Write what was recorded to the cassette (the test passed)."""
        if self.deck is not None:
            saved = self.deck.save()
            if saved is not None:
                log.info("recorded %s", saved)

    async def start(self, nursery: trio.Nursery, scenario: Scenario, *, seed: int | None) -> None:
        """Play ``scenario`` in ``nursery`` instead of the one playing, on a fresh VM of its own."""
        from qmpsim.scenario.model import UntilStep

        self.stop()
        self.tracking.untils.clear()
        self.tracking.replies.clear()
        if self.runners or scenario is not self.config.scenario:
            from qmpsim.scenario.dryrun import build_machine

            machine = build_machine(scenario, seed)
            machine.clock = self.sim.now
            machine.strict_commands = self.config.strict_commands
            self.sim.machine = machine
        self.scenario = scenario
        tracking = self.tracking
        tracking.expected |= _commands_named(scenario)
        for step in _walk(scenario.steps, timeline=True):
            if isinstance(step, UntilStep):
                tracking.untils[id(step)] = (step, "the timeline never reached it")
        runner = _tracked_runner(self, scenario, speed=self.config.speed, seed=seed)
        self.runners.append(runner)
        await nursery.start(self._play, runner)

    async def _play(self, runner: ScenarioRunner, *, task_status: trio.TaskStatus[None]) -> None:
        import trio

        with trio.CancelScope() as scope:
            self.scopes.append(scope)
            await runner.run(task_status=task_status)

    def stop(self) -> None:
        """Stop the scenarios (they play in a nursery the simulator does not own)."""
        for scope in self.scopes:
            scope.cancel()

    def expect(
        self, command: str, arguments: Mapping[str, Any] | None, count: int | None, origin: str
    ) -> None:
        if count is not None and count < 0:
            raise ValueError("expect: count must not be negative")
        self.tracking.expected.add(command)
        self.tracking.expectations.append(_Expectation(command, arguments, count, origin))

    def allow(self, command: str) -> None:
        self.tracking.expected.add(command)

    def reset(self) -> None:
        self.sim.reset()
        self.claimed.clear()
        self.seen = 0

    def fresh(self) -> None:
        """Back to the state of a new fixture: between the tests sharing a session server."""
        from qmpsim.scenario.dryrun import build_machine

        self.stop()
        self.sim.disconnect()
        self.runners.clear()
        self.scopes.clear()
        self.scenario = self.config.scenario
        machine = build_machine(self.config.scenario, self.config.seed)
        machine.clock = self.sim.now
        machine.strict_commands = self.config.strict_commands
        self.sim.machine = machine
        self.reset()
        self.tracking = _Tracking(
            allowed=self.config.allow,
            expectations=list(self.config.expect),
            in_order=self.config.in_order,
        )
        self.tracking.expected |= {e.command for e in self.config.expect}

    def cause(self, cause: Cause | str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.simulated("cause()")
        if isinstance(cause, str):
            from qmpsim.scenario.loader import load_steps
            from qmpsim.scenario.model import CauseStep

            (step,) = load_steps([{"cause": cause, **params}], self.scenario, "cause()")
            assert isinstance(step, CauseStep)
            cause = step.cause
        elif params:
            raise TypeError("cause(): keyword arguments go with a cause named by a string")
        return [event.to_json() for event in self.sim.cause(cause)]

    async def wait_for_command(
        self, name: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The first command ``name`` not returned before, once it has been answered.

        Read from the transcript, so it never takes a command away from a
        scenario's ``until`` step.
        """
        import trio

        while True:
            found = self._answered_command(name, arguments)
            if found is not None:
                return found
            changed = trio.Event()
            unsubscribe = self.sim.transcript.subscribe(_setter(changed))
            try:
                await changed.wait()
            finally:
                unsubscribe()

    def _answered_command(
        self, name: str, arguments: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        from qmpsim.qmp.transcript import Direction, arguments_match

        transcript = self.sim.transcript
        if len(transcript) < self.seen:
            self.claimed.clear()  # the transcript was cleared by a reset
        self.seen = len(transcript)
        sent = transcript.commands_sent()
        for index, command in enumerate(sent):
            if index in self.claimed or command.command != name:
                continue
            if arguments is not None and not arguments_match(command.arguments, arguments):
                continue
            # In-band replies come in order: the k-th command of a client has been
            # answered once that client received k replies.
            rank = sum(1 for c in sent[: index + 1] if c.client == command.client)
            replies = sum(
                1
                for entry in transcript
                if entry.direction is Direction.OUT and entry.client == command.client
                for m in entry.messages
                if isinstance(m, dict) and ("return" in m or "error" in m)
            )
            if replies < rank:
                return None
            self.claimed.add(index)
            return dict(command.message)
        return None

    def snapshot(self) -> Transcript:
        from qmpsim.qmp.transcript import Transcript

        return Transcript(entries=list(self.sim.transcript.entries))

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


def _capture(fn: Callable[[], Any], done: threading.Event, box: dict[str, Any]) -> None:
    try:
        box["value"] = fn()
    except BaseException as exc:
        box["error"] = exc
    finally:
        done.set()


def _setter(event: trio.Event) -> Callable[[object], None]:
    return lambda _entry: event.set()


def _n(count: int | None, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tracked_runner(
    core: _Core, scenario: Scenario, *, speed: float, seed: int | None
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


class _ErrorLog(logging.Handler):
    """Collects the exceptions the simulator logs from one thread instead of raising."""

    def __init__(self, thread: int | None) -> None:
        super().__init__(logging.ERROR)
        self.thread = thread
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.thread is not None and record.thread != self.thread:
            return
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


_FAILURE = pytest.StashKey[tuple[list[BaseException], str | None]]()
"""What the trio fixture found at its teardown: server-side errors, a strict report."""
_SAVE = pytest.StashKey[Callable[[], None]]()
"""Writes what the trio fixture recorded, once the test has passed."""
_TRIO_TRANSCRIPT = pytest.StashKey["Transcript"]()
"""The trio fixture's transcript, for the report of a test that failed."""


def _raise_errors(errors: list[BaseException]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup("errors inside the qmpsim simulator", errors)


# --- the threaded fixture -------------------------------------------------------------


class SimulatorError(QmpSimError):
    """The simulator's thread stopped because of an error (the cause is chained)."""


class QmpServer:
    """A running simulator on a fresh socket, served from a background thread.

    Every method is safe to call from the test's thread, whatever event loop (if
    any) the client uses.  ``path`` is the Unix socket; ``address`` is what to
    connect to: the TCP ``(host, port)`` when the marker asked for ``tcp=True``,
    else the socket path.
    """

    def __init__(
        self, config: _Config, *, timeout: float = DEFAULT_TIMEOUT, name: str = "qmp_server"
    ) -> None:
        self.timeout = timeout
        self.name = name
        """What the failure report calls this server."""
        self._config = config
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="qmpsim-server", daemon=True)
        self._crash: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._core: _Core | None = None
        self._log = _ErrorLog(None)
        self._reported: set[int] = set()
        self._stopped = False
        self._lock = threading.Lock()
        self._pending: set[threading.Event] = set()

    # lifetime

    def _start(self) -> None:
        self._thread.start()
        self._log.thread = self._thread.ident
        logging.getLogger("qmpsim").addHandler(self._log)
        self._ready.wait()
        if self._crash is not None:
            self._close()
            raise SimulatorError(f"the simulator did not start: {self._crash}") from self._crash

    def _main(self) -> None:
        import trio

        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._crash = exc
        finally:
            self._ready.set()
            with self._lock:
                for waiting in self._pending:
                    waiting.set()

    async def _serve(self) -> None:
        import trio

        core = _Core(self._config)
        self._stop = trio.Event()
        async with core.sim, trio.open_nursery() as nursery:
            await core.listen(nursery)
            if self._config.scripted:
                await core.start(nursery, core.scenario, seed=self._config.seed)
            self._core = core
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _close(self) -> None:
        """Stop the simulator and wait for its thread; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._token is not None and self._thread.is_alive():
            import trio

            stop = self._stop
            assert stop is not None
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=self._token)
        self._thread.join()
        logging.getLogger("qmpsim").removeHandler(self._log)

    def _unreported_errors(self) -> list[BaseException]:
        errors = list(self._log.errors)
        if self._core is not None:
            errors += [e for e in self._core.sim.errors if e not in errors]
        if self._crash is not None and self._crash not in errors:
            errors.append(self._crash)
        fresh = [e for e in errors if id(e) not in self._reported]
        self._reported.update(id(e) for e in fresh)
        return fresh

    def _after_test(self) -> None:
        """At the end of a passing test: server-side errors, strict mode and replay
        objections, then the recorded cassette is written."""
        _raise_errors(self._unreported_errors())
        report = self._call(lambda core: core.report())
        if report is not None:
            pytest.fail(report, pytrace=False)
        self._call(lambda core: core.save())

    def _teardown(self) -> None:
        self._close()
        _raise_errors(self._unreported_errors())

    # running things in the simulator's thread

    def _call(self, fn: Callable[[_Core], T]) -> T:
        core = self._live()
        result: T = self._in_loop(lambda done, box: _capture(lambda: fn(core), done, box))
        return result

    def _wait(self, fn: Callable[[_Core], Awaitable[T]], timeout: float | None, what: str) -> T:
        import trio

        core = self._live()
        limit = self.timeout if timeout is None else timeout

        async def bounded(done: threading.Event, box: dict[str, Any]) -> None:
            try:
                with trio.fail_after(limit):
                    box["value"] = await fn(core)
            except trio.TooSlowError:
                box["error"] = TimeoutError(f"{what} within {limit:g}s{self._sent_now(core)}")
            except trio.Cancelled:
                raise
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        def spawn(done: threading.Event, box: dict[str, Any]) -> None:
            assert self._nursery is not None
            self._nursery.start_soon(bounded, done, box)

        result: T = self._in_loop(spawn)
        return result

    def _in_loop(self, schedule: Callable[[threading.Event, dict[str, Any]], None]) -> Any:
        """Run ``schedule`` in the simulator's thread and wait until it fills ``box``.

        Unlike ``trio.from_thread``, this works from any thread, trio's included:
        a trio test may use this fixture too.
        """
        import trio

        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("QmpServer: called from the simulator's own thread; use .sim")
        done = threading.Event()
        box: dict[str, Any] = {}
        with self._lock:
            self._pending.add(done)
        try:
            assert self._token is not None
            self._token.run_sync_soon(schedule, done, box)
            done.wait()
        except trio.RunFinishedError:
            pass
        finally:
            with self._lock:
                self._pending.discard(done)
        if "error" in box:
            raise box["error"]
        if "value" not in box:  # the simulator stopped before answering
            raise self._dead() from self._crash
        return box["value"]

    def _live(self) -> _Core:
        if self._core is None or self._stopped or not self._thread.is_alive():
            raise self._dead()
        return self._core

    def _dead(self) -> SimulatorError:
        if self._crash is not None:
            return SimulatorError(f"the simulator stopped: {self._crash!r}")
        return SimulatorError("the simulator is not running")

    @staticmethod
    def _sent_now(core: _Core) -> str:
        sent = core.sim.transcript.commands_sent()
        names = ", ".join(c.command for c in sent) if sent else "none"
        return f" (commands sent: {names})"

    # public API

    @property
    def path(self) -> str:
        """The Unix socket the simulator listens on (mode 0600, removed at teardown)."""
        return self._live().path

    @property
    def address(self) -> str | tuple[str, int]:
        """What to connect to: ``(host, port)`` with ``tcp=True``, else the socket path."""
        return self._live().address

    @property
    def sim(self) -> Simulator:
        """The :class:`~qmpsim.runtime.server.Simulator`; touch it only through :meth:`call`."""
        return self._live().sim

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run in the simulator's thread; its result, or what it raised.

        As :meth:`qmpsim.runtime.background.BackgroundSimulator.call`:
        ``qmp_server.call(qmp_server.sim.emit, "STOP")``.
        """
        return self._call(lambda core: fn(*args))

    @property
    def exited(self) -> bool:
        """Whether the VM exited (``quit``, or a guest shutdown without ``-no-shutdown``)."""
        return self._call(lambda core: core.sim.exited)

    @property
    def status(self) -> str:
        """The VM's run state, as ``query-status`` would report it (``running``, ``paused``…)."""

        def status(core: _Core) -> str:
            core.simulated("status")
            return core.sim.machine.status

        return self._call(status)

    @property
    def transcript(self) -> Transcript:
        """A snapshot of everything the clients sent and received so far."""
        return self._call(lambda core: core.snapshot())

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send an event (validated against the profile) to negotiated clients; its JSON."""

        def emit(core: _Core) -> dict[str, Any]:
            core.simulated("emit()")
            return core.sim.emit(name, data).to_json()

        return self._call(emit)

    def cause(self, cause: Cause | str, **params: Any) -> list[dict[str, Any]]:
        """Make something happen to the VM; the events it produced, as JSON.

        ``cause`` is a :mod:`qmpsim.vm.machine` cause (``DiskError("vda")``) or a cause
        named as in scenarios, with its keys: ``cause("disk-error", device="vda")``.
        """
        return self._call(lambda core: core.cause(cause, params))

    def run_scenario(
        self, scenario: Scenario | str | os.PathLike[str], *, seed: int | None = None
    ) -> None:
        """Start playing a scenario on a fresh VM: a shipped scenario's name, a file, or a
        :class:`~qmpsim.scenario.Scenario` (one drawn by ``qmpsim.testing.strategies.scenarios()``).

        The VM becomes the scenario's; the timeline plays in the background
        (:meth:`wait_scenario` waits for its end).
        """
        scenario = _scenario_arg(scenario, self._config.base)

        async def start(core: _Core) -> None:
            assert self._nursery is not None
            await core.start(self._nursery, scenario, seed=seed)

        self._wait(start, None, "the scenario did not start")

    def wait_scenario(self, timeout: float | None = None) -> None:
        """Wait until the timeline of the last scenario started has ended."""

        async def done(core: _Core) -> None:
            if not core.runners:
                raise RuntimeError("no scenario is playing")
            await core.runners[-1].done.wait()

        self._wait(done, timeout, "the scenario's timeline did not end")

    def wait_for_client(self, timeout: float | None = None) -> int:
        """Wait until a client has negotiated capabilities; its id."""
        return self._wait(lambda core: core.sim.wait_negotiated(), timeout, "no client negotiated")

    def wait_for_command(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the client sent ``name`` and got its answer; the message as sent.

        Each command is returned once; ``arguments`` matches a subset of its arguments.
        """

        return self._wait(
            lambda core: core.wait_for_command(name, arguments), timeout, f"no {name} was sent"
        )

    def wait_exited(self, timeout: float | None = None) -> None:
        """Wait until the VM exited (``quit``, or a guest shutdown)."""
        self._wait(lambda core: core.sim.wait_exited(), timeout, "the VM did not exit")

    def override_reply(
        self, command: str, reply: Any | CommandError | Outcome, *, once: bool = True
    ) -> None:
        """Answer ``command`` with ``reply`` instead of the simulated one; strict mode allows it."""

        def install(core: _Core) -> None:
            core.allow(command)
            core.sim.override_reply(command, reply, once=once)

        self._call(install)

    def expect(
        self, command: str, arguments: Mapping[str, Any] | None = None, count: int | None = None
    ) -> None:
        """Declare a command the client must send (strict mode checks it when the test ends).

        ``arguments`` matches a subset of what is sent; ``count`` an exact number.
        """
        self._call(lambda core: core.expect(command, arguments, count, "expect()"))

    def allow(self, *commands: str) -> None:
        """Let strict mode accept these commands without demanding them."""

        def allow(core: _Core) -> None:
            for command in commands:
                core.allow(command)

        self._call(allow)

    def disconnect(self) -> None:
        """Drop every connected client."""
        self._call(lambda core: core.sim.disconnect())

    def reset(self) -> None:
        """Back to a fresh VM and an empty transcript, as between Hypothesis examples.

        Overrides and callbacks are dropped; connected clients stay connected and a
        scenario's timeline is not restarted.
        """
        self._call(lambda core: core.reset())

    def assert_command_sent(
        self, name: str, arguments: Mapping[str, Any] | None = None, count: int | None = None
    ) -> list[SentCommand]:
        """Fail with a readable message unless ``name`` was sent (see :class:`Transcript`)."""
        return self.transcript.assert_command_sent(name, arguments, count)

    def assert_event_sent(self, name: str, count: int | None = None) -> list[dict[str, Any]]:
        """Fail with a readable message unless event ``name`` was written (``count`` times)."""
        return self.transcript.assert_event_sent(name, count)

    def assert_command_sequence(
        self, *commands: str | tuple[str, Mapping[str, Any]]
    ) -> list[SentCommand]:
        """Fail unless ``commands`` (names, or ``(name, arguments)``) were sent in this order."""
        __tracebackhide__ = True
        return self.transcript.assert_command_sequence(*commands)


_SERVERS = pytest.StashKey[list["QmpServer"]]()
"""The threaded servers a test uses, checked after it and shown when it fails."""


def _started(item: pytest.Item, config: _Config, name: str) -> QmpServer:
    server = QmpServer(config, timeout=config.timeout, name=name)
    server._start()
    item.stash.setdefault(_SERVERS, []).append(server)
    return server


@pytest.fixture
def qmp_server(request: pytest.FixtureRequest) -> Iterator[QmpServer]:
    """A simulated QEMU monitor on a fresh socket, served from a background thread.

    Configure it with ``@pytest.mark.qmpsim(...)``.
    """
    server = _started(request.node, _config(request.node), "qmp_server")
    try:
        yield server
    finally:
        server._teardown()


@pytest.fixture
def make_qmp_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., QmpServer]]:
    """A factory of simulated monitors, for several VMs in one test.

    ``make_qmp_server(scenario=None, *, name=None, **options)`` takes the
    marker's arguments (``vm=``, ``profile=``, ``strict=``, ``replay=``…; the
    test's marker does not apply) and returns a started :class:`QmpServer`,
    each on its own socket; all are stopped when the test ends.
    """
    servers: list[QmpServer] = []

    def make(scenario: Any = None, *, name: str | None = None, **options: Any) -> QmpServer:
        kwargs = dict(options)
        if scenario is not None:
            kwargs["scenario"] = scenario
        label = name or f"make_qmp_server #{len(servers) + 1}"
        server = _started(request.node, _config_from(kwargs, request.node), label)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        failures: list[BaseException] = []
        for server in reversed(servers):
            try:
                server._teardown()
            except BaseException as exc:
                failures.append(exc)
        _raise_errors(failures)


@pytest.fixture(scope="session")
def qmp_session_server() -> Iterator[QmpServer]:
    """One idle simulated monitor for the whole session, reset after each test that uses it.

    Faster than ``qmp_server`` for large suites; the marker does not apply to it
    (use ``run_scenario()``, ``expect()``, ``allow()`` per test).
    """
    server = QmpServer(_config(None), name="qmp_session_server")
    server._start()
    try:
        yield server
    finally:
        server._teardown()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "qmp_session_server" in getattr(item, "fixturenames", ()):
        # Registered before the test runs: checked after it, shown when it fails.
        item.stash[_SESSION] = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Runs once the test body passed, before fixtures are torn down: a strict-mode
    # report or a server-side error then fails the test itself.
    result = yield
    for server in _servers(item):
        server._after_test()
    errors, report = item.stash.get(_FAILURE, ([], None))
    _raise_errors(errors)
    if report is not None:
        pytest.fail(report, pytrace=False)
    save = item.stash.get(_SAVE, None)
    if save is not None:
        save()
    return result


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if item.stash.get(_SESSION, False):
        server = getattr(item, "funcargs", {}).get("qmp_session_server")
        if isinstance(server, QmpServer) and not server._stopped:
            server._call(lambda core: core.fresh())


_SESSION = pytest.StashKey[bool]()


def _servers(item: pytest.Item) -> list[QmpServer]:
    registered = item.stash.get(_SERVERS, None)
    servers = [] if registered is None else list(registered)
    session = getattr(item, "funcargs", {}).get("qmp_session_server")
    if isinstance(session, QmpServer) and item.stash.get(_SESSION, False):
        servers.append(session)
    return servers


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # As pytest-httpserver shows its log: a failing test shows what crossed the wire.
    report = yield
    if report.when == "call" and report.failed:
        for name, text in _transcripts(item):
            report.sections.append((f"qmpsim transcript: {name}", text))
    return report


_TRANSCRIPT_LINES = 200
"""Lines of a failing test's transcript shown in its report (the newest)."""


def _transcripts(item: pytest.Item) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for server in _servers(item):
        try:
            transcript = server.transcript
        except SimulatorError:
            continue
        out.append((server.name, _shown(transcript)))
    stashed = item.stash.get(_TRIO_TRANSCRIPT, None)
    if stashed is not None:
        out.append(("trio_qmp_server", _shown(stashed)))
    return out


def _shown(transcript: Transcript) -> str:
    lines = transcript.lines()
    if not lines:
        return "(nothing was sent or received)"
    if len(lines) > _TRANSCRIPT_LINES:
        dropped = len(lines) - _TRANSCRIPT_LINES
        lines = [f"({dropped} earlier lines not shown)", *lines[-_TRANSCRIPT_LINES:]]
    return "\n".join(lines)


# --- the trio fixture -----------------------------------------------------------------


class TrioQmpServer:
    """The simulator running in the test's own trio run (pytest-trio).

    ``sim`` is the :class:`~qmpsim.runtime.server.Simulator` itself; every method is called
    from trio code directly, and time is trio's (virtual under ``autojump_clock``).
    """

    def __init__(self, core: _Core, nursery: trio.Nursery) -> None:
        self._core = core
        self._nursery = nursery
        self.sim: Simulator = core.sim
        self.path: str = core.path
        """The Unix socket the simulator listens on."""
        self.address: str | tuple[str, int] = core.address
        """``(host, port)`` with ``tcp=True``, else the socket path."""

    @property
    def status(self) -> str:
        """The VM's run state, as ``query-status`` would report it."""
        self._core.simulated("status")
        return self.sim.machine.status

    @property
    def transcript(self) -> Transcript:
        """Everything the clients sent and received (the live record)."""
        return self.sim.transcript

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send an event (validated against the profile) to negotiated clients; its JSON."""
        self._core.simulated("emit()")
        return self.sim.emit(name, data).to_json()

    def cause(self, cause: Cause | str, **params: Any) -> list[dict[str, Any]]:
        """Make something happen to the VM (see :meth:`QmpServer.cause`); the events."""
        return self._core.cause(cause, params)

    def open_stream(self) -> trio.abc.Stream:
        """A client connection over an in-memory stream: no socket, fully deterministic."""
        import trio.testing

        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.sim.handle_stream, server)
        return client

    async def run_scenario(
        self, scenario: Scenario | str | os.PathLike[str], *, seed: int | None = None
    ) -> None:
        """Start playing a scenario (a name, a file or a ``Scenario``) on a fresh VM,
        in the test's nursery."""
        await self._core.start(
            self._nursery, _scenario_arg(scenario, self._core.config.base), seed=seed
        )

    @property
    def exited(self) -> bool:
        """Whether the VM exited (``quit``, or a guest shutdown without ``-no-shutdown``)."""
        return self.sim.exited

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: the same as :meth:`QmpServer.call`, here in the test's own thread."""
        return fn(*args)

    async def wait_scenario(self) -> None:
        """Wait until the timeline of the last scenario started has ended."""
        if not self._core.runners:
            raise RuntimeError("no scenario is playing")
        await self._core.runners[-1].done.wait()

    async def wait_for_client(self) -> int:
        """Wait until a client has negotiated capabilities; its id."""
        return await self.sim.wait_negotiated()

    async def wait_for_command(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Wait until the client sent ``name`` and got its answer; the message as sent."""
        return await self._core.wait_for_command(name, arguments)

    def override_reply(
        self, command: str, reply: Any | CommandError | Outcome, *, once: bool = True
    ) -> None:
        """Answer ``command`` with ``reply`` instead of the simulated one."""
        self._core.allow(command)
        self.sim.override_reply(command, reply, once=once)

    def expect(
        self, command: str, arguments: Mapping[str, Any] | None = None, count: int | None = None
    ) -> None:
        """Declare a command the client must send (checked in strict mode)."""
        self._core.expect(command, arguments, count, "expect()")

    def allow(self, *commands: str) -> None:
        """Let strict mode accept these commands without demanding them."""
        for command in commands:
            self._core.allow(command)

    def reset(self) -> None:
        """Back to a fresh VM and an empty transcript (see :meth:`QmpServer.reset`)."""
        self._core.reset()

    def assert_command_sent(
        self, name: str, arguments: Mapping[str, Any] | None = None, count: int | None = None
    ) -> list[SentCommand]:
        """Fail with a readable message unless ``name`` was sent."""
        return self.transcript.assert_command_sent(name, arguments, count)

    def assert_event_sent(self, name: str, count: int | None = None) -> list[dict[str, Any]]:
        """Fail with a readable message unless event ``name`` was written."""
        return self.transcript.assert_event_sent(name, count)

    def assert_command_sequence(
        self, *commands: str | tuple[str, Mapping[str, Any]]
    ) -> list[SentCommand]:
        """Fail unless ``commands`` (names, or ``(name, arguments)``) were sent in this order."""
        __tracebackhide__ = True
        return self.transcript.assert_command_sequence(*commands)


@pytest.fixture
async def trio_qmp_server(
    request: pytest.FixtureRequest, nursery: trio.Nursery
) -> AsyncIterator[TrioQmpServer]:
    """The simulator in the test's trio run (needs pytest-trio and a trio test)."""
    config = _config(request.node)
    core = _Core(config)
    errors = _ErrorLog(threading.get_ident())
    logging.getLogger("qmpsim").addHandler(errors)
    try:
        async with core.sim:
            await core.listen(nursery)
            if config.scripted:
                await core.start(nursery, config.scenario, seed=config.seed)
            try:
                yield TrioQmpServer(core, nursery)
            finally:
                core.stop()
            # Raised here, the report would come wrapped in pytest-trio's exception
            # groups: pytest_runtest_call raises it once the test has passed (and
            # only then writes a recorded cassette).
            request.node.stash[_FAILURE] = (errors.errors + core.sim.errors, core.report())
            request.node.stash[_SAVE] = core.save
            request.node.stash[_TRIO_TRANSCRIPT] = core.snapshot()
    finally:
        logging.getLogger("qmpsim").removeHandler(errors)
