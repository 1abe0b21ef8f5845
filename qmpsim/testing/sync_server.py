"""``qmp_server``'s face: :class:`QmpServer`, the fixture core served from a thread of its
own, for sync, asyncio and trio clients alike."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from qmpsim.errors import QmpSimError
from qmpsim.testing.fixture_config import DEFAULT_TIMEOUT, _Config, _scenario_arg
from qmpsim.testing.fixture_core import _capture, _Core, _ErrorLog, _raise_errors

if TYPE_CHECKING:
    import trio

    from qmpsim.qmp.transcript import SentCommand, Transcript
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario
    from qmpsim.vm.machine import Cause, CommandError, Outcome

T = TypeVar("T")

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
