"""qmpsim's benchmarks, side by side with a real QEMU, printed as one table.

Run it with ``make bench`` (or ``.venv/bin/python bench/run.py``).  Every figure
is measured in this run: medians with their spread (min..max over the
repetitions), and ratios against the QEMU anchor where there is one.

``--quick`` runs fewer repetitions and a smaller fleet, for a smoke test.
Internal roles (``--role ...``) are the helper processes the benchmark spawns.
"""

from __future__ import annotations

import argparse
import gc
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QEMU = "qemu-system-x86_64"
PY = sys.executable
# Child processes cache their bytecode, as an installed qmpsim does (pip compiles it);
# with PYTHONDONTWRITEBYTECODE set every start would recompile every module.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

# --- measurements and the table ---------------------------------------------------------


@dataclass
class Stat:
    """Repeated samples of one quantity."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def show(self, fmt: str = "{:.1f}") -> str:
        if len(self.samples) == 1:
            return fmt.format(self.samples[0])
        lo, hi = min(self.samples), max(self.samples)
        return f"{fmt.format(self.median)} ({fmt.format(lo)}..{fmt.format(hi)})"


@dataclass
class Row:
    what: str
    qmpsim: str
    qemu: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Table:
    sections: list[tuple[str, list[Row]]] = field(default_factory=list)

    def section(self, title: str) -> list[Row]:
        rows: list[Row] = []
        self.sections.append((title, rows))
        return rows

    def render(self) -> str:
        head = Row("measurement", "qmpsim", "QEMU 7.2", "ratio", "target", "holds")
        cells = [head] + [r for _, rows in self.sections for r in rows]
        keys = ("what", "qmpsim", "qemu", "ratio", "target", "verdict")
        widths = {k: max(len(getattr(r, k)) for r in cells) for k in keys}

        def line(r: Row) -> str:
            return "| " + " | ".join(getattr(r, k).ljust(widths[k]) for k in keys) + " |"

        rule = "|" + "|".join("-" * (widths[k] + 2) for k in keys) + "|"
        out = [line(head), rule]
        for title, rows in self.sections:
            out.append(line(Row(f"**{title}**", "")))
            out.extend(line(r) for r in rows)
        return "\n".join(out)


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            key, _, rest = row.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def fast_dir() -> str:
    """A tmpfs directory when there is one: binding a Unix socket on ext4 costs ~3 ms here."""
    for base in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR") or "", "/run"):
        if base and os.path.isdir(base) and os.access(base, os.W_OK):
            return base
    return tempfile.gettempdir()


# --- a blocking QMP client -----------------------------------------------------------------


def connect_greeting(path: str, deadline: float) -> tuple[socket.socket, bytes]:
    """Connect as soon as the socket accepts and read the greeting line (polling every 0.2 ms)."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {path}") from None
            time.sleep(0.0002)
    data = b""
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the greeting")
        data += chunk
    return sock, data


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- 1. time to greeting ---------------------------------------------------------------


def process_greeting(argv: Callable[[str], list[str]], runs: int) -> tuple[Stat, Stat]:
    """Spawn a monitor process ``runs`` times: time from spawn to greeting, and its RSS."""
    times, rss = [], []
    with tempfile.TemporaryDirectory(dir=fast_dir()) as tmp:
        for i in range(-1, runs):  # run -1 warms the caches and is not counted
            path = os.path.join(tmp, f"m{i}.sock")
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv(path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
                env=ENV,
            )
            try:
                sock, _ = connect_greeting(path, time.monotonic() + 20)
                if i >= 0:
                    times.append((time.perf_counter() - start) * 1000)
                    rss.append(rss_mb(proc.pid)[0])
                sock.close()
            finally:
                stop(proc)
    return Stat(times), Stat(rss)


def fixture_greeting(runs: int) -> Stat:
    """The in-process simulator (what the fixtures start): new Simulator to greeting read."""
    import trio

    from qmpsim.runtime.server import Simulator

    async def one(path: str) -> float:
        start = time.perf_counter()
        async with Simulator() as sim:
            await sim.listen_unix(path)
            stream = await trio.open_unix_socket(path)
            async with stream:
                data = b""
                while b"\n" not in data:
                    data += await stream.receive_some()
            elapsed = time.perf_counter() - start
            sim.disconnect()
        return elapsed * 1000

    async def main(tmp: str) -> list[float]:
        return [await one(os.path.join(tmp, f"f{i}.sock")) for i in range(runs)]

    with tempfile.TemporaryDirectory(dir=fast_dir()) as tmp:
        return Stat(trio.run(main, tmp))


def plugin_fixture_greeting(runs: int) -> Stat | None:
    """The ``qmp_server`` pytest fixture: its server thread started to greeting read."""
    try:
        from qmpsim.testing.pytest_plugin import QmpServer, _config
    except ImportError:
        return None
    times = []
    for _ in range(runs + 1):  # the first one pays for imports and is not counted
        start = time.perf_counter()
        try:  # the fixture's internals: what pytest calls around each test
            server = QmpServer(_config(None))
            server._start()
        except (AttributeError, TypeError) as exc:
            say(f"the qmp_server fixture cannot be timed here: {exc}")
            return None
        try:
            sock, _ = connect_greeting(server.path, time.monotonic() + 20)
            times.append((time.perf_counter() - start) * 1000)
            sock.close()
        finally:
            server._teardown()
    return Stat(times[1:])


def bench_greeting(table: Table, runs: int) -> None:
    rows = table.section("time to greeting (ms; RSS in MB)")
    say("time to greeting: QEMU")
    qemu_t, qemu_rss = process_greeting(
        lambda p: [
            QEMU,
            "-M",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-qmp",
            f"unix:{p},server=on,wait=off",
        ],
        runs,
    )
    say("time to greeting: qmpsim serve")
    serve_t, serve_rss = process_greeting(
        lambda p: [PY, "-m", "qmpsim", "serve", "--unix", p], runs
    )
    say("time to greeting: in-process fixture")
    fix_t = fixture_greeting(runs * 4)
    plugin_t = plugin_fixture_greeting(runs * 4)
    q = qemu_t.median
    if plugin_t is not None:
        rows.append(
            Row(
                "pytest fixture `qmp_server` (thread)",
                plugin_t.show("{:.2f}"),
                qemu_t.show(),
                f"{q / plugin_t.median:.0f}x sooner",
                ">= 10x sooner",
                verdict(q / plugin_t.median >= 10),
            )
        )
    rows.append(
        Row(
            "in-process `Simulator` (trio)",
            fix_t.show("{:.2f}"),
            qemu_t.show(),
            f"{q / fix_t.median:.0f}x sooner",
            ">= 10x sooner",
            verdict(q / fix_t.median >= 10),
        )
    )
    rows.append(
        Row(
            "`qmpsim serve` process",
            serve_t.show(),
            qemu_t.show(),
            f"{serve_t.median / q:.1f}x QEMU",
            "<= 3x QEMU",
            verdict(serve_t.median <= 3 * q),
        )
    )
    rows.append(
        Row(
            "RSS of the process",
            serve_rss.show(),
            qemu_rss.show(),
            f"{serve_rss.median / qemu_rss.median:.1f}x",
            "",
            "",
        )
    )


# --- 2. event throughput ---------------------------------------------------------------


def role_events(path: str, count: int, clients: int) -> None:
    """Serve ``path`` (multi-client), wait for ``clients`` negotiated, emit ``count`` events."""
    import trio

    from qmpsim.runtime.server import Simulator

    async def main() -> None:
        async with Simulator(multi_client=True, max_output_buffer=1 << 30) as sim:
            await sim.listen_unix(path)
            print("ready", flush=True)
            for _ in range(clients):
                await sim.wait_for_command("query-status")  # sent right after negotiating
            data = {
                "device": "virtio0",
                "node-name": "#block158",
                "operation": "write",
                "action": "report",
                "nospace": False,
                "reason": "Input/output error",
            }
            for i in range(count):
                sim.emit("BLOCK_IO_ERROR", data)
                if i % 256 == 255:
                    await trio.sleep(0)  # let the writers drain between batches
            await sim.wait_no_clients()

    trio.run(main)


def drain_events(path: str, clients: int, count: int) -> tuple[float, bytes]:
    """Connect ``clients`` clients, negotiate, read ``count`` events each; seconds and a sample."""
    sel = selectors.DefaultSelector()
    socks, need, buffers = [], {}, {}
    for _ in range(clients):
        sock, greeting = connect_greeting(path, time.monotonic() + 20)
        sock.setblocking(False)
        socks.append(sock)
        need[sock] = count + 2 - (greeting.count(b"\n") - 1)  # +2: two replies
        buffers[sock] = bytearray()
        sel.register(sock, selectors.EVENT_READ)
    start = time.perf_counter()
    for sock in socks:
        sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-status"}')
    sample = b""
    pending = len(socks)
    while pending:
        for key, _ in sel.select(30):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            chunk = sock.recv(1 << 18)
            if not chunk:
                raise ConnectionError("the server closed a client early")
            if not sample and b"BLOCK_IO_ERROR" in chunk:
                at = chunk.index(b"BLOCK_IO_ERROR")
                begin = chunk.rfind(b"\n", 0, at) + 1
                sample = bytes(chunk[begin : chunk.index(b"\n", at) + 1])
            need[sock] -= chunk.count(b"\n")
            if need[sock] <= 0:
                sel.unregister(sock)
                pending -= 1
    elapsed = time.perf_counter() - start
    for sock in socks:
        sock.close()
    sel.close()
    return elapsed, sample


def event_run(clients: int, count: int) -> tuple[float, bytes]:
    with tempfile.TemporaryDirectory(dir=fast_dir()) as tmp:
        path = os.path.join(tmp, "ev.sock")
        proc = subprocess.Popen(
            [PY, __file__, "--role", "events", path, str(count), str(clients)],
            stdout=subprocess.PIPE,
            env=ENV,
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            return drain_events(path, clients, count)
        finally:
            stop(proc)


def bench_throughput(table: Table, runs: int, count: int) -> None:
    rows = table.section("event throughput over a Unix socket")
    say("throughput: one client")
    single = [event_run(1, count) for _ in range(runs)]
    rate = Stat([count / s for s, _ in single])
    sample = single[0][1]
    rows.append(
        Row(
            f"one client, {count:,} events (events/s)",
            rate.show("{:,.0f}"),
            "",
            "",
            ">= 300,000/s",
            verdict(rate.median >= 300_000),
        )
    )
    fan_count = max(1000, count // 50)
    say("throughput: fan-out to 100 clients")
    fan = [event_run(100, fan_count) for _ in range(runs)]
    deliveries = Stat([100 * fan_count / s for s, _ in fan])
    events = Stat([fan_count / s for s, _ in fan])
    rows.append(
        Row(
            f"fan-out, 100 clients x {fan_count:,} events (deliveries/s)",
            deliveries.show("{:,.0f}"),
            "",
            f"{events.median:,.0f} events/s",
            "",
            "",
        )
    )
    rows.append(
        Row(
            "encoding of each event",
            sample.decode().replace("\r\n", "\\r\\n")[:60] + "…",
            "",
            "",
            "QEMU's bytes",
            verdict(sample.startswith(b'{"timestamp": {"seconds": ') and sample.endswith(b"}\r\n")),
        )
    )


# --- 3. fleet scale ----------------------------------------------------------------------

FLEET_SCENARIO = """\
name: bench-fleet
description: what a management plane sees of a VM rebooting and pausing
steps:
  - until: query-status
  - cause: guest-reset
  - emit: STOP
  - emit: RESUME
  - cause: guest-reset
"""
FLEET_EVENTS = 4  # RESET, STOP, RESUME, RESET: every client must receive all of them
CLIENTS_PER_PROCESS = 9_000  # each client process stays well inside the fd limit


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid``, of any of its threads."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(p) for p in f.read().split())
    return found


def role_fleet_clients(directory: str, width: int, start: int, stop: int, events: int) -> None:
    """Connect to VMs ``start``..``stop``, negotiate, and hold every connection open;
    on "go" (stdin) send query-status everywhere and read its reply and ``events``
    events on every connection."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    lines: dict[socket.socket, int] = {}

    def read_lines(want: dict[socket.socket, int]) -> None:
        pending = 0
        for sock in want:
            sel.register(sock, selectors.EVENT_READ)
            pending += 1
        while pending:
            for key, _ in sel.select(120):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("a VM closed its connection")
                want[sock] -= chunk.count(b"\n")
                if want[sock] <= 0:
                    sel.unregister(sock)
                    pending -= 1

    for i in range(start, stop):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        sock.connect(os.path.join(directory, f"vm{i:0{width}d}.sock"))
        sock.setblocking(False)
        socks.append(sock)
    read_lines(dict.fromkeys(socks, 1))  # the greetings
    for sock in socks:
        sock.sendall(b'{"execute": "qmp_capabilities"}')
    read_lines(dict.fromkeys(socks, 1))
    print("connected", flush=True)
    sys.stdin.readline()
    for sock in socks:
        sock.sendall(b'{"execute": "query-status"}')
    lines = dict.fromkeys(socks, 1 + events)
    read_lines(lines)
    print("received", flush=True)
    sys.stdin.readline()
    for sock in socks:
        sock.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class FleetRun:
    workers: int
    listening: float
    connected: float
    played: float
    rss_connected: float
    rss_played: float
    peak: float


def fleet_run(count: int, workers: int) -> FleetRun:
    """Spawn ``qmpsim fleet`` with a scenario, connect a client to every VM, play it."""
    with tempfile.TemporaryDirectory(dir=fast_dir()) as tmp:
        scenario = os.path.join(tmp, "bench-fleet.yaml")
        with open(scenario, "w") as f:
            f.write(FLEET_SCENARIO)
        vms = os.path.join(tmp, "vms")
        argv = ["fleet", "--count", str(count), "--workers", str(workers), "--dir", vms]
        start = time.perf_counter()
        proc = subprocess.Popen(
            [PY, "-m", "qmpsim", *argv, scenario],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
        )
        clients: list[subprocess.Popen[str]] = []
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            if "listening" not in line:
                raise RuntimeError(f"qmpsim fleet failed: {line}{proc.stderr.read()}")
            listening = time.perf_counter() - start
            pids = [proc.pid, *children_of(proc.pid)]
            width = len(str(count - 1))
            for first in range(0, count, CLIENTS_PER_PROCESS):
                last = min(count, first + CLIENTS_PER_PROCESS)
                role = ["fleet-clients", vms, width, first, last, FLEET_EVENTS]
                clients.append(
                    subprocess.Popen(
                        [PY, __file__, "--role", *map(str, role)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=ENV,
                    )
                )

            def all_say(word: str) -> None:
                for client in clients:
                    assert client.stdout is not None
                    answer = client.stdout.readline()
                    if answer.strip() != word:
                        raise RuntimeError(f"a fleet client failed (expected {word!r})")

            def tell_all() -> None:
                for client in clients:
                    assert client.stdin is not None
                    client.stdin.write("\n")
                    client.stdin.flush()

            all_say("connected")
            connected = time.perf_counter() - start
            rss_connected = sum(rss_mb(pid)[0] for pid in pids)
            go = time.perf_counter()
            tell_all()
            all_say("received")
            played = time.perf_counter() - go
            rss_played = sum(rss_mb(pid)[0] for pid in pids)
            peak = sum(rss_mb(pid)[1] for pid in pids)
            tell_all()
            for client in clients:
                client.wait(60)
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
            stop(proc)
    return FleetRun(workers, listening, connected, played, rss_connected, rss_played, peak)


def fewest_workers(count: int, hard: int | None) -> int:
    """The fewest workers whose file descriptor limits hold ``count`` connected VMs."""
    from qmpsim.runtime.fleet import FD_HEADROOM, FD_PER_VM

    if hard is None:
        return 1
    return max(1, -(-count // ((hard - FD_HEADROOM) // FD_PER_VM)))


def bench_fleet(table: Table, counts: Sequence[int], qemu_rss: float) -> None:
    import resource

    rows = table.section(
        f"fleet: N VMs, a client connected to each, each receiving the {FLEET_EVENTS} events "
        "of a scenario"
    )
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = None if hard_limit == resource.RLIM_INFINITY else hard_limit
    for n in counts:
        workers = max(fewest_workers(n, hard), min(2, os.cpu_count() or 1))
        say(f"fleet of {n:,} over {workers} workers, {n:,} clients")
        run = fleet_run(n, workers)
        qemu_total = qemu_rss * n / 1024
        ok = run.peak <= 300  # the peak: the most the fleet held at any time
        rows.append(
            Row(
                f"N = {n:,} over {run.workers} workers: spawn to listening / "
                "all connected / every event received (s)",
                f"{run.listening:.1f} / {run.connected:.1f} / +{run.played:.1f}",
            )
        )
        rows.append(
            Row(
                f"N = {n:,}: total RSS of all workers, all connected / played (MB)",
                f"{run.rss_connected:.0f} / {run.rss_played:.0f} (peak {run.peak:.0f})",
                f"~{qemu_total:,.0f} GB",
                f"{qemu_total * 1024 / run.rss_played:,.0f}x smaller",
                "<= 300 MB" if n == 10_000 else "",
                verdict(ok) if n == 10_000 else "",
            )
        )
        rows.append(
            Row(
                f"N = {n:,}: RSS per connected VM (KB)",
                f"{run.rss_played * 1024 / n:.1f}",
                f"{qemu_rss * 1024:,.0f}",
            )
        )


# --- 4. strategy speed ---------------------------------------------------------------------


def _draw(counts: list[int], examples: int) -> float:
    """Draw ``examples`` event streams; seconds taken (``counts``: streams, events)."""
    from hypothesis import HealthCheck, Phase, given, settings

    from qmpsim.testing.strategies import event_streams

    @settings(
        max_examples=examples,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(event_streams())
    def draw(stream: list[dict[str, Any]]) -> None:
        counts[0] += 1
        counts[1] += len(stream)

    start = time.perf_counter()
    draw()
    return time.perf_counter() - start


def bench_strategies(table: Table, runs: int, examples: int) -> None:
    rows = table.section("Hypothesis strategies")
    try:
        import qmpsim.testing.strategies  # noqa: F401
    except ImportError as exc:
        rows.append(Row("event_streams()", f"skipped: {exc}"))
        return
    say("strategies")
    rates, event_rates = [], []
    for _ in range(runs):
        counts = [0, 0]
        elapsed = _draw(counts, examples)
        rates.append(counts[0] / elapsed)
        event_rates.append(counts[1] / elapsed)
    rows.append(
        Row(
            "event_streams() drawn per second",
            Stat(rates).show("{:,.0f}"),
            "",
            f"{Stat(event_rates).median:,.0f} events/s",
            "",
            "",
        )
    )


def bench_generate(table: Table, runs: int, count: int = 10_000) -> None:
    """``qmpsim generate --count N`` as a user runs it: the whole process, start-up included.

    The CPU time is shown beside the wall time: on a busy machine only the first grows.
    """
    import resource

    rows = table.section("qmpsim generate (the seeded walk, no Hypothesis)")
    say(f"generate --count {count}")
    wall, cpu = [], []
    for seed in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [PY, "-m", "qmpsim", "generate", "--seed", str(seed), "--count", str(count)],
            stdout=subprocess.DEVNULL,
            check=True,
            env=ENV,
        )
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    for what, took in (("wall", Stat(wall)), ("CPU", Stat(cpu))):
        rows.append(
            Row(
                f"`qmpsim generate --count {count:,}` ({what} s)",
                took.show("{:.2f}"),
                "",
                f"{count / took.median:,.0f} events/s",
                "<= 2 s",
                verdict(took.median <= 2.0),
            )
        )


# --- 5. cost growth --------------------------------------------------------------------------


def play(events: int, clients: int, measure_memory: bool) -> tuple[float, float]:
    """Play a scenario of ``events`` events to ``clients`` in-memory clients: seconds, peak MB."""
    import trio
    import trio.testing

    from qmpsim.runtime.engine import ScenarioRunner
    from qmpsim.runtime.server import Simulator
    from qmpsim.scenario.loader import loads_scenario

    scenario = loads_scenario(
        f"""
clock: startup
steps:
  - repeat: {events // 2}
    steps:
      - emit: STOP
      - emit: RESUME
"""
    )

    async def reader(stream: trio.abc.Stream, want: int, done: Callable[[], None]) -> None:
        lines = 0
        await stream.send_all(b'{"execute": "qmp_capabilities"}{"execute": "query-status"}')
        while lines < want:
            data = await stream.receive_some()
            lines += bytes(data).count(b"\n")
        done()

    async def main() -> float:
        sim = Simulator(multi_client=True, max_output_buffer=1 << 30)
        async with sim, trio.open_nursery() as nursery:
            finished = trio.Semaphore(0)
            for _ in range(clients):
                client, server = trio.testing.memory_stream_pair()
                nursery.start_soon(sim.handle_stream, server)
                nursery.start_soon(reader, client, events + 3, finished.release)
            for _ in range(clients):
                await sim.wait_for_command("query-status")
            start = time.perf_counter()
            runner = ScenarioRunner(sim, scenario)
            nursery.start_soon(runner.run)
            for _ in range(clients):
                await finished.acquire()
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
        return elapsed

    gc.collect()
    if measure_memory:
        tracemalloc.start()
        trio.run(main)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        return 0.0, peak
    return trio.run(main), 0.0


def bench_growth(table: Table, events_steps: Sequence[int], client_steps: Sequence[int]) -> None:
    rows = table.section("cost growth, in process (time; peak traced memory)")
    say("cost growth")
    last: tuple[float, float] | None = None
    for n in events_steps:
        seconds, _ = play(n, 1, False)
        _, peak = play(n, 1, True)
        growth = "" if last is None else f"x{seconds / last[0]:.2f} time, x{peak / last[1]:.2f} mem"
        rows.append(
            Row(
                f"{n:,} events, 1 client",
                f"{seconds * 1000:.0f} ms; {peak:.1f} MB",
                "",
                growth,
                "",
                "",
            )
        )
        last = (seconds, peak)
    last = None
    fixed = 2000
    for c in client_steps:
        seconds, _ = play(fixed, c, False)
        _, peak = play(fixed, c, True)
        growth = "" if last is None else f"x{seconds / last[0]:.2f} time, x{peak / last[1]:.2f} mem"
        rows.append(
            Row(
                f"{fixed:,} events, {c} client{'s' if c > 1 else ''}",
                f"{seconds * 1000:.0f} ms; {peak:.1f} MB",
                "",
                growth,
                "",
                "",
            )
        )
        last = (seconds, peak)


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, a smaller fleet")
    parser.add_argument("--fleet", default=None, help="fleet sizes, comma-separated")
    parser.add_argument(
        "--only",
        default=None,
        help="sections: greeting,throughput,fleet,strategies,growth,dropin",
    )
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        role, *rest = args.role
        if role == "events":
            role_events(rest[0], int(rest[1]), int(rest[2]))
            return 0
        if role == "fleet-clients":
            width, first, last, events = map(int, rest[1:])
            role_fleet_clients(rest[0], width, first, last, events)
            return 0
        parser.error(f"unknown role {role}")
    if shutil.which(QEMU) is None:
        print(f"bench: {QEMU} is not installed (make qemu)", file=sys.stderr)
        return 1
    runs = 3 if args.quick else 15
    fleet = [int(n) for n in (args.fleet or ("1000" if args.quick else "10000,50000")).split(",")]
    only = set((args.only or "greeting,throughput,fleet,strategies,growth,dropin").split(","))
    table = Table()
    qemu_rss = 32.0
    if "greeting" in only:
        bench_greeting(table, runs)
        qemu_rss = float(table.sections[-1][1][-1].qemu.split()[0])
    if "throughput" in only:
        bench_throughput(table, 3 if args.quick else 5, 20_000 if args.quick else 200_000)
    if "fleet" in only:
        bench_fleet(table, fleet, qemu_rss)
    if "strategies" in only:
        bench_strategies(table, 3, 50 if args.quick else 200)
        bench_generate(table, 3 if args.quick else 5)
    if "dropin" in only:
        from dropin import bench_dropin

        bench_dropin(table, runs, Stat, Row)
    if "growth" in only:
        doublings = [1000, 2000, 4000] if args.quick else [2000, 4000, 8000, 16000, 32000]
        clients = [1, 2, 4] if args.quick else [1, 2, 4, 8, 16, 32, 64]
        bench_growth(table, doublings, clients)
    print(
        f"qmpsim benchmarks ({os.cpu_count()} cores, Python {sys.version.split()[0]}); "
        "median (min..max)"
    )
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
