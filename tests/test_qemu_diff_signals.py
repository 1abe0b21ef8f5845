"""SIGTERM, SIGINT and SIGHUP end QEMU 7.2 with SHUTDOWN (host-signal) and exit 0, even
under ``-no-shutdown`` or ``-S``; the drop-in and ``qmpsim serve`` do the same.

QEMU and the drop-in are given the same inherited listening socket as their
monitor (as libvirt gives it), so the test connects without waiting for either.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dropin_harness import DROPIN, ROOT, TIMEOUT, Qmp, dropin_env
from qemu_harness import require_qemu

SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


def killed(
    program: list[str], tmp: Path, signum: signal.Signals, extra: list[str]
) -> tuple[list[str], list[Any], int, str]:
    """Start ``program`` on an inherited monitor, signal it; its events, exit status, stderr."""
    path = tmp / f"{len(list(tmp.iterdir()))}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    fd = listener.fileno()
    args = ["-M", "none", "-nodefaults", "-display", "none", *extra]
    args += ["-chardev", f"socket,id=mon,fd={fd},server=on,wait=off"]
    args += ["-mon", "chardev=mon,mode=control"]
    proc = subprocess.Popen(
        [*program, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=[fd],
        env=dropin_env(tmp),
    )
    listener.close()
    try:
        with Qmp(path) as qmp:
            status = qmp.execute("query-status")["return"]["status"]
            proc.send_signal(signum)
            rest = qmp.rest()
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    shape = [{k: v for k, v in m.items() if k != "timestamp"} for m in rest]
    return [status], shape, proc.returncode, err


@pytest.mark.qemu
@pytest.mark.parametrize("extra", [[], ["-no-shutdown"], ["-S"]], ids=["", "no-shutdown", "S"])
@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_host_signal_ends_the_vm_as_it_ends_qemu(
    tmp_path: Path, signum: signal.Signals, extra: list[str]
) -> None:
    real = killed([require_qemu()], tmp_path, signum, extra)
    ours = killed(DROPIN, tmp_path, signum, extra)
    assert ours == real
    _, events, status, err = real
    assert events == [{"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-signal"}}]
    assert status == 0
    assert err.startswith(f"qemu-system-x86_64: terminating on signal {signum.value} from pid ")


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
def test_serve_ends_on_a_host_signal_as_qemu_does(tmp_path: Path, signum: signal.Signals) -> None:
    path = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpsim", "serve", "--unix", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        assert "listening on" in proc.stderr.readline()
        with Qmp(path) as qmp:
            qmp.execute("query-status")
            proc.send_signal(signum)
            rest = qmp.rest()
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert [{k: v for k, v in m.items() if k != "timestamp"} for m in rest] == [
        {"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-signal"}}
    ]
    assert proc.returncode == 0
    assert f"{signum.name}, stopping" in err and "Traceback" not in err
    assert not path.exists()
