"""The control channel: a second QMP-framed socket that drives a running simulator.

It is a separate listener (``qmpsim serve --control PATH``), never the VM's
monitor.  A client reads the greeting, sends ``qmp_capabilities``, then
``qmpsim-*`` commands; replies carry the request's ``id`` like QMP's.  Plain
``socat`` or a few lines of any language are enough to use it.

:func:`serve_control_stream` and :func:`answer` are the framing and negotiation
every control socket shares (the fleet's too); what differs is the ``execute``
callable that runs the commands.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import trio

from qmpsim.errors import QmpSimError
from qmpsim.qmp.wire import JsonStreamer, ParseError, encode
from qmpsim.runtime.listen import accept_loop, bind_unix
from qmpsim.runtime.server import Simulator
from qmpsim.scenario.loader import load_steps
from qmpsim.scenario.model import EmitStep, Scenario

__all__ = [
    "COMMANDS",
    "ControlChannel",
    "ControlError",
    "Execute",
    "answer",
    "serve_control_stream",
    "serve_control_unix",
]

log = logging.getLogger("qmpsim.control")

COMMANDS: Mapping[str, str] = {
    "qmp_capabilities": "leave capabilities negotiation",
    "qmpsim-trigger": "run one of the scenario's actions: {action}",
    "qmpsim-run": "run steps now, written as in a scenario (no include): {steps}",
    "qmpsim-emit": "emit one event: {event, data?, fake?}",
    "qmpsim-transcript": "every message the monitor exchanged so far",
    "qmpsim-reset": "a fresh VM, no overrides, an empty transcript; the timeline restarts",
    "qmpsim-status": "the VM's run state, the connected clients, the timeline's progress",
    "query-commands": "the commands of this channel",
}


class ControlError(QmpSimError):
    """A control command refused: answered as a QMP error of ``error_class``."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.error_class = error_class


Execute: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""Runs one command after negotiation, given its name and arguments: its result,
or :class:`ControlError` (any other :class:`~qmpsim.errors.QmpSimError` is a
``GenericError``)."""


async def answer(request: Any, negotiated: bool, execute: Execute) -> tuple[dict[str, Any], bool]:
    """The reply to one parsed request (or :class:`~qmpsim.qmp.wire.ParseError`), and
    whether capabilities negotiation is complete after it.

    Framing, negotiation and the request's shape are checked here, with QMP's
    error classes and texts; ``execute`` runs the rest.  The request's ``id`` is
    echoed.  An unexpected exception in ``execute`` is logged and answered, never raised.
    """
    if isinstance(request, ParseError):
        return _error("GenericError", request.message), negotiated
    if not isinstance(request, dict):
        return _error("GenericError", "QMP input must be a JSON object"), negotiated
    ident = request.get("id")
    command = request.get("execute")
    arguments = request.get("arguments", {})
    try:
        if not isinstance(command, str):
            raise ControlError("QMP input lacks member 'execute'")
        if not isinstance(arguments, dict):
            raise ControlError("QMP input member 'arguments' must be an object")
        if command == "qmp_capabilities":
            if negotiated:
                raise ControlError(
                    "Capabilities negotiation is already complete, command ignored",
                    "CommandNotFound",
                )
            result: Any = {}
            negotiated = True
        elif not negotiated:
            raise ControlError(
                "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
            )
        else:
            result = await execute(command, arguments)
    except ControlError as exc:
        reply = _error(exc.error_class, str(exc))
    except QmpSimError as exc:
        reply = _error("GenericError", str(exc))
    except Exception as exc:  # a bug must not take the simulator down with it
        log.exception("control command %s failed", command)
        reply = _error("GenericError", f"internal error: {exc}")
    else:
        reply = {"return": result}
    if ident is not None:
        reply["id"] = ident
    return reply, negotiated


async def serve_control_stream(
    stream: trio.abc.Stream, version: Mapping[str, Any], execute: Execute
) -> None:
    """One control connection, until the peer closes it: a greeting carrying
    ``version`` and no capabilities, then one :func:`answer` per request."""
    async with stream:
        streamer = JsonStreamer()
        negotiated = False
        try:
            await stream.send_all(encode({"QMP": {"version": version, "capabilities": []}}))
            while True:
                data = await stream.receive_some()
                values = streamer.feed(bytes(data)) if data else streamer.flush()
                for value in values:
                    reply, negotiated = await answer(value, negotiated, execute)
                    await stream.send_all(encode(reply))
                if not data:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def serve_control_unix(
    path: str,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control connections on the Unix socket ``path`` (mode 0600) until
    cancelled, each with ``handle(stream)``; the socket file is removed at the end.

    Refuses (:class:`~qmpsim.runtime.listen.ListenError`) a path that holds anything but a
    stale socket.
    """
    bound = bind_unix(path, backlog=8)
    try:
        task_status.started(path)
        await accept_loop(
            bound.listener(), lambda stream: functools.partial(handle, stream), close=bound.close
        )
    finally:
        bound.close()


@dataclass
class ControlChannel:
    """Serves the control protocol for one simulator and the scenario it plays.

    ``runner()`` returns the current :class:`~qmpsim.runtime.engine.ScenarioRunner`;
    ``reset()`` restarts the VM and the timeline.
    """

    sim: Simulator
    scenario: Scenario
    runner: Callable[[], Any]
    reset: Callable[[], Awaitable[None]]

    async def serve_unix(
        self, path: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on the Unix socket ``path`` (mode 0600) until cancelled."""
        await serve_control_unix(path, self.handle_stream, task_status=task_status)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """One control connection, until the peer closes it."""
        version = self.sim.machine.profile.greeting()["QMP"]["version"]
        await serve_control_stream(stream, version, self.execute)

    async def execute(self, command: str, args: dict[str, Any]) -> Any:
        """Run one ``qmpsim-*`` command (or ``query-commands``) after negotiation."""
        runner = self.runner()
        if command == "query-commands":
            return [{"name": name} for name in COMMANDS]
        if command == "qmpsim-trigger":
            action = _arg(args, "action", str)
            if action not in self.scenario.actions:
                known = ", ".join(sorted(self.scenario.actions)) or "none"
                raise ControlError(f"no action named {action!r} (actions: {known})")
            runner.trigger(action)
            return {}
        if command == "qmpsim-run":
            steps = _arg(args, "steps", list)
            runner.start_steps(load_steps(steps, self.scenario, includes=False))
            return {}
        if command == "qmpsim-emit":
            step: dict[str, Any] = {"emit": _arg(args, "event", str)}
            for key in ("data", "fake"):
                if key in args:
                    step[key] = args[key]
            (loaded,) = load_steps([step], self.scenario, includes=False)
            assert isinstance(loaded, EmitStep)
            runner.start_steps([loaded])
            return {}
        if command == "qmpsim-transcript":
            return [entry.to_json() for entry in self.sim.transcript]
        if command == "qmpsim-reset":
            await self.reset()
            return {}
        if command == "qmpsim-status":
            return {
                "status": self.sim.machine.status,
                "clients": self.sim.clients,
                "timeline": "done" if runner.done.is_set() else "running",
                "notes": list(runner.notes),
            }
        raise ControlError(f"The command {command} has not been found", "CommandNotFound")


def _arg(args: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in args:
        raise ControlError(f"Parameter '{name}' is missing")
    if not isinstance(args[name], kind):
        names: dict[type, str] = {str: "string", list: "array", dict: "object"}
        expected = names.get(kind, kind.__name__)
        raise ControlError(f"Parameter '{name}' expects {expected}")
    return args[name]


def _error(error_class: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": error_class, "desc": desc}}
