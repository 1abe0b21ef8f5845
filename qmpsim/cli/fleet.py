"""``qmpsim fleet``: many simulated VMs, one control channel."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from qmpsim.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _setup_logging,
    load_scenario_arg,
    subcommand,
)

# --- qmpsim fleet ----------------------------------------------------------------------------

FLEET_EPILOG = """\
examples:
  qmpsim fleet --count 1000 --dir /run/user/$UID/fleet
      a thousand idle VMs: vm000.sock … vm999.sock, one monitor each
  qmpsim fleet --count 100 --dir /tmp/fleet scenarios/soak.yaml --control /tmp/fleet.ctl
      every VM plays the scenario on its own clock, with its own seed; the
      control channel lists them (qmpsim-fleet) and drives any one of them
      (qmpsim-trigger, qmpsim-emit, … with {"vm": NAME})
  qmpsim fleet --count 50000 --workers 6 --dir /dev/shm/fleet
      six processes, vm00000…vm08333 in the first, the next range in each other

Each VM is independent: its name, uuid, seed and fake data differ.  Sockets are
mode 0600 and removed on exit; DIR is created if missing (like mkdir -p, the
last directory mode 0700); a tmpfs directory binds them ~50x faster than a disk.
The VMs are spread over --workers processes (default: one per CPU), each with
its own file descriptor limit; the control channel reaches every VM.  Each
worker reserves a listener and a client per VM plus 256 descriptors, raising
its soft limit up to the hard limit; when the hard limit cannot hold that the
fleet refuses to start and says how many workers would do.  A worker that dies
stops the fleet (exit status 1); Ctrl-C or SIGTERM stops every worker.  VMs
keep no transcript unless --transcript N says how many entries each keeps
(~0.5 KB each)."""


def _fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", nargs="?", metavar="SCENARIO", help="a scenario every VM plays (default: idle)"
    )
    parser.add_argument("--count", type=int, required=True, help="how many VMs")
    parser.add_argument(
        "--dir",
        required=True,
        metavar="DIR",
        help="where the sockets go: DIR/<name>.sock (created if missing)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes to spread the VMs over (default: the number of CPUs)",
    )
    parser.add_argument("--prefix", default="vm", help="VM names: PREFIX + index (default: vm)")
    parser.add_argument("--seed", type=int, default=0, help="the fleet's seed (default: 0)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="time scale: 10 plays ten times faster"
    )
    parser.add_argument("--multi", action="store_true", help="serve several clients per VM at once")
    parser.add_argument(
        "--control", metavar="PATH", help="serve the fleet's control channel on a Unix socket"
    )
    parser.add_argument(
        "--transcript",
        type=int,
        default=0,
        metavar="N",
        help="keep each VM's newest N transcript entries, for qmpsim-transcript (default: none)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log connections")


@subcommand(
    "fleet",
    help="serve many simulated VMs, a monitor socket each, over one process per CPU",
    epilog=FLEET_EPILOG,
    arguments=_fleet_arguments,
)
def fleet(args: argparse.Namespace) -> int:
    """``qmpsim fleet``."""
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if not args.speed > 0:
        raise UsageError("--speed must be a positive number")
    if args.transcript < 0:
        raise UsageError("--transcript must be a number of entries (0: none)")
    if "/" in args.prefix:
        raise UsageError("--prefix must not contain '/'")
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise UsageError(f"--dir {args.dir}: exists and is not a directory")
    from qmpsim.runtime.fleet import (
        FleetConfig,
        check_fd_limit,
        default_workers,
        fewer_collections,
    )

    workers = args.workers if args.workers is not None else default_workers()
    check_fd_limit(args.count, workers)  # before anything is built: one line, at once
    _setup_logging(args.verbose)
    from qmpsim.scenario.library import resolve

    scenario = load_scenario_arg(None if args.scenario is None else str(resolve(args.scenario)))
    try:
        os.makedirs(args.dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        print(f"qmpsim fleet: cannot create --dir {args.dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    import trio

    from qmpsim.runtime.session import IDLE

    config = FleetConfig(
        args.count,
        args.dir,
        scenario if scenario is not None else IDLE,
        prefix=args.prefix,
        seed=args.seed,
        speed=args.speed,
        multi_client=args.multi,
        transcript=args.transcript,
    )
    with fewer_collections():  # a process that serves a fleet: see there why
        return trio.run(_fleet, config, workers, args.control, args.verbose)


async def _fleet(config: Any, workers: int, control: str | None, verbose: bool) -> int:
    import functools
    import signal

    import trio

    from qmpsim.errors import QmpSimError
    from qmpsim.runtime.fleet import run_fleet

    def announce(line: str) -> None:
        print(f"qmpsim: {line}", file=sys.stderr, flush=True)

    async def stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
        async for signum in signals:
            announce(f"{signal.Signals(signum).name}, stopping")
            scope.cancel()
            return

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signal, signals, nursery.cancel_scope)
                run = functools.partial(
                    run_fleet,
                    config,
                    workers=workers,
                    control=control,
                    announce=announce,
                    verbose=verbose,
                )
                await nursery.start(run)
        except BaseExceptionGroup as group:
            failures = group.subgroup(QmpSimError)
            if failures is None:
                raise
            failure: BaseException = failures
            while isinstance(failure, BaseExceptionGroup):
                failure = failure.exceptions[0]
            print(f"qmpsim fleet: {failure}", file=sys.stderr)
            return EXIT_FAILURE
    return EXIT_OK
