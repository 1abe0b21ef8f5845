"""pytest plugin for qmpsim (registered through the ``pytest11`` entry point).

Two fixtures and a marker:

- ``qmp_server``: a simulator serving a fresh Unix socket (or loopback TCP) from a
  background thread, for sync, asyncio and trio clients alike;
- ``trio_qmp_server``: the same simulator running in the test's own trio run
  (pytest-trio), so ``autojump_clock`` makes scenario delays free;
- ``@pytest.mark.qmpsim(scenario=..., profile=..., vm=..., strict=..., ...)``
  configures either fixture.

Cheap to import: pytest loads it in every run of the environment, so trio and the
simulator are imported inside the fixtures.  This module registers the hooks, the
marker and the fixtures; the fixture core (:mod:`~qmpsim.testing.fixture_core`), its
configuration (:mod:`~qmpsim.testing.fixture_config`) and its two faces
(:mod:`~qmpsim.testing.sync_server`, :mod:`~qmpsim.testing.trio_server`) live beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from qmpsim.testing.fixture_config import (
    _MARKER_HELP,
    DEFAULT_TIMEOUT,
    _Config,
    _config,
    _config_from,
)
from qmpsim.testing.fixture_core import (
    _FAILURE,
    _SAVE,
    _TRIO_TRANSCRIPT,
    _Core,
    _ErrorLog,
    _raise_errors,
)
from qmpsim.testing.sync_server import QmpServer, SimulatorError
from qmpsim.testing.trio_server import TrioQmpServer

if TYPE_CHECKING:
    import trio

    from qmpsim.qmp.transcript import Transcript

__all__ = ["DEFAULT_TIMEOUT", "QmpServer", "SimulatorError", "TrioQmpServer"]

log = logging.getLogger("qmpsim.pytest")


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
