#!/usr/bin/env python3
"""Record libvirt's capability probe of a real QEMU, as JSON lines.

    tools/record_libvirt_probe.py [--qemu /usr/bin/qemu-system-x86_64] OUT.jsonl

Runs Debian's libvirtd privately (as root): in a new mount namespace, empty
directories are mounted over libvirt's fixed configuration and state directories
(/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
/var/log/libvirt), a minimal qemu.conf and libvirtd.conf are written there with
monitor logging on, and ``virsh domcapabilities`` makes libvirtd probe the QEMU.
The monitor traffic of the first probe pass is read back from libvirtd's log.

OUT gets one JSON object a line: first ``{"greeting": …}``, then one
``{"request": …, "reply": …}`` per command, in the order libvirt sent them, each
value exactly as parsed from the bytes on the wire.  Nothing on the machine
changes outside the namespace; the user ``libvirt-qemu`` must exist (libvirt's
QEMU driver refuses to load without it).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PRIVATE_DIRS = (
    "/etc/libvirt",
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/cache/libvirt",
    "/var/log/libvirt",
)
LOG = "/var/log/libvirt/monitor.log"

QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
"""

LIBVIRTD_CONF = f"""\
auth_unix_rw = "none"
auth_unix_ro = "none"
log_filters = "1:qemu.qemu_monitor 1:qemu.qemu_monitor_json 3:*"
log_outputs = "1:file:{LOG}"
"""

# What libvirt logs of the monitor: each message it writes (the buffer, "\r\n" included),
# each line it reads (the greeting only as a debug line), and each reply.
_WRITE = re.compile(r"QEMU_MONITOR_IO_WRITE: mon=(0x[0-9a-f]+) buf=(.*)$")
_REPLY = re.compile(r"QEMU_MONITOR_RECV_REPLY: mon=(0x[0-9a-f]+) reply=(.*)$")
_GREETING = re.compile(r"qemuMonitorJSONIOProcessLine:\d+ : Line \[(\{\"QMP\".*)\]$")


def fail(message: str) -> None:
    print(f"record_libvirt_probe: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        record(args.qemu, args.out)
        return
    if os.geteuid() != 0:
        fail("must run as root (libvirtd's system instance, mounts in a private namespace)")
    for tool in ("libvirtd", "virsh", "unshare"):
        if shutil.which(tool) is None:
            fail(f"{tool} is not installed")
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        fail("the user libvirt-qemu does not exist (libvirt's QEMU driver needs it)")
    for directory in PRIVATE_DIRS:
        os.makedirs(directory, exist_ok=True)  # a mount point must exist
    command = ["unshare", "-m", "--propagation", "private", sys.executable, __file__]
    result = subprocess.run([*command, "--inside", "--qemu", args.qemu, str(args.out.resolve())])
    sys.exit(result.returncode)


def record(qemu: str, out: Path) -> None:
    """Inside the private mount namespace: run libvirtd, probe, extract."""
    for directory in PRIVATE_DIRS:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
    Path("/etc/libvirt/qemu.conf").write_text(QEMU_CONF)
    Path("/etc/libvirt/libvirtd.conf").write_text(LIBVIRTD_CONF)
    with tempfile.TemporaryDirectory(prefix="libvirt-probe-") as tmp:
        pid_file = Path(tmp) / "libvirtd.pid"
        subprocess.run(["libvirtd", "-d", "--pid-file", str(pid_file)], check=True)
        try:
            _wait_for(Path("/run/libvirt/libvirt-sock"))
            subprocess.run(
                ["virsh", "-c", "qemu:///system", "domcapabilities", "--emulatorbin", qemu],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        finally:
            if pid_file.exists():
                pid = int(pid_file.read_text())
                os.kill(pid, 15)
                _wait_gone(pid)
        lines = extract(Path(LOG).read_text(errors="replace"))
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"record_libvirt_probe: {len(lines) - 1} requests of the first probe pass in {out}")


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            fail(f"libvirtd did not create {path} within 30 s")
        time.sleep(0.05)  # polling another process's socket file


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            return
        time.sleep(0.05)  # polling another process's exit


def extract(log: str) -> list[dict[str, Any]]:
    """The first monitor's greeting and request/reply pairs, from libvirtd's log.

    The first pass of the probe is the first monitor libvirt writes to; a second
    pass (``accel=tcg``, when KVM is there) opens another one, left out.
    """
    monitor: str | None = None
    greeting: str | None = None
    requests: list[str] = []
    replies: list[str] = []
    for line in log.split("\n"):
        if match := _WRITE.search(line):
            monitor = monitor or match.group(1)
            if match.group(1) == monitor:
                requests.append(match.group(2).rstrip("\r"))
        elif (match := _REPLY.search(line)) and match.group(1) == monitor:
            replies.append(match.group(2))
        elif (match := _GREETING.search(line)) and greeting is None:
            greeting = match.group(1)
    if greeting is None or not requests or len(requests) != len(replies):
        fail(f"{len(requests)} requests but {len(replies)} replies on the first monitor")
    pairs = zip(requests, replies, strict=True)
    return [{"greeting": json.loads(greeting)}] + [
        {"request": json.loads(request), "reply": json.loads(reply)} for request, reply in pairs
    ]


if __name__ == "__main__":
    main()
