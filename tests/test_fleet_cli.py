"""``qmpsim fleet`` as a user runs it: a subprocess, its readiness line, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QMPSIM = [sys.executable, "-m", "qmpsim"]
TIMEOUT = 20


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qf-") as tmp:
        yield Path(tmp)


def greeting_and_name(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        greeting = json.loads(reader.readline())
        sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-name"}')
        assert json.loads(reader.readline()) == {"return": {}}
        name = json.loads(reader.readline())
        reader.close()
    return greeting, name


def test_fleet_serves_every_vm_and_cleans_up_on_sigterm(sock_dir: Path) -> None:
    proc = subprocess.Popen(
        [*QMPSIM, "fleet", "--count", "25", "--workers", "1", "--prefix", "db", "--dir", sock_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the readiness signal: no polling
        assert "fleet of 25 VMs (idle VMs) listening on" in line, line
        assert sorted(os.listdir(sock_dir)) == [f"db{i:02d}.sock" for i in range(25)]
        for i in (0, 13, 24):
            greeting, name = greeting_and_name(sock_dir / f"db{i:02d}.sock")
            assert "QMP" in greeting
            assert name == {"return": {"name": f"db{i:02d}"}}
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    assert "SIGTERM, stopping" in err
    assert os.listdir(sock_dir) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count must be at least 1"),
        (["--count", "2", "--speed", "0"], "--speed must be a positive number"),
        (["--count", "2", "--prefix", "a/b"], "--prefix must not contain '/'"),
    ],
)
def test_bad_arguments_exit_2(sock_dir: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [*QMPSIM, "fleet", "--dir", str(sock_dir), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_a_bad_scenario_is_refused_before_anything_is_made(sock_dir: Path) -> None:
    bad = sock_dir / "bad.yaml"
    bad.write_text("steps: 3\n")
    done = subprocess.run(
        [*QMPSIM, "fleet", "--count", "2", "--dir", str(sock_dir / "new"), str(bad)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert done.returncode == 1 and "bad.yaml" in done.stderr
    assert os.listdir(sock_dir) == ["bad.yaml"]  # not even --dir, which would be created
