"""Running a client's request: the responder, armed delays and overrides, callbacks.

:class:`Commands` is the part of :class:`~qmpsim.runtime.server.Simulator` that
answers a request a connection dispatches: a :class:`Responder` first (how a
recorded session is replayed), else an override a test armed, else the machine;
then it queues the reply, remembers the request for
:meth:`~Commands.wait_for_command` and runs the ``on_command`` callbacks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from qmpsim.qmp.protocol import Request
from qmpsim.qmp.transcript import arguments_match
from qmpsim.runtime.connection import Connection
from qmpsim.runtime.delivery import Delivery
from qmpsim.runtime.faults import Faults
from qmpsim.vm.fds import Descriptors, receiving
from qmpsim.vm.machine import CommandError, Outcome

__all__ = ["CommandCallback", "Commands", "Responder"]

log = logging.getLogger("qmpsim.server")

_REMEMBERED_COMMANDS = 1024

CommandCallback = Callable[[Request], Awaitable[None] | None]
"""Called with a request after the machine ran it and its reply was queued."""


class Responder(Protocol):
    """Answers a client ahead of the machine: how a recorded session is replayed."""

    def greeting(self, client: int) -> Mapping[str, Any] | None:
        """The greeting for a client that just connected (``None``: the profile's)."""

    def respond(self, client: int, request: Request) -> Outcome | None:
        """The outcome of ``request`` (``None``: let the machine answer it)."""

    async def run(self) -> None:
        """Runs while the simulator does (for what the responder does on its own time)."""


class Commands(Delivery):
    """Requests run for clients, remembered and called back on (a base of the
    simulator, not used alone)."""

    responder: Responder | None
    errors: list[BaseException]
    _commands: list[Request]  # the newest _REMEMBERED_COMMANDS
    _faults: Faults | None
    _callbacks: dict[str, list[CommandCallback]] | None

    def on_command(self, command: str, callback: CommandCallback) -> Callable[[], None]:
        """Run ``callback(request)`` each time ``command`` ran and its reply was queued.

        The callback may be async; its exceptions are logged and kept in
        :attr:`errors`.  Returns a function that removes the callback.
        """
        if self._callbacks is None:
            self._callbacks = {}
        self._callbacks.setdefault(command, []).append(callback)

        def remove() -> None:
            callbacks = (self._callbacks or {}).get(command, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    async def wait_for_command(
        self, command: str, arguments: Mapping[str, Any] | None = None
    ) -> Request:
        """The first unclaimed request for ``command`` whose arguments include ``arguments``.

        Requests are remembered from the start (the last 1024), so a command sent
        before the call is found; each request is returned once.  Returns after
        the command ran and its reply was queued.
        """
        while True:
            for request in self._commands:
                if request.command == command and arguments_match(
                    request.arguments, arguments or {}
                ):
                    self._commands.remove(request)
                    return request
            await self._change().wait()

    async def _execute(self, client: Connection, request: Request) -> None:
        """Run ``request`` for ``client`` and queue its reply (and the events it made)."""
        faults = self._faults
        delay = None if faults is None else faults.take_delay(request.command)
        if delay is not None and delay.seconds > 0:
            await trio.sleep(delay.seconds)
        faults = self._faults  # reset() may have dropped them while it waited
        override = None if faults is None else faults.take_override(request.command)
        try:
            answer = None
            if override is None and self.responder is not None:
                answer = self.responder.respond(client.id, request)
            if answer is not None:
                outcome = answer
            elif override is None:
                with receiving(self.machine.part(Descriptors), client.descriptors.take):
                    outcome = self.machine.execute(request.command, request.arguments)
            elif isinstance(override.reply, Outcome):
                outcome = override.reply
            else:
                outcome = Outcome(override.reply)
        except Exception as exc:
            log.exception("client %d: %s failed in the machine", client.id, request.command)
            outcome = Outcome(CommandError("GenericError", f"qmpsim internal error: {exc}"))
        self.deliver(outcome.events)
        reply = outcome.reply
        if isinstance(reply, CommandError):
            data = client.conn.send_error(request, reply.error_class, reply.desc)
        else:
            data = client.conn.send_return(request, reply)
        client.enqueue(data)
        if self.machine.exited:
            self._vm_exited()
        elif outcome.close:
            client.close_after_output()
        self._commands.append(request)
        if len(self._commands) > _REMEMBERED_COMMANDS:
            del self._commands[0]
        self._state_changed()
        await self._called_back(request)

    async def _called_back(self, request: Request) -> None:
        """Run the callbacks ``on_command`` added for ``request``'s command."""
        for callback in list((self._callbacks or {}).get(request.command, ())):
            try:
                result = callback(request)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.exception("on_command callback for %s failed", request.command)
                self.errors.append(exc)
