"""``qmpsim demo``: a client and a VM in one process, the conversation printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.model import Scenario


from qmpsim.cli.common import (
    EXIT_OK,
    UsageError,
    _setup_logging,
    load_scenario_arg,
    make_simulator,
    subcommand,
)

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
