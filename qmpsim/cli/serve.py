"""``qmpsim serve``: one simulated VM on a socket, until it quits or is stopped."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario


from qmpsim.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _profile_names,
    _setup_logging,
    add_listen_arguments,
    check_listen,
    load_scenario_arg,
    make_simulator,
    subcommand,
)

# --- qmpsim serve -----------------------------------------------------------------------

SERVE_EPILOG = """\
examples:
  qmpsim serve --unix /tmp/qmp.sock
      an idle VM on a Unix socket (mode 0600, removed on exit); connect with
      qmp-shell /tmp/qmp.sock, socat - UNIX-CONNECT:/tmp/qmp.sock, or libvirt
  qmpsim serve scenarios/tour.yaml --tcp 127.0.0.1:4444 -v
      play a scenario on TCP and print every message in and out
  qmpsim serve --tcp :0 --multi
      any free port on 127.0.0.1, several clients at once

Like QEMU's monitor, one client is served at a time: the next one waits, without
a greeting, until the current one leaves (--multi serves them all at once).
The VM quitting (the `quit` command, or a guest shutdown) stops the server, as
it would stop QEMU.  Ctrl-C, SIGTERM and SIGHUP stop it as they stop QEMU: the
clients get SHUTDOWN {"guest": false, "reason": "host-signal"}, and the exit
status is 0.

exit status: 0 after a clean stop, 1 when it cannot listen or load the
scenario, 2 for bad arguments."""


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from qmpsim.qmp.profiles import DEFAULT_PROFILE  # as _profile_names() does

    parser.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="a scenario to play, a YAML file or a shipped name (see qmpsim list); "
        "without it the VM idles, running",
    )
    add_listen_arguments(parser)
    parser.add_argument(
        "--multi", action="store_true", help="serve several clients at once, each its own session"
    )
    parser.add_argument(
        "--max-input",
        type=int,
        metavar="BYTES",
        help="disconnect a client that sends more than BYTES of one unfinished request "
        "(default: only QEMU's own limits, 64 MiB a token)",
    )
    parser.add_argument(
        "--profile",
        choices=_profile_names(),
        help=f"which QEMU to speak like (default: the scenario's, else {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log connections and every message on stderr, one line each",
    )
    parser.add_argument(
        "--random",
        action="store_true",
        help="play a random scenario drawn from --seed (see qmpsim generate) instead of SCENARIO",
    )
    parser.add_argument(
        "--strict-commands",
        action="store_true",
        help="answer an error, naming the command, where a reply would be generated "
        "(see qmpsim commands)",
    )
    _scenario_play_arguments(parser)


def _scenario_play_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed", type=float, default=1.0, help="time scale: 10 plays ten times faster"
    )
    parser.add_argument(
        "--seed", type=int, help="seed for fake values and client ports (default: vm.seed)"
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        help="also serve the control channel (qmpsim-* commands) on a Unix socket at PATH",
    )


@subcommand(
    "serve",
    help="serve a simulated QEMU monitor on a socket",
    description="Serve a simulated QEMU 7.2 QMP monitor on a Unix or TCP socket, optionally "
    "playing a scenario, until interrupted.",
    epilog=SERVE_EPILOG,
    arguments=_serve_arguments,
)
def serve(args: argparse.Namespace) -> int:
    """``qmpsim serve``."""
    check_listen(args)
    if not args.speed > 0:
        raise UsageError("--speed must be a positive number")
    both = args.control is not None and args.unix is not None
    if both and os.path.abspath(args.control) == os.path.abspath(args.unix):
        raise UsageError("--control and --unix name the same path: give each a socket")
    _setup_logging(args.verbose)
    scenario = _random_scenario(args) if args.random else load_scenario_arg(args.scenario)
    if args.max_input is not None and args.max_input < 1:
        raise UsageError("--max-input must be a positive number of bytes")
    sim = make_simulator(
        scenario, profile=args.profile, multi_client=args.multi, max_input=args.max_input
    )
    sim.machine.strict_commands = args.strict_commands
    if args.verbose:
        from qmpsim.logs import log_traffic

        sim.transcript.subscribe(log_traffic)

    import trio

    return trio.run(_serve, sim, scenario, args)


async def _serve(
    sim: Simulator, scenario: Scenario | None, args: argparse.Namespace, what: str | None = None
) -> int:
    import signal

    import trio

    from qmpsim.runtime.listen import ListenError

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with sim, trio.open_nursery() as nursery:
            try:
                if args.unix is not None:
                    where = await sim.listen_unix(args.unix)
                else:
                    host, port = await sim.listen_tcp(
                        args.tcp.host, args.tcp.port, allow_remote=args.allow_remote
                    )
                    where = f"{host}:{port}"
            except ListenError as exc:
                print(f"qmpsim serve: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            if what is None:
                what = f"scenario {scenario.name!r}" if scenario is not None else "an idle VM"
            print(f"qmpsim: listening on {where} ({what})", file=sys.stderr, flush=True)
            if scenario is None and args.control is None:
                # Nothing to play and nobody to drive it: the engine (and the scenario
                # language it brings) would only slow the start down.
                if args.seed is not None:
                    sim.machine.rng.seed(args.seed)
            else:
                from qmpsim.runtime.session import start_session

                try:
                    await start_session(
                        nursery,
                        sim,
                        scenario,
                        speed=args.speed,
                        seed=args.seed,
                        control=args.control,
                        announce=lambda line: print(f"qmpsim: {line}", file=sys.stderr, flush=True),
                    )
                except ListenError as exc:  # the control socket's
                    print(f"qmpsim serve: {exc}", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    return EXIT_FAILURE

            async def stop_on_signal() -> None:
                async for signum in signals:
                    print(f"qmpsim: {signal.Signals(signum).name}, stopping", file=sys.stderr)
                    break
                from qmpsim.vm.machine import HostSignal

                # As QEMU: SHUTDOWN (host-signal) to the clients, then stop_on_exit ends it.
                if not sim.machine.exited:
                    sim.cause(HostSignal())

            async def stop_on_exit() -> None:
                await sim.wait_exited()
                with trio.move_on_after(1.0):  # a client that does not read cannot hold us
                    await sim.wait_no_clients()
                print("qmpsim: the VM exited, stopping", file=sys.stderr)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(stop_on_exit)
    return EXIT_OK


def _random_scenario(args: argparse.Namespace) -> Scenario:
    if args.scenario is not None:
        raise UsageError("--random plays a drawn scenario: give either SCENARIO or --random")
    from qmpsim.qmp.profiles import DEFAULT_PROFILE
    from qmpsim.testing.walk import random_scenario

    return random_scenario(seed=args.seed or 0, profile=args.profile or DEFAULT_PROFILE)
