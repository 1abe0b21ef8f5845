"""A whole fleet, run over worker processes (:func:`run_fleet`) or in this process
(:func:`serve_fleet`), with one control channel for all its VMs."""

from __future__ import annotations

from collections.abc import Callable

import trio

from qmpsim.errors import QmpSimError
from qmpsim.runtime.fleet.config import FleetConfig
from qmpsim.runtime.fleet.limits import (
    check_fd_limit,
    split_fleet,
)
from qmpsim.runtime.fleet.local import Fleet, FleetControl
from qmpsim.runtime.fleet.workers import Worker, WorkerFailed, start_worker, stop_workers, watch
from qmpsim.runtime.session import IDLE

__all__ = ["run_fleet", "serve_fleet"]


def _announce_listening(
    config: FleetConfig, workers: int, first: str, announce: Callable[[str], None]
) -> None:
    what = f"scenario {config.scenario.name!r}" if config.scenario is not IDLE else "idle VMs"
    over = f" over {workers} workers" if workers > 1 else ""
    last = f"{config.prefix}{config.count - 1}.sock"
    announce(f"fleet of {config.count} VMs ({what}){over} listening on {first} … {last}")


def _failure(group: BaseExceptionGroup[BaseException]) -> QmpSimError | None:
    """The first :class:`QmpSimError` among the leaves of ``group``, if any."""
    for exc in group.exceptions:
        if isinstance(exc, QmpSimError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _failure(exc)
            if found is not None:
                return found
    return None


async def run_fleet(
    config: FleetConfig,
    *,
    workers: int = 1,
    control: str | None = None,
    announce: Callable[[str], None] = print,
    verbose: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fleet ``config`` describes over ``workers`` processes until cancelled.

    This process serves the first share of the VMs and the control channel; each
    other share is served by a child process.  Raises, the other workers stopped
    first: :class:`FleetLimitError` before starting anything when the file
    descriptor limit is too low, :class:`ListenError` when a socket cannot be made
    (in any worker), :class:`WorkerFailed` when a worker dies.
    """
    check_fd_limit(config.count, workers)
    parts = split_fleet(config.count, workers)
    local = Fleet.from_config(config, parts[0])
    started: list[Worker] = []
    try:
        async with trio.open_nursery() as nursery:
            for number, part in enumerate(parts[1:], start=1):
                started.append(await start_worker(config, number, part, verbose))
            await nursery.start(local.run)
            for worker in started:
                reply = await worker.channel.receive()
                if reply is None or "error" in reply:
                    if reply is None:
                        await worker.process.wait()
                    raise WorkerFailed(
                        reply["error"]
                        if reply is not None
                        else f"worker {worker.number} ({worker.names}) {worker.exit_text()} "
                        "while starting"
                    )
                nursery.start_soon(watch, worker)
            _announce_listening(config, len(parts), local.vms[0].path, announce)
            if control is not None:
                channel = FleetControl(local, started)
                announce(f"control channel on unix:{await nursery.start(channel.serve, control)}")
            task_status.started()
    except BaseExceptionGroup as group:
        failure = _failure(group)
        if failure is None:
            raise
        raise failure from None
    finally:
        with trio.CancelScope(shield=True):
            await stop_workers(started, config)


async def serve_fleet(
    fleet: Fleet,
    *,
    control: str | None = None,
    announce: Callable[[str], None] = print,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``fleet`` (and its control channel at ``control``) in this process until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        _announce_listening(fleet.config, 1, fleet.vms[0].path, announce)
        if control is not None:
            announce(f"control channel on unix:{await nursery.start(fleet.serve_control, control)}")
        task_status.started()
