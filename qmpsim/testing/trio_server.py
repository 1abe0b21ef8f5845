"""``trio_qmp_server``'s face: :class:`TrioQmpServer`, the fixture core in the test's own
trio run (pytest-trio)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from qmpsim.testing.fixture_config import _scenario_arg
from qmpsim.testing.fixture_core import _Core

if TYPE_CHECKING:
    import trio

    from qmpsim.qmp.transcript import SentCommand, Transcript
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario
    from qmpsim.vm.machine import Cause, CommandError, Outcome

T = TypeVar("T")

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
