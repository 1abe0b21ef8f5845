"""The drop-in QEMU's benchmarks, side by side with the real one (``bench/run.py --only dropin``).

- exec to greeting: the process started with libvirt's own command line for a small
  domain (tests/data/libvirt-cmdline-qemu-7.2.json), its monitor an inherited
  listening socket as libvirt passes it; the time from spawn to the greeting read;
- memory per simulated domain: the drop-in's RSS and PSS (its share of pages it has
  in common with other processes) once the monitor is negotiated;
- ``virsh start`` to ``running``: a private libvirtd (tests/libvirt_harness.py, as
  root) starts the same domain with either emulator, the probe already cached.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CMDLINE = ROOT / "tests" / "data" / "libvirt-cmdline-qemu-7.2.json"
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"  # libvirt wants a path
DROPIN = str(Path(sys.executable).parent / "qmpsim-system-x86_64")
# The master key file libvirt writes for the domain (QEMU opens it).
MASTER_KEY = "/var/lib/libvirt/qemu/domain-1-vm1/master-key.aes"


def _libvirt_args(tmp: str, fd: int) -> list[str]:
    disk = os.path.join(tmp, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    key = os.path.join(tmp, "master-key.aes")
    with open(key, "wb") as f:
        f.write(b"0" * 32)
    args: list[str] = json.loads(CMDLINE.read_text())
    return [
        a.replace('"DISK"', json.dumps(disk)).replace("fd=24", f"fd={fd}").replace(MASTER_KEY, key)
        for a in args
    ]


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MB."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for row in f:
            key, _, rest = row.partition(":")
            if key in ("Rss", "Pss"):
                values[key] = int(rest.split()[0]) / 1024
    return values["Rss"], values["Pss"]


def exec_to_greeting(program: str, runs: int) -> tuple[list[float], list[tuple[float, float]]]:
    """Start ``program`` with libvirt's command line ``runs`` times (plus one warm-up):
    milliseconds from spawn to greeting, and memory once negotiated."""
    times: list[float] = []
    memory: list[tuple[float, float]] = []
    for i in range(-1, runs):
        with tempfile.TemporaryDirectory(
            dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        ) as tmp:
            path = os.path.join(tmp, "monitor.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(1)
            args = _libvirt_args(tmp, listener.fileno())
            env = {**os.environ, "QMPSIM_RUN_DIR": tmp, "QMPSIM_CONFIG_DIR": tmp}
            start = time.perf_counter()
            proc = subprocess.Popen(
                [program, *args],
                pass_fds=[listener.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(30)
                    sock.connect(path)
                    reader = sock.makefile("rb")
                    reader.readline()
                    elapsed = (time.perf_counter() - start) * 1000
                    sock.sendall(b'{"execute": "qmp_capabilities"}')
                    reader.readline()
                    if i >= 0:
                        times.append(elapsed)
                        memory.append(_memory_mb(proc.pid))
                    reader.close()
            finally:
                proc.terminate()
                proc.wait(10)
                listener.close()
    return times, memory


def virsh_start(emulator: str, runs: int) -> list[float] | str:
    """Seconds of ``virsh start`` with ``emulator``, or why it could not be measured."""
    if os.geteuid() != 0 or shutil.which("libvirtd") is None:
        return "needs root and libvirt (make libvirt)"
    sys.path.insert(0, str(ROOT / "tests"))
    from libvirt_harness import Libvirtd, domain_xml

    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Libvirtd(Path(tmp) / "libvirt")
        try:
            daemon.start()
            disk = Path(tmp) / "vm1.raw"
            disk.write_bytes(bytes(1 << 20))
            (Path(tmp) / "vm1.xml").write_text(domain_xml("vm1", emulator, disk))
            defined = daemon.virsh("define", str(Path(tmp) / "vm1.xml"), check=False)
            if defined.returncode != 0:  # libvirt probes the emulator when it defines
                return f"define fails: {defined.stderr.strip().splitlines()[-1]}"
            for i in range(-1, runs):  # the first start probes the emulator: not counted
                began = time.perf_counter()
                done = daemon.virsh("start", "vm1", check=False)
                elapsed = time.perf_counter() - began
                if done.returncode != 0:
                    return f"fails: {done.stderr.strip().splitlines()[-1]}"
                if daemon.domstate("vm1") != "running (booted)":
                    return f"not running after start: {daemon.domstate('vm1')}"
                if i >= 0:
                    out.append(elapsed)
                daemon.virsh("destroy", "vm1")
        finally:
            daemon.teardown()
    return out


def bench_dropin(table: Any, runs: int, stat: Callable[[list[float]], Any], row: Any) -> None:
    """Add the drop-in's section to ``table`` (bench/run.py's Table, Stat and Row)."""
    rows = table.section("drop-in QEMU: libvirt's command line and `virsh start`")
    print("bench: drop-in: exec to greeting", file=sys.stderr, flush=True)
    q_times, q_mem = exec_to_greeting(QEMU, runs)
    d_times, d_mem = exec_to_greeting(DROPIN, runs)
    q, d = stat(q_times), stat(d_times)
    rows.append(
        row(
            "exec to greeting, libvirt's command line (ms)",
            d.show(),
            q.show(),
            f"{d.median / q.median:.1f}x QEMU",
            "",
            "",
        )
    )
    rss, pss = stat([m[0] for m in d_mem]), stat([m[1] for m in d_mem])
    q_rss = stat([m[0] for m in q_mem])
    rows.append(
        row(
            "memory per simulated domain: RSS / PSS (MB)",
            f"{rss.show()} / {pss.show()}",
            q_rss.show(),
            f"{rss.median / q_rss.median:.1f}x",
            "<= 40 MB",
            "yes" if rss.median <= 40 else "NO",
        )
    )
    print("bench: drop-in: virsh start", file=sys.stderr, flush=True)
    real = virsh_start(QEMU, runs)
    ours = virsh_start(DROPIN, runs)
    if isinstance(real, str) or isinstance(ours, str):
        why = real if isinstance(real, str) else ours
        rows.append(row("`virsh start` to running (s)", str(why), "", "", "<= QEMU", "n/a"))
        return
    r, o = stat(real), stat(ours)
    rows.append(
        row(
            "`virsh start` to running (s)",
            o.show("{:.2f}"),
            r.show("{:.2f}"),
            f"{o.median / r.median:.2f}x QEMU",
            "<= QEMU",
            "yes" if o.median <= r.median else "NO",
        )
    )
