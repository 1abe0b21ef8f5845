"""``qmpsim record``, ``qmpsim replay`` and ``qmpsim scenario-from``: vcrpy for QMP.

Registered with :func:`qmpsim.cli.common.subcommand` when the command line is built;
trio and the proxy load inside the commands, so ``qmpsim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any

from qmpsim.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    SERVE_TRANSCRIPT_LIMIT,
    TcpAddress,
    UsageError,
    _setup_logging,
    add_listen_arguments,
    check_listen,
    parse_tcp,
    subcommand,
)
from qmpsim.cli.serve import _serve
from qmpsim.logs import log_traffic

if TYPE_CHECKING:
    from qmpsim.qmp.transcript import Entry
    from qmpsim.runtime.record import Recorder


def _listen_arguments(parser: argparse.ArgumentParser) -> None:
    add_listen_arguments(parser)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log connections and every message on stderr, one line each",
    )


# --- qmpsim record -----------------------------------------------------------------------

RECORD_EPILOG = """\
examples:
  qemu-system-x86_64 -M pc -qmp unix:/tmp/qemu.sock,server=on,wait=off &
  qmpsim record --upstream /tmp/qemu.sock --unix /tmp/qmp.sock --output session.jsonl
      point the client at /tmp/qmp.sock: every byte it and QEMU exchange is
      forwarded unchanged and written to session.jsonl as it happens
  qmpsim record --upstream 127.0.0.1:4444 --tcp :5555 -v > session.jsonl
      a monitor on TCP (-qmp tcp:127.0.0.1:4444,server=on,wait=off); the
      transcript goes to standard output, the traffic to stderr

The transcript is qmpsim's JSON-lines format (one line per read, with its time):
`qmpsim replay` serves it back, `qmpsim scenario-from` turns it into a scenario,
`qmpsim check` checks it.  Recording stops with Ctrl-C or SIGTERM, or once QEMU
has exited and its last client has gone.

exit status: 0 after a clean stop, 1 when it cannot listen or write the
transcript, 2 for bad arguments."""


def _upstream(text: str) -> str | tuple[str, int]:
    """A socket path, or HOST:PORT when it reads as one and no such file exists."""
    if os.path.exists(text) or "/" in text:
        return text
    try:
        address: TcpAddress = parse_tcp(text)
    except argparse.ArgumentTypeError:
        return text
    return (address.host, address.port)


def _record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upstream",
        required=True,
        metavar="SOCKET",
        help="the QEMU monitor to record: a Unix socket path, or HOST:PORT",
    )
    _listen_arguments(parser)
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the transcript to FILE (default: standard output)",
    )


@subcommand(
    "record",
    help="record a real QEMU monitor through a transparent proxy",
    description="Listen on a socket and forward each client to a real QEMU monitor, "
    "recording every byte both ways, with its time, as a qmpsim transcript.",
    epilog=RECORD_EPILOG,
    arguments=_record_arguments,
)
def record(args: argparse.Namespace) -> int:
    """``qmpsim record``."""
    check_listen(args)
    _setup_logging(args.verbose)
    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.record import Recorder

    out: IO[str]
    if args.output is None or args.output == "-":
        out = sys.stdout
    else:
        out = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        transcript = Transcript(max_entries=SERVE_TRANSCRIPT_LIMIT)
        transcript.subscribe(_writer(out))
        if args.verbose:
            transcript.subscribe(log_traffic)
        recorder = Recorder(_upstream(args.upstream), transcript=transcript)

        import trio

        return trio.run(_record, recorder, args)
    finally:
        if out is not sys.stdout:
            out.close()


def _writer(out: IO[str]) -> Any:
    def write(entry: Entry) -> None:
        out.write(json.dumps(entry.to_json(), ensure_ascii=False) + "\n")
        out.flush()  # a recording stopped any way keeps everything up to then

    return write


async def _record(recorder: Recorder, args: argparse.Namespace) -> int:
    import signal

    import trio

    from qmpsim.runtime.listen import ListenError

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                if args.unix is not None:
                    where = await nursery.start(recorder.serve_unix, args.unix)
                else:
                    host, port = await nursery.start(
                        lambda task_status: recorder.serve_tcp(
                            args.tcp.host,
                            args.tcp.port,
                            allow_remote=args.allow_remote,
                            task_status=task_status,
                        )
                    )
                    where = f"{host}:{port}"
            except ListenError as exc:
                print(f"qmpsim record: {exc}", file=sys.stderr)
                return EXIT_FAILURE
            print(
                f"qmpsim: listening on {where}, recording {args.upstream}",
                file=sys.stderr,
                flush=True,
            )

            async def stop_on_signal() -> None:
                async for signum in signals:
                    print(f"qmpsim: {signal.Signals(signum).name}, stopping", file=sys.stderr)
                    break
                nursery.cancel_scope.cancel()

            async def stop_when_qemu_exited() -> None:
                await recorder.qemu_exited.wait()
                await recorder.wait_no_clients()
                print("qmpsim: QEMU exited, stopping", file=sys.stderr)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(stop_when_qemu_exited)
    return EXIT_OK


# --- qmpsim replay -----------------------------------------------------------------------

REPLAY_EPILOG = """\
examples:
  qmpsim replay session.jsonl --unix /tmp/qmp.sock
      the k-th client to connect is served the k-th recorded session: the
      recorded greeting, the recorded reply to each request (with the client's
      own id), the recorded events before the replies they preceded or at their
      recorded offsets; a client that sends what the recorded one sent receives
      the same bytes
  qmpsim replay session.jsonl --tcp :4444 --lenient
      requests the recording does not hold are answered by the simulator

Strict (the default): requests must come in the recorded order; any other
request is answered with an error naming the one the recording expected next.
The replay stops with Ctrl-C or SIGTERM, or once the recorded QEMU has exited.

exit status: 0 when every recorded request was replayed and nothing unexpected
came (strict), 1 otherwise or when the transcript cannot be read, 2 for bad
arguments."""


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("transcript", metavar="TRANSCRIPT", help="a recorded transcript")
    _listen_arguments(parser)
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="match requests out of order, and let the simulator answer unrecorded ones",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="play the recorded delays this many times faster"
    )
    parser.set_defaults(seed=None, control=None)


@subcommand(
    "replay",
    help="serve a recorded QEMU session back",
    description="Serve a transcript recorded with `qmpsim record` back to clients, "
    "byte for byte when they send what the recorded client sent.",
    epilog=REPLAY_EPILOG,
    arguments=_replay_arguments,
)
def replay(args: argparse.Namespace) -> int:
    """``qmpsim replay``."""
    check_listen(args)
    if not args.speed > 0:
        raise UsageError("--speed must be a positive number")
    _setup_logging(args.verbose)
    from qmpsim.qmp.cassette import load_cassette
    from qmpsim.qmp.transcript import Transcript
    from qmpsim.runtime.replay import replay_simulator

    cassette = load_cassette(args.transcript)
    if not cassette.sessions:
        print(f"qmpsim replay: {args.transcript}: no session recorded", file=sys.stderr)
        return EXIT_FAILURE
    sim, replayer = replay_simulator(
        cassette,
        strict=not args.lenient,
        speed=args.speed,
        transcript=Transcript(max_entries=SERVE_TRANSCRIPT_LIMIT),
    )
    if args.verbose:
        sim.transcript.subscribe(log_traffic)

    def announce(problem: str) -> None:
        print(f"qmpsim replay: {problem}", file=sys.stderr, flush=True)

    replayer.on_failure = announce
    import trio

    what = f"{len(cassette.sessions)} recorded session(s) of {args.transcript}"
    status = trio.run(_serve, sim, None, args, what)
    if status != EXIT_OK:
        return status
    missed = replayer.unplayed() if replayer.strict else []
    for line in missed:
        print(f"qmpsim replay: never sent: {line}", file=sys.stderr)
    return EXIT_FAILURE if replayer.failures or missed else EXIT_OK


# --- qmpsim scenario-from -------------------------------------------------------------------

SCENARIO_FROM_EPILOG = """\
examples:
  qmpsim scenario-from session.jsonl > recorded.yaml
  qmpsim scenario-from session.jsonl --name nightly-io-error -o scenarios/io.yaml
  qmpsim validate recorded.yaml && qmpsim serve recorded.yaml --unix /tmp/qmp.sock

The recorded client's requests become `until` steps; events the simulated VM
produces itself from a cause become `cause` steps (so its state follows: a disk
error that stops the VM makes query-status say io-error), other events `emit`
steps with the recorded data, with the recorded delays between them; replies the
simulator would not give become `reply` steps.  A client that does what the
recorded one did receives the recorded events."""


def _scenario_from_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("transcript", metavar="TRANSCRIPT", help="a recorded transcript")
    parser.add_argument("--name", default="recorded", help="the scenario's name")
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write the scenario to FILE (default: stdout)"
    )


@subcommand(
    "scenario-from",
    help="write a scenario that plays back a recorded session",
    epilog=SCENARIO_FROM_EPILOG,
    arguments=_scenario_from_arguments,
)
def scenario_from(args: argparse.Namespace) -> int:
    """``qmpsim scenario-from``."""
    from qmpsim.qmp.cassette import load_cassette
    from qmpsim.scenario.from_recording import derive_scenario

    derived = derive_scenario(load_cassette(args.transcript), name=args.name)
    text = derived.to_yaml(args.transcript)
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    return EXIT_OK
