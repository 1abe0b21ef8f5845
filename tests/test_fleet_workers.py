"""``qmpsim fleet`` over worker processes, and the file descriptors a connected fleet needs.

The limits are exercised with small numbers: each fleet runs in a subprocess whose
RLIMIT_NOFILE is lowered first, so no test needs thousands of descriptors.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qmpsim.runtime.fleet import (
    FD_HEADROOM,
    FleetLimitError,
    check_fd_limit,
    fds_needed,
    split_fleet,
)

ROOT = Path(__file__).resolve().parent.parent
QMPSIM = [sys.executable, "-m", "qmpsim"]
TIMEOUT = 30

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def limited(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the child runs with these file descriptor limits."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start(args: list[str], **options: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*QMPSIM, "fleet", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **options,  # type: ignore[call-overload]
    )


def wait_listening(proc: subprocess.Popen[str]) -> str:
    """Read the fleet's stderr up to its readiness line (no polling)."""
    assert proc.stderr is not None
    seen = []
    while line := proc.stderr.readline():
        seen.append(line)
        if " listening on " in line:
            return line
    raise AssertionError(f"the fleet did not start: {''.join(seen)}")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=TIMEOUT)
    return err


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Iterator[Path]:
    # A short path: Unix socket paths are limited to 107 bytes.
    yield tmp_path


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (of any of its threads: trio spawns from one)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.extend(int(p) for p in f.read().split())
    return sorted(found)


def wait_gone(pids: list[int]) -> None:
    """Wait, without polling, until processes that are not our children have exited."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
            assert ready, f"process {pid} is still running"
        finally:
            os.close(fd)


def greet(path: Path) -> tuple[int, dict[str, object]]:
    """Connect: the serving process's pid, and the VM's name (query-name)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
        reader = sock.makefile("rb")
        assert "QMP" in json.loads(reader.readline())
        sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-name"}')
        assert json.loads(reader.readline()) == {"return": {}}
        name = json.loads(reader.readline())["return"]
        reader.close()
    return pid, name


def control(path: Path, *requests: dict[str, object]) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        reader.readline()  # the greeting
        sock.sendall(b'{"execute": "qmp_capabilities"}')
        assert json.loads(reader.readline()) == {"return": {}}
        replies = []
        for request in requests:
            sock.sendall(json.dumps(request).encode())
            replies.append(json.loads(reader.readline()))
        reader.close()
    return replies


# --- the arithmetic --------------------------------------------------------------------


def test_a_connected_fleet_reserves_a_listener_and_a_client_per_vm() -> None:
    assert fds_needed(5000) == 5000 * 2 + FD_HEADROOM == 10_256
    check_fd_limit(10_000, 2, hard=20_000)  # 5,000 VMs a worker: 10,256 each
    check_fd_limit(1_000_000, 2, hard=None)  # no hard limit
    with pytest.raises(FleetLimitError) as refused:
        check_fd_limit(10_000, 1, hard=20_000)
    assert str(refused.value) == (
        "10000 VMs need 20256 file descriptors in one process (a listener and a client "
        "per VM, plus 256) but the hard limit is 20000: raise it (ulimit -Hn, LimitNOFILE=) "
        "or use --workers 2 or more (each worker has its own limit)"
    )
    # 9,872 VMs fit under 20,000: 50,000 need six workers; the busiest worker counts.
    with pytest.raises(FleetLimitError, match=r"in each of 5 workers .* --workers 6 or more"):
        check_fd_limit(50_000, 5, hard=20_000)
    check_fd_limit(50_000, 6, hard=20_000)
    with pytest.raises(FleetLimitError, match="it must be above 258"):
        check_fd_limit(1, 1, hard=200)


def test_the_vms_are_split_in_contiguous_ranges() -> None:
    assert split_fleet(10, 3) == [range(0, 4), range(4, 7), range(7, 10)]
    assert split_fleet(2, 8) == [range(0, 1), range(1, 2)]  # never an empty worker
    assert split_fleet(5, 1) == [range(0, 5)]


# --- refusals, each in one line ---------------------------------------------------------


def test_a_fleet_the_hard_limit_cannot_hold_is_refused_in_one_line(fleet_dir: Path) -> None:
    done = subprocess.run(
        [*QMPSIM, "fleet", "--count", "200", "--workers", "1", "--dir", str(fleet_dir / "f")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        preexec_fn=limited(600, 600),
    )
    assert done.returncode == 1
    assert done.stderr == (
        "qmpsim fleet: 200 VMs need 656 file descriptors in one process (a listener and a "
        "client per VM, plus 256) but the hard limit is 600: raise it (ulimit -Hn, "
        "LimitNOFILE=) or use --workers 2 or more (each worker has its own limit)\n"
    )
    assert not (fleet_dir / "f").exists()  # refused before anything was made


def test_a_million_vms_are_refused_at_once(fleet_dir: Path) -> None:
    # It used to build every VM first (a minute), then fail with a 44-line traceback.
    done = subprocess.run(
        [*QMPSIM, "fleet", "--count", "1000000", "--workers", "2", "--dir", str(fleet_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        preexec_fn=limited(4096, 4096),
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "1000000 VMs need 1000256 file descriptors in each of 2 workers" in done.stderr
    assert "--workers 521 or more" in done.stderr


def test_bad_worker_counts_and_a_file_for_dir_are_usage_errors(fleet_dir: Path) -> None:
    (fleet_dir / "file").write_text("")
    for args, message in (
        (["--workers", "0", "--dir", str(fleet_dir)], "--workers must be at least 1"),
        (["--transcript", "-1", "--dir", str(fleet_dir)], "--transcript must be a number"),
        (["--dir", str(fleet_dir / "file")], f"--dir {fleet_dir / 'file'}: exists and is not"),
    ):
        done = subprocess.run(
            [*QMPSIM, "fleet", "--count", "2", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=ROOT,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_a_socket_in_a_workers_way_is_refused_in_one_line(
    fleet_dir: Path, reap: list[subprocess.Popen[str]]
) -> None:
    (fleet_dir / "vm3.sock").write_text("not a socket")
    proc = start(["--count", "4", "--workers", "2", "--dir", str(fleet_dir)])
    reap.append(proc)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    assert err == (
        f"qmpsim fleet: refusing to replace {fleet_dir}/vm3.sock: it exists and is not a socket\n"
    )
    assert os.listdir(fleet_dir) == ["vm3.sock"]


# --- the reservation holds --------------------------------------------------------------


def test_every_vm_gets_its_client_under_a_lowered_soft_limit(
    fleet_dir: Path, reap: list[subprocess.Popen[str]]
) -> None:
    # 300 VMs, each with a client, need 856 descriptors; the soft limit starts at 64
    # and the fleet raises it.  Reserving for the listeners alone (556) left the
    # later VMs without a greeting (EMFILE, "retrying shortly" forever).
    proc = start(
        ["--count", "300", "--workers", "1", "--dir", str(fleet_dir)],
        preexec_fn=limited(64, 1024),
    )
    reap.append(proc)
    wait_listening(proc)
    clients = []
    try:
        for i in range(300):
            sock = socket.socket(socket.AF_UNIX)
            clients.append(sock)
            sock.settimeout(TIMEOUT)
            sock.connect(str(fleet_dir / f"vm{i:03d}.sock"))
        for sock in clients:
            assert b'{"QMP": ' in sock.recv(4096)
    finally:
        for sock in clients:
            sock.close()
    assert stop(proc).count("accept failed") == 0
    assert proc.returncode == 0


# --- workers --------------------------------------------------------------------------


def test_workers_share_the_fleet_and_one_control_socket_reaches_every_vm(
    fleet_dir: Path, reap: list[subprocess.Popen[str]]
) -> None:
    ctl = fleet_dir / "ctl"
    vms = fleet_dir / "vms"
    proc = start(["--count", "6", "--workers", "2", "--dir", str(vms), "--control", str(ctl)])
    reap.append(proc)
    line = wait_listening(proc)
    assert "fleet of 6 VMs (idle VMs) over 2 workers listening on" in line
    (worker,) = children(proc.pid)
    served_by = {}
    for i in range(6):
        pid, name = greet(vms / f"vm{i}.sock")
        assert name == {"name": f"vm{i}"}
        served_by[i] = pid
    assert served_by == {0: proc.pid, 1: proc.pid, 2: proc.pid, 3: worker, 4: worker, 5: worker}

    with socket.socket(socket.AF_UNIX) as watcher:
        watcher.settimeout(TIMEOUT)
        watcher.connect(str(vms / "vm4.sock"))
        reader = watcher.makefile("rb")
        reader.readline()
        watcher.sendall(b'{"execute": "qmp_capabilities"}')
        assert json.loads(reader.readline()) == {"return": {}}
        listing, emitted, status, unknown = control(
            ctl,
            {"execute": "qmpsim-fleet"},
            {"execute": "qmpsim-emit", "arguments": {"vm": "vm4", "event": "POWERDOWN"}},
            {"execute": "qmpsim-status", "arguments": {"vm": "vm4"}, "id": 9},
            {"execute": "qmpsim-status", "arguments": {"vm": "vm6"}},
        )
        assert json.loads(reader.readline())["event"] == "POWERDOWN"
        reader.close()
    assert [vm["name"] for vm in listing["return"]] == [f"vm{i}" for i in range(6)]  # type: ignore[index]
    assert emitted == {"return": {}}
    assert status["id"] == 9 and status["return"]["clients"] == [2]  # type: ignore[index]
    assert unknown == {
        "error": {"class": "GenericError", "desc": "no VM named 'vm6' in the fleet (vm0..vm5)"}
    }

    err = stop(proc)
    assert proc.returncode == 0, err
    wait_gone([worker])
    assert os.listdir(vms) == [] and not ctl.exists()


def test_a_worker_that_dies_is_reported_and_stops_the_fleet(
    fleet_dir: Path, reap: list[subprocess.Popen[str]]
) -> None:
    proc = start(["--count", "4", "--workers", "2", "--dir", str(fleet_dir)])
    reap.append(proc)
    wait_listening(proc)
    (worker,) = children(proc.pid)
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    assert err == "qmpsim fleet: worker 1 (vm2..vm3) was killed by SIGKILL\n"
    assert os.listdir(fleet_dir) == []  # its sockets too, which it could not remove


def test_ctrl_c_stops_every_worker_and_removes_every_socket(
    fleet_dir: Path, reap: list[subprocess.Popen[str]]
) -> None:
    # As a terminal does: SIGINT to the whole foreground process group.
    proc = start(
        ["--count", "6", "--workers", "3", "--dir", str(fleet_dir)], start_new_session=True
    )
    reap.append(proc)
    wait_listening(proc)
    workers = children(proc.pid)
    assert len(workers) == 2
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    assert err == "qmpsim: SIGINT, stopping\n"
    wait_gone(workers)
    assert os.listdir(fleet_dir) == []


def test_workers_stop_when_the_fleet_process_is_killed(
    fleet_dir: Path, reap: list[subprocess.Popen[str]]
) -> None:
    proc = start(["--count", "4", "--workers", "2", "--dir", str(fleet_dir)])
    reap.append(proc)
    wait_listening(proc)
    workers = children(proc.pid)
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    wait_gone(workers)  # the end of its channel tells each worker
    # The killed process could not remove its own two; the worker removed its two.
    assert sorted(os.listdir(fleet_dir)) == ["vm0.sock", "vm1.sock"]


def test_dir_is_created_like_mkdir_p(fleet_dir: Path, reap: list[subprocess.Popen[str]]) -> None:
    where = fleet_dir / "a" / "b"
    proc = start(["--count", "2", "--workers", "1", "--dir", str(where)])
    reap.append(proc)
    wait_listening(proc)
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o700  # it holds monitor sockets
    stop(proc)
    assert proc.returncode == 0 and os.listdir(where) == []


def test_the_refusal_shown_in_the_docs_is_the_one_printed() -> None:
    docs = (ROOT / "docs" / "performance.md").read_text()
    (shown,) = (line.strip() for line in docs.splitlines() if "qmpsim fleet: 30000 VMs" in line)
    with pytest.raises(FleetLimitError) as refused:
        check_fd_limit(30_000, 2, hard=20_000)
    assert shown == f"qmpsim fleet: {refused.value}"
