"""A fleet's worker processes: starting, talking to and stopping them, and a worker's side.

A worker is a child process (``python -c``) serving a contiguous range of the VMs,
joined to the first process by a socketpair carrying JSON lines: its setup first,
then control requests and their replies (:class:`Worker`, :func:`worker_main`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import pickle
import signal
import socket as stdsocket
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import trio

from qmpsim.errors import QmpSimError
from qmpsim.runtime.control import (
    ControlError,
    answer,
)
from qmpsim.runtime.fleet.config import FleetConfig, fleet_identities
from qmpsim.runtime.fleet.limits import (
    fewer_collections,
)
from qmpsim.runtime.fleet.local import Fleet
from qmpsim.runtime.listen import ListenError, clear_stale_socket

__all__ = [
    "Channel",
    "Worker",
    "WorkerFailed",
    "start_worker",
    "stop_workers",
    "watch",
    "worker_main",
]

_STOP_GRACE = 5.0  # seconds a worker has to stop before it is killed


class WorkerFailed(QmpSimError):
    """A worker process could not start, or died."""


class Channel:
    """JSON lines over a socketpair, between the fleet's first process and a worker."""

    def __init__(self, sock: stdsocket.socket) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._buffer = bytearray()

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        """The next message, ``None`` at the end of the channel."""
        while b"\n" not in self._buffer:
            try:
                data = await self.stream.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                return None
            self._buffer += data
        end = self._buffer.index(b"\n")
        message: dict[str, Any] = json.loads(self._buffer[:end])
        del self._buffer[: end + 1]
        return message


@dataclass(eq=False)
class Worker:
    """A child process serving ``part`` of the fleet, and the channel to it."""

    number: int
    part: range
    names: str
    process: trio.Process
    channel: Channel
    pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = field(default_factory=dict)
    ids: int = 0
    stopping: bool = False

    async def call(self, command: str, arguments: dict[str, Any]) -> Any:
        """Run a control command in the worker: its result, or its error as ControlError."""
        self.ids += 1
        ident = self.ids
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self.pending[ident] = send
        try:
            await self.channel.send({"execute": command, "arguments": arguments, "id": ident})
            reply = await receive.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel):
            raise ControlError(f"worker {self.number} ({self.names}) is gone") from None
        finally:
            self.pending.pop(ident, None)
        if "error" in reply:
            raise ControlError(reply["error"]["desc"], reply["error"]["class"])
        return reply["return"]

    async def dispatch(self) -> None:
        """Hand each reply to its caller until the channel ends."""
        while (message := await self.channel.receive()) is not None:
            waiter = self.pending.pop(message.get("id", -1), None)
            if waiter is not None:
                waiter.send_nowait(message)
        for waiter in self.pending.values():
            waiter.close()

    def exit_text(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"


def _names(config: FleetConfig, part: range) -> str:
    width = len(str(config.count - 1))
    return f"{config.prefix}{part[0]:0{width}d}..{config.prefix}{part[-1]:0{width}d}"


def _worker_env() -> dict[str, str]:
    # The child imports this very qmpsim, wherever this process imported it from
    # (this file is qmpsim/runtime/fleet/workers.py under that root).
    package_root = os.path.abspath(__file__)
    for _ in range(4):
        package_root = os.path.dirname(package_root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


async def start_worker(config: FleetConfig, number: int, part: range, verbose: bool) -> Worker:
    ours, theirs = stdsocket.socketpair()
    try:
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-c",
                "from qmpsim.runtime.fleet import worker_main; worker_main()",
                str(theirs.fileno()),
            ],
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
            env=_worker_env(),
            # A process group of its own: Ctrl-C reaches the first process alone,
            # which then stops the workers and waits for them.
            process_group=0,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    worker = Worker(number, part, _names(config, part), process, Channel(ours))
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    settings["scenario"] = base64.b64encode(pickle.dumps(config.scenario)).decode()
    setup = {"config": settings, "part": [part.start, part.stop], "number": number}
    await worker.channel.send({**setup, "verbose": verbose})
    return worker


async def watch(worker: Worker) -> None:
    await worker.dispatch()
    await worker.process.wait()
    if not worker.stopping:
        raise WorkerFailed(f"worker {worker.number} ({worker.names}) {worker.exit_text()}")


async def stop_workers(workers: Sequence[Worker], config: FleetConfig) -> None:
    for worker in workers:
        worker.stopping = True
        await worker.channel.stream.aclose()  # the end of its channel: it stops
        if worker.process.returncode is None:
            with suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        with trio.move_on_after(_STOP_GRACE):
            await worker.process.wait()
        if worker.process.returncode is None:
            worker.process.kill()
            await worker.process.wait()
        if worker.process.returncode != 0:
            # It may not have removed its sockets: remove what nobody listens on.
            for ident in fleet_identities(
                config.count, prefix=config.prefix, seed=config.seed, part=worker.part
            ):
                with suppress(ListenError):
                    clear_stale_socket(os.path.join(config.directory, f"{ident.name}.sock"))


def worker_main() -> None:
    """A worker process of :func:`run_fleet` (``python -c ... FD``, FD its channel)."""
    channel = stdsocket.socket(fileno=int(sys.argv[1]))
    with fewer_collections():
        status = trio.run(_worker, channel)
    sys.exit(status)


async def _worker(sock: stdsocket.socket) -> int:
    parent = Channel(sock)
    setup = await parent.receive()
    if setup is None:
        return 0
    settings = setup["config"]
    settings["scenario"] = pickle.loads(base64.b64decode(settings["scenario"]))
    config = FleetConfig(**settings)
    _worker_logging(setup["number"], setup["verbose"])
    fleet = Fleet.from_config(config, range(*setup["part"]))

    async def execute(command: str, arguments: dict[str, Any]) -> Any:
        if command == "qmpsim-fleet":
            return [vm.summary() for vm in fleet.vms]
        name = arguments.pop("vm")
        try:
            vm = fleet.vm(name)
        except KeyError as exc:
            raise ControlError(str(exc.args[0])) from None
        return await fleet.vm_command(vm, command, arguments)

    async def reply(request: dict[str, Any]) -> None:
        answered, _ = await answer(request, True, execute)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await parent.send(answered)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(fleet.run)
            except QmpSimError as exc:
                await parent.send({"error": str(exc)})
                return 1
            await parent.send({"ready": True})
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
            while (request := await parent.receive()) is not None:
                nursery.start_soon(reply, request)
            nursery.cancel_scope.cancel()  # the first process stops the fleet, or is gone
    return 0


async def _stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def _worker_logging(number: int, verbose: bool) -> None:
    from qmpsim.logs import stderr_handler

    root = logging.getLogger("qmpsim")
    root.handlers[:] = [stderr_handler(sys.stderr, f"qmpsim (worker {number})")]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False
