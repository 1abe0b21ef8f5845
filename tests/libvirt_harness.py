"""A private libvirtd for tests, driven with virsh.

libvirt's directories cannot be moved by configuration, so libvirtd runs in a
mount namespace of its own (``unshare -m``, as root) with a test's directories
bound over them: ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt`` and ``/var/log/libvirt`` (an empty capability cache, so
every run probes the emulator), plus ``/etc/qmpsim`` and ``/run/qmpsim`` for the
drop-in's settings and control sockets.  The emulators libvirtd starts share that
namespace; the test reaches everything through the bound directories: virsh
through ``run/libvirt/libvirt-sock``, ``qmpsim ctl`` through ``run/qmpsim``.
Nothing outside the namespace changes but the (empty) mount points.

The configuration is the one tools/record_libvirt_probe.py uses, which records
libvirt's probe the same way.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from record_libvirt_probe import LIBVIRTD_CONF, PRIVATE_DIRS, QEMU_CONF

DROPIN_DIRS = ("/etc/qmpsim", "/run/qmpsim")
TIMEOUT = 60.0
VIRSH_TIMEOUT = 60


def require_libvirt() -> None:
    """Skip locally without root, libvirtd, virsh or the libvirt-qemu user; fail under CI."""
    missing = [tool for tool in ("libvirtd", "virsh", "unshare") if shutil.which(tool) is None]
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        missing.append("the libvirt-qemu user")
    if os.geteuid() != 0:
        missing.append("root (libvirtd's system instance, a private mount namespace)")
    if missing:
        reason = f"needs {', '.join(missing)}; `make libvirt` installs what it can"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required under CI=true)")
        pytest.skip(reason)


class Libvirtd:
    """A libvirtd of our own; its state lives under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        for directory in (*PRIVATE_DIRS, *DROPIN_DIRS):
            (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (root / "etc/libvirt/qemu.conf").write_text(QEMU_CONF + 'vnc_listen = "127.0.0.1"\n')
        (root / "etc/libvirt/libvirtd.conf").write_text(LIBVIRTD_CONF)

    def path(self, inside: str) -> Path:
        """Where a path of the namespace is, seen from outside."""
        return self.root / inside.lstrip("/")

    @property
    def socket(self) -> Path:
        return self.path("/run/libvirt/libvirt-sock")

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def run_dir(self) -> Path:
        """The drop-in's run directory: ``qmpsim ctl --run-dir`` this."""
        return self.path("/run/qmpsim")

    @property
    def settings_dir(self) -> Path:
        """The drop-in's settings directory (``/etc/qmpsim`` in the namespace)."""
        return self.path("/etc/qmpsim")

    def start(self) -> None:
        """Start libvirtd and wait until it accepts virsh."""
        mounts = []
        for directory in (*PRIVATE_DIRS, *DROPIN_DIRS):
            os.makedirs(directory, exist_ok=True)  # a mount point must exist
            mounts.append(f"mount --bind {self.path(directory)} {directory}")
        # its own pid file: the default, /run/libvirtd.pid, would keep a second one from starting
        pidfile = self.root / "libvirtd.pid"
        script = " && ".join([*mounts, f"exec libvirtd --pid-file {pidfile}"])
        log = (self.root / "libvirtd.out").open("ab")
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + TIMEOUT
        while self.virsh("version", check=False).returncode != 0:
            if self.proc.poll() is not None:
                log = self.path("/var/log/libvirt/monitor.log")
                tail = log.read_text().splitlines()[-5:] if log.exists() else []
                out = (self.root / "libvirtd.out").read_text()
                raise AssertionError(f"libvirtd exited: {out} {tail}")
            if time.monotonic() > deadline:
                raise AssertionError("libvirtd did not answer within 60 s")
            time.sleep(0.05)  # polling another process's socket

    def stop(self) -> None:
        """Stop libvirtd; its domains keep running, as they do when the service restarts."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``virsh ARGS`` against this libvirtd."""
        done = subprocess.run(
            ["virsh", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=VIRSH_TIMEOUT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
        return done

    def domstate(self, domain: str) -> str:
        """``virsh domstate --reason DOMAIN``, as a user reads it: ``paused (user)``."""
        return self.virsh("domstate", "--reason", domain).stdout.strip()

    def emulator_pids(self) -> list[int]:
        """The emulator processes libvirt runs now (from its pid files)."""
        pids = []
        for pidfile in self.path("/run/libvirt/qemu").glob("*.pid"):
            try:
                pids.append(int(pidfile.read_text()))
            except (OSError, ValueError):
                continue
        return pids

    def teardown(self) -> None:
        """Kill what is left: the domains' emulators, then libvirtd."""
        for pid in self.emulator_pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.stop()


@contextmanager
def private_libvirtd(root: Path) -> Iterator[Libvirtd]:
    """A running private libvirtd, torn down (domains included) afterwards."""
    require_libvirt()
    daemon = Libvirtd(root)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.teardown()


class EventLog:
    """``virsh event --all --loop --timestamp`` in the background: every event, a line each."""

    def __init__(self, daemon: Libvirtd, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        self.path.write_text("")
        self.proc: subprocess.Popen[str] | None = None
        self.listen()

    def listen(self) -> None:
        """(Re)start listening: after a libvirtd restart, virsh event has to reconnect."""
        self.stop()
        with self.path.open("a") as out:
            self.proc = subprocess.Popen(
                ["virsh", "-c", self.daemon.uri, "event", "--all", "--loop", "--timestamp"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def lines(self) -> list[str]:
        """The events so far, without their timestamps."""
        return [
            line.split(": ", 1)[1]
            for line in self.path.read_text().splitlines()
            if line.startswith("20") and ": event " in line
        ]

    def wait_for(self, text: str, count: int = 1) -> list[str]:
        """Wait until ``count`` event lines contain ``text``; the lines so far."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            lines = self.lines()
            if sum(text in line for line in lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"no event {text!r} within 60 s; events: {lines}")
            time.sleep(0.02)  # polling another process's output file

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(TIMEOUT)
            self.proc = None

    close = stop


DOC = Path(__file__).resolve().parent.parent / "docs" / "libvirt.md"


def domain_xml(name: str, emulator: str, disk: Path) -> str:
    """docs/libvirt.md's domain, with its name, emulator and disk image replaced: a
    virtio disk whose errors pause the guest, an i6300esb watchdog that pauses it, a
    VNC server, one vCPU, 64 MiB."""
    (xml,) = re.findall(r"^```xml\n(.*?)^```", DOC.read_text(), re.DOTALL | re.MULTILINE)
    replaced = (
        xml.replace("<name>vm1</name>", f"<name>{name}</name>")
        .replace("/usr/local/bin/qmpsim-system-x86_64", emulator)
        .replace("/var/lib/libvirt/images/vm1.raw", str(disk))
    )
    assert replaced.count(str(disk)) == 1 and replaced.count(emulator) == 1, "the doc changed"
    return replaced
