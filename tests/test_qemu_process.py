"""The drop-in as a launcher runs it: daemonize and pidfile, inherited monitor fds,
several monitors, vCPU threads, the control socket and ``qmpsim ctl``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dropin_harness import DROPIN, ROOT, TIMEOUT, Qmp, dropin_env, running
from qemu_harness import require_qemu

BASE = ["-M", "pc", "-S", "-nodefaults", "-display", "none"]


def start_daemon(tmp: Path, *args: str, name: str = "d1") -> tuple[int, Path]:
    """Start a daemonized drop-in; its pid (from the pidfile) and its monitor's path."""
    qmp = tmp / "qmp.sock"
    pidfile = tmp / "qemu.pid"
    done = subprocess.run(
        [
            *DROPIN,
            *BASE,
            "-name",
            f"guest={name}",
            "-qmp",
            f"unix:{qmp},server=on,wait=off",
            "-pidfile",
            str(pidfile),
            "-daemonize",
            *args,
        ],
        env=dropin_env(tmp),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return int(pidfile.read_text()), qmp


def ctl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qmpsim", "ctl", "--run-dir", str(tmp / "run"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )


def test_daemonize_returns_once_the_monitor_listens_and_the_pidfile_names_the_daemon(
    tmp_path: Path,
) -> None:
    pid, path = start_daemon(tmp_path)
    assert (tmp_path / "qemu.pid").read_text() == f"{pid}\n"
    with Qmp(path) as qmp:  # no waiting: the parent exited only once it listened
        assert qmp.execute("query-status")["return"]["status"] == "prelaunch"
        # a session of its own, and no session leader (it forked again after setsid)
        assert os.getsid(pid) not in (os.getsid(0), pid)
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        os.kill(pid, signal.SIGTERM)
        (event,) = qmp.rest()
    assert event["event"] == "SHUTDOWN"
    assert event["data"] == {"guest": False, "reason": "host-signal"}
    # the daemon removes its pidfile and socket on the way out; the pidfile goes last
    while (tmp_path / "qemu.pid").exists():
        os.sched_yield()
    assert not path.exists()


START_FAILURES = [
    ["-qmp", "unix:/nonexistent/dir/x.sock,server=on,wait=off"],
    ["-pidfile", "/nonexistent/x.pid"],
    ["-chardev", "socket,id=c,fd=99,server=on,wait=off", "-mon", "chardev=c,mode=control"],
]


@pytest.mark.qemu
@pytest.mark.parametrize("daemonize", [False, True])
@pytest.mark.parametrize("args", START_FAILURES, ids=[a[0] for a in START_FAILURES])
def test_a_vm_that_cannot_start_fails_as_qemu_does(
    tmp_path: Path, args: list[str], daemonize: bool
) -> None:
    # With -daemonize the daemon reports the error and the waiting parent exits 1.
    extra = ["-daemonize"] if daemonize else []
    outcomes = []
    for program in ([require_qemu()], DROPIN):
        done = subprocess.run(
            [*program, *BASE, *args, *extra],
            env=dropin_env(tmp_path),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        outcomes.append((done.returncode, done.stderr))
    assert outcomes[1] == outcomes[0]
    assert outcomes[0][0] == 1


def test_an_inherited_listening_socket_is_the_monitor(tmp_path: Path) -> None:
    # libvirt binds and listens itself, then passes the fd: the emulator binds nothing
    path = tmp_path / "monitor.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    fd = listener.fileno()
    args = [
        *BASE,
        "-chardev",
        f"socket,id=charmonitor,fd={fd},server=on,wait=off",
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
    ]
    with running([*DROPIN, *args], env=dropin_env(tmp_path), pass_fds=[fd]) as proc:
        listener.close()
        with Qmp(path) as qmp:
            assert qmp.greeting["QMP"]["version"]["qemu"]["major"] == 7
            assert qmp.execute("cont") == {"return": {}}
            assert [e["event"] for e in qmp.events] == ["RESUME"]
        with Qmp(path) as again:  # the monitor takes a new client after the last one left
            assert again.execute("query-status")["return"]["status"] == "running"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
    assert path.exists()  # not ours to remove: the launcher made it


def test_several_monitors_serve_a_client_each_at_once(tmp_path: Path) -> None:
    second = tmp_path / "second.sock"
    pid, first = start_daemon(tmp_path, "-qmp", f"unix:{second},server=on,wait=off")
    try:
        with Qmp(first) as one, Qmp(second) as two:
            assert one.execute("cont") == {"return": {}}
            assert two.execute("query-status")["return"]["status"] == "running"
            assert [e["event"] for e in two.events] == ["RESUME"]
    finally:
        os.kill(pid, signal.SIGKILL)


def test_one_thread_per_vcpu(tmp_path: Path) -> None:
    pid, path = start_daemon(tmp_path, "-smp", "3")
    try:
        with Qmp(path):
            threads = os.listdir(f"/proc/{pid}/task")
        names = [Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in threads]
        assert len(threads) >= 4, names  # the main thread and three vCPUs
    finally:
        os.kill(pid, signal.SIGKILL)


def test_ctl_drives_a_running_vm_by_its_guest_name(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(4096))
    pid, path = start_daemon(
        tmp_path,
        "-drive",
        f"file={disk},format=raw,if=none,id=drive-virtio-disk0,werror=stop,rerror=stop",
        "-device",
        "virtio-blk-pci,drive=drive-virtio-disk0,id=virtio-disk0",
        name="vm1",
    )
    try:
        assert ctl(tmp_path, "--list").stdout == "vm1\n"
        with Qmp(path) as qmp:
            qmp.execute("cont")
            done = ctl(tmp_path, "vm1", "cause", "disk-error", "device=drive-virtio-disk0")
            assert (done.returncode, done.stderr) == (0, "")
            status = qmp.execute("query-status")["return"]["status"]
            events = [e["event"] for e in qmp.events]
        assert (status, events) == ("io-error", ["RESUME", "BLOCK_IO_ERROR", "STOP"])
        assert '"status": "io-error"' in ctl(tmp_path, "vm1", "status").stdout
        transcript = ctl(tmp_path, "vm1", "transcript").stdout
        assert '"BLOCK_IO_ERROR"' in transcript
        missing = ctl(tmp_path, "vm1", "cause", "disk-error", "device=vdz")
        assert missing.returncode == 1 and "no disk named 'vdz'" in missing.stderr
    finally:
        os.kill(pid, signal.SIGKILL)
    gone = ctl(tmp_path, "nosuch", "status")
    assert gone.returncode == 1
    assert gone.stderr.startswith("qmpsim ctl: no running VM named 'nosuch'")
