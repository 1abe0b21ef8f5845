"""The ``qmpsim`` command.

Each subcommand is one function registered with :func:`subcommand`; its options
are declared by the function given as ``arguments``.  trio and the server are
imported inside the subcommands, so ``qmpsim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.loader import Scenario

EXIT_OK = 0
EXIT_FAILURE = 1
"""The command ran but could not do its job (cannot listen, bad scenario…)."""
EXIT_USAGE = 2
"""Bad arguments (argparse's convention)."""

Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Subcommand:
    """One ``qmpsim NAME``: its help texts, its options and the function that runs it."""

    name: str
    help: str
    description: str
    epilog: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Runner


SUBCOMMANDS: dict[str, Subcommand] = {}
"""Every subcommand, by name, in the order they were registered."""


def subcommand(
    name: str,
    *,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    description: str | None = None,
    epilog: str = "",
) -> Callable[[Runner], Runner]:
    """Register the decorated function as ``qmpsim NAME``."""

    def register(run: Runner) -> Runner:
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        SUBCOMMANDS[name] = Subcommand(
            name, help, description or help[:1].upper() + help[1:] + ".", epilog, arguments, run
        )
        return run

    return register


class UsageError(Exception):
    """An argument that parsed but makes no sense; reported like argparse's own errors."""


# --- shared helpers -------------------------------------------------------------------


@dataclass(frozen=True)
class TcpAddress:
    """A ``HOST:PORT`` given on the command line."""

    host: str
    port: int


def parse_tcp(text: str) -> TcpAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (loopback); ``ArgumentTypeError`` otherwise."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise argparse.ArgumentTypeError(f"{text!r}: expected [IPV6]:PORT, e.g. [::1]:4444")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:4444 (PORT 0 picks a free one)"
            )
        if ":" in host:
            raise argparse.ArgumentTypeError(f"{text!r}: write IPv6 hosts in brackets: [::1]:4444")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 0 to 65535")
    return TcpAddress(host or "127.0.0.1", int(port))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _profile_names() -> list[str]:
    from qmpsim.qmp.profiles import PROFILES  # stdlib only: cheap

    return list(PROFILES)  # oldest first


def _setup_logging(verbose: bool) -> None:
    from qmpsim.logs import stderr_handler

    root = logging.getLogger("qmpsim")
    root.handlers[:] = [stderr_handler(sys.stderr)]
    # -v: connections, scenario steps and every message (DEBUG, qmpsim.traffic).
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


def load_scenario_arg(path: str | None) -> Scenario | None:
    """The scenario named on the command line: a file, or a shipped scenario's name.

    ``None`` is an idle VM.  ``ScenarioError`` (from the scenario module) says
    where a file is wrong.
    """
    if path is None:
        return None
    from qmpsim.scenario.loader import load_named

    return load_named(path)


SERVE_TRANSCRIPT_LIMIT = 10_000
"""Entries a long-running ``serve`` keeps in its transcript (the newest ones)."""


def make_simulator(
    scenario: Scenario | None,
    *,
    profile: str | None,
    multi_client: bool = False,
    max_input: int | None = None,
) -> Simulator:
    """A simulator for ``scenario`` (or an idle VM of ``profile``)."""
    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.server import Simulator

    transcript = Transcript(max_entries=SERVE_TRANSCRIPT_LIMIT)
    if scenario is None:
        from qmpsim.qmp.profiles import DEFAULT_PROFILE

        return Simulator(
            profile=profile or DEFAULT_PROFILE,
            multi_client=multi_client,
            max_input_buffer=max_input,
            transcript=transcript,
        )
    if profile is not None and profile != scenario.profile:
        raise UsageError(
            f"--profile {profile} contradicts the scenario, which is written for {scenario.profile}"
        )
    from qmpsim.scenario.loader import build_machine

    return Simulator(
        build_machine(scenario),
        multi_client=multi_client,
        max_input_buffer=max_input,
        transcript=transcript,
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
    parser.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="a scenario to play, a YAML file or a shipped name (see qmpsim list); "
        "without it the VM idles, running",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix socket at PATH")
    where.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        type=parse_tcp,
        help="listen on TCP (loopback only unless --allow-remote; PORT 0 picks a free one)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --tcp host (the monitor has no authentication)",
    )
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
        help="which QEMU to speak like (default: the scenario's, else the newest)",
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
    if args.tcp is not None and not args.allow_remote and not _is_loopback(args.tcp.host):
        raise UsageError(
            f"--tcp {args.tcp.host}: not a loopback address; the monitor has no "
            "authentication, so add --allow-remote to expose it on purpose"
        )
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
                from qmpsim.runtime.engine import start_session

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


# --- qmpsim demo -------------------------------------------------------------------------

DEMO_EPILOG = """\
examples:
  qmpsim demo                         an idle VM: query-status, stop, cont, quit
  qmpsim demo scenarios/tour.yaml     play the tour and watch its events arrive
  qmpsim demo scenarios/tour.yaml --speed 4"""


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", nargs="?", metavar="SCENARIO", help="a scenario to play (default: an idle VM)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="play the scenario this many times faster (default: 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="stop watching a scenario that has not ended after this long (default: 60)",
    )


@subcommand(
    "demo",
    help="serve a scenario and show a client talking to it",
    description="Start a simulator on a temporary Unix socket, connect a small built-in "
    "client, and print what it sends and receives while the scenario plays.",
    epilog=DEMO_EPILOG,
    arguments=_demo_arguments,
)
def demo(args: argparse.Namespace) -> int:
    """``qmpsim demo``."""
    if not args.speed > 0:
        raise UsageError("--speed must be a positive number")
    _setup_logging(False)
    scenario = load_scenario_arg(args.scenario)
    sim = make_simulator(scenario, profile=None)

    import trio

    return trio.run(_demo, sim, scenario, args, sys.stdout)


class _DemoClient:
    """A small QMP client that prints, readably, everything it sends and receives."""

    def __init__(self, stream: Any, out: TextIO) -> None:
        import trio

        self.stream = stream
        self.out = out
        self.replies_in, self.replies = trio.open_memory_channel[dict[str, Any]](100)
        self.events_in, self.events = trio.open_memory_channel[dict[str, Any]](100)
        self.first_stamp: float | None = None
        self.greeted = trio.Event()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def read(self) -> None:
        """Print and route every message until the server closes the connection."""
        buffer = b""
        async with self.replies_in, self.events_in:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    self.say("<- (connection closed by the server)")
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        await self._route(json.loads(line))

    async def _route(self, msg: dict[str, Any]) -> None:
        if "event" in msg:
            stamp = msg["timestamp"]["seconds"] + msg["timestamp"]["microseconds"] / 1e6
            if self.first_stamp is None:
                self.first_stamp = stamp
            data = f" {json.dumps(msg['data'])}" if "data" in msg else ""
            self.say(f"<- event {msg['event']}{data}  [+{stamp - self.first_stamp:.3f}s]")
            await self.events_in.send(msg)
        elif "QMP" in msg:
            version = msg["QMP"]["version"]["qemu"]
            caps = msg["QMP"]["capabilities"]
            self.say(
                f"<- greeting: QEMU {version['major']}.{version['minor']}.{version['micro']}, "
                f"capabilities {json.dumps(caps)}"
            )
            self.greeted.set()
        else:
            self.say(f"<- {json.dumps(msg)}")
            await self.replies_in.send(msg)

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        self.say(f"-> {json.dumps(request)}")
        await self.stream.send_all(json.dumps(request).encode())
        reply = await self.replies.receive()
        return reply


async def _demo(
    sim: Simulator, scenario: Scenario | None, args: argparse.Namespace, out: TextIO
) -> int:
    import tempfile

    import trio

    with tempfile.TemporaryDirectory(prefix="qmpsim-demo-") as tmp:
        path = os.path.join(tmp, "qmp.sock")
        async with sim, trio.open_nursery() as nursery:
            await sim.listen_unix(path)
            what = f"scenario {scenario.name!r}" if scenario is not None else "an idle VM"
            print(f"qmpsim demo: serving {what} on {path}", file=out, flush=True)
            runner = None
            if scenario is not None:
                from qmpsim.runtime.engine import ScenarioRunner

                runner = ScenarioRunner(sim, scenario, speed=args.speed)
                await nursery.start(runner.run)
            stream = await trio.open_unix_socket(path)
            client = _DemoClient(stream, out)
            async with stream, trio.open_nursery() as talk:
                talk.start_soon(client.read)
                await client.greeted.wait()
                await client.execute("qmp_capabilities", {"enable": ["oob"]})
                await client.execute("query-status")
                if runner is None:
                    await client.execute("stop")
                    await client.execute("cont")
                else:
                    await _watch(client, runner, args.timeout / args.speed)
                await client.execute("quit")
            nursery.cancel_scope.cancel()
    return EXIT_OK


async def _watch(client: _DemoClient, runner: Any, timeout: float) -> None:
    """Follow the scenario until its timeline ends; resume the VM when it stops on its own."""
    import trio

    async def operator() -> None:
        async for event in client.events:
            if event["event"] == "STOP":
                client.say("   (the VM stopped on its own: resuming it, as an operator would)")
                await client.execute("cont")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator)
        with trio.move_on_after(timeout) as waited:
            await runner.done.wait()
        nursery.cancel_scope.cancel()
    await client.execute("query-status")  # its reply comes after every event sent before it
    if waited.cancelled_caught:
        client.say(f"   (the scenario is still going after {timeout:g}s; leaving it)")
    else:
        client.say("   (the scenario's timeline has ended)")


# --- qmpsim list / validate / show / schema (the scenario language) ---------------------------


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--paths", action="store_true", help="each scenario's file instead of its description"
    )


@subcommand("list", help="list the shipped scenarios", arguments=_list_arguments)
def list_scenarios(args: argparse.Namespace) -> int:
    """``qmpsim list``."""
    from qmpsim.scenario.loader import list_shipped

    print(list_shipped(paths=args.paths), end="")
    return EXIT_OK


def _files_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="scenario files")


@subcommand(
    "validate",
    help="check scenario files",
    description="Check scenario files: one line per file, FILE:LINE:COLUMN: message for "
    "mistakes; exit status 1 when any file is wrong.",
    arguments=_files_arguments,
)
def validate(args: argparse.Namespace) -> int:
    """``qmpsim validate``."""
    from qmpsim.scenario.loader import validate_files

    return validate_files(args.files, sys.stdout)


def _scenario_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario", metavar="SCENARIO", help="a scenario file, or the name of a shipped one"
    )


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _scenario_argument(parser)
    parser.add_argument(
        "--yaml", action="store_true", help="print the scenario as YAML (includes inlined)"
    )


@subcommand(
    "show",
    help="print a scenario's timeline and the events it produces",
    arguments=_show_arguments,
)
def show(args: argparse.Namespace) -> int:
    """``qmpsim show``."""
    from qmpsim.scenario.loader import load_named, show_timeline

    scenario = load_named(args.scenario)
    print(scenario.to_yaml() if args.yaml else show_timeline(scenario), end="")
    return EXIT_OK


@subcommand("schema", help="print the JSON Schema of scenario files", arguments=lambda parser: None)
def schema(args: argparse.Namespace) -> int:
    """``qmpsim schema``."""
    from qmpsim.scenario.loader import scenario_schema

    print(json.dumps(scenario_schema(), indent=2))
    return EXIT_OK


# --- qmpsim commands (what a profile has, and who answers) -----------------------------------


def _commands_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", choices=_profile_names(), help="which QEMU (default: the default profile)"
    )
    parser.add_argument(
        "--events", action="store_true", help="list the profile's events instead of its commands"
    )


@subcommand(
    "commands",
    help="list a profile's commands and what answers each",
    description="List every command of a profile and the source of its replies: modelled "
    "(the VM model), recorded (the real QEMU's reply to the same request; '(by qemu-X.Y)' "
    "where only the nearest recorded version answered it) or generated (made from the "
    "return type; serve --strict-commands refuses those).",
    arguments=_commands_arguments,
)
def commands(args: argparse.Namespace) -> int:
    """``qmpsim commands``."""
    from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile

    profile = get_profile(args.profile or DEFAULT_PROFILE)
    if args.events:
        for name, event in profile.events.items():
            members = ", ".join(f.name for f in event.data.fields) if event.data else ""
            print(f"{name}  {members}".rstrip())
        print(f"# {profile.name}: {len(profile.events)} events", file=sys.stderr)
        return EXIT_OK
    from qmpsim.vm.machine import modelled_commands
    from qmpsim.vm.replies import RECORDED, source

    counts: dict[str, int] = {}
    width = max(len(name) for name in profile.commands)
    modelled_here = modelled_commands() | {"qmp_capabilities"}  # the protocol answers that one
    for name, spec in profile.commands.items():
        modelled = name in modelled_here
        kind = source(profile, name, modelled=modelled)
        counts[kind] = counts.get(kind, 0) + 1
        donors = {r.borrowed for r in profile.recorded.get(name, ())}
        note = f" (by {donors.pop()})" if kind == RECORDED and None not in donors else ""
        print(f"{name:<{width}}  {kind}{note}{'  oob' if spec.allow_oob else ''}")
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    print(f"# {profile.name}: {len(profile.commands)} commands ({summary})", file=sys.stderr)
    return EXIT_OK


# --- qmpsim check / generate (conformance and random streams) ------------------------------

CHECK_EPILOG = """\
examples:
  qmpsim check events.jsonl
      one event (or any QMP message) per line, as a client records them
  qmpsim check --profile qemu-0.14 transcript.jsonl
      a qmpsim transcript: each client's stream is checked on its own
  python my_client.py 2>&1 | qmpsim check -
      a qemu.qmp debug log (its "<--" records) read from standard input

Each violation is printed as FILE:LINE: RULE: message; the exit status is 1
when any file has one, so the command fits CI."""


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines logs of QMP traffic ('-': stdin)"
    )
    parser.add_argument(
        "--profile", choices=_profile_names(), default="qemu-7.2", help="default: qemu-7.2"
    )
    parser.add_argument(
        "--initial-status",
        choices=("running", "paused"),
        help="the VM's run state before the first line (default: unknown)",
    )


@subcommand(
    "check",
    help="check recorded QMP traffic against a profile's rules",
    description="Check JSON-lines logs of QMP traffic (events, raw server messages, qmpsim "
    "transcripts or qemu.qmp debug logs) against a profile: schemas, causal rules, sessions, "
    "throttling and timestamp order.",
    epilog=CHECK_EPILOG,
    arguments=_check_arguments,
)
def check(args: argparse.Namespace) -> int:
    """``qmpsim check``."""
    from qmpsim.testing.conformance import check_files

    return check_files(args.files, args.profile, sys.stdout, initial_status=args.initial_status)


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="the same seed, the same stream")
    parser.add_argument("--count", type=int, default=20, help="how many events (default: 20)")
    parser.add_argument(
        "--profile", choices=_profile_names(), default="qemu-7.2", help="default: qemu-7.2"
    )
    parser.add_argument(
        "--causes",
        metavar="NAME,...",
        help="only these causes and commands (e.g. disk-error,cont); default: all",
    )


@subcommand(
    "generate",
    help="print a reproducible random event stream as JSON lines",
    description="Print a random event stream as JSON lines: a walk over a random VM's legal "
    "moves, so it obeys every rule of the profile; the same seed gives the same stream.",
    arguments=_generate_arguments,
)
def generate(args: argparse.Namespace) -> int:
    """``qmpsim generate``."""
    from qmpsim.testing.walk import generate_lines

    causes = args.causes.split(",") if args.causes else None
    try:
        lines = generate_lines(
            seed=args.seed, count=args.count, profile=args.profile, causes=causes
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # line by line as the walk goes: `qmpsim generate | head` stops it early
    for line in lines:
        sys.stdout.write(line)
    return EXIT_OK


def _random_scenario(args: argparse.Namespace) -> Scenario:
    if args.scenario is not None:
        raise UsageError("--random plays a drawn scenario: give either SCENARIO or --random")
    from qmpsim.testing.walk import random_scenario

    return random_scenario(seed=args.seed or 0, profile=args.profile or "qemu-7.2")


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
    from qmpsim.runtime.fleet import FleetConfig, check_fd_limit, default_workers

    workers = args.workers if args.workers is not None else default_workers()
    check_fd_limit(args.count, workers)  # before anything is built: one line, at once
    _setup_logging(args.verbose)
    from qmpsim.scenario.loader import resolve

    scenario = load_scenario_arg(None if args.scenario is None else str(resolve(args.scenario)))
    try:
        os.makedirs(args.dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        print(f"qmpsim fleet: cannot create --dir {args.dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    import trio

    from qmpsim.runtime.engine import IDLE

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


# --- main ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="qmpsim",
        description="A QEMU event simulator and QMP test double: a fake QMP monitor that "
        "speaks like QEMU 7.2 and plays scripted event sequences.",
        epilog="Run `qmpsim COMMAND --help` for each command's options and examples.",
    )
    from qmpsim import __version__

    parser.add_argument("--version", action="version", version=f"qmpsim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for sub in SUBCOMMANDS.values():
        child = commands.add_parser(
            sub.name,
            help=sub.help,
            description=textwrap.fill(sub.description, 79),  # the epilog stays as written
            epilog=sub.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.arguments(child)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qmpsim`` command; returns the exit status.

    One policy for every subcommand, whatever it runs on (trio or not): Ctrl-C
    stops quietly with status 130, output whose reader went away (``qmpsim
    generate | head``) stops quietly with 141, as a shell reports ``cat`` killed by
    SIGPIPE; a bad argument or input is one line on stderr (status 2, or 1).
    """
    who = "qmpsim"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        who = f"qmpsim {args.command}"
        return SUBCOMMANDS[args.command].run(args)
    except BaseException as exc:
        status = _exit_status(exc, who)
        if status is None:
            raise
        if status == EXIT_USAGE:
            raise SystemExit(status) from None  # as argparse's own errors do
        return status


EXIT_INTERRUPTED = 128 + 2
"""Ctrl-C (128 + SIGINT, what shells expect of an interrupted command)."""
EXIT_BROKEN_PIPE = 128 + 13
"""The reader of standard output went away (128 + SIGPIPE, as ``cat`` ends then)."""


def _exit_status(exc: BaseException, who: str) -> int | None:
    """The exit status for ``exc`` escaping a subcommand, after reporting it; ``None``: re-raise.

    trio wraps what its tasks raise in exception groups: their leaves decide.
    """
    from qmpsim.errors import QmpSimError

    leaves = _leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return EXIT_INTERRUPTED
    if all(isinstance(leaf, BrokenPipeError) for leaf in leaves) and _stdout_gone():
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    if len(leaves) != 1:
        return None
    (leaf,) = leaves
    if isinstance(leaf, UsageError):
        print(f"{who}: error: {leaf}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(leaf, QmpSimError | OSError):
        print(f"{who}: {leaf}", file=sys.stderr)
        return EXIT_FAILURE
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone away."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a non-file, or closed
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poll.poll(0))


def _discard_stdout() -> None:
    # What is still buffered would fail again when Python flushes at exit, with a
    # complaint on stderr: send it nowhere instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# Subcommands in modules of their own register themselves with SUBCOMMANDS on import.
from qmpsim.cli import dropin, record  # noqa: E402, F401
