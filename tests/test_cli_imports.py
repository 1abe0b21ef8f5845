"""What ``qmpsim serve`` imports for each mode: an idle VM starts without the scenario language.

Each test runs ``qmpsim serve`` in a subprocess, talks to it until the VM quits,
and reads the modules the process had loaded when it ended.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20  # seconds; a guard against a hang, not an assertion on timing

# Runs `qmpsim serve ARGS` in this interpreter and prints, on exit, every loaded module
# and the profiles whose data was read.
PROGRAM = """\
import atexit, json, sys
def report():
    catalog = sys.modules.get("qmpsim.qmp.profiles")
    read = sorted(catalog._BODIES) if catalog else []
    print(json.dumps({"modules": sorted(sys.modules), "profiles": read}), flush=True)
atexit.register(report)
from qmpsim.cli import main
sys.exit(main(["serve", *sys.argv[1:]]))
"""

SCENARIO_LANGUAGE = {"yaml", "qmpsim.scenario.loader", "qmpsim.runtime.engine"}
NEVER = {"faker", "qmpsim.fakedata", "hypothesis", "pytest"}


def modules_of_serve(tmp_path: Path, *args: str) -> set[str]:
    """Serve ``args`` on a Unix socket, make the VM quit, return the modules loaded."""
    return set(serve_and_quit(tmp_path, *args)["modules"])


def serve_and_quit(tmp_path: Path, *args: str) -> dict[str, list[str]]:
    """Serve ``args``, make the VM quit: the modules loaded and the profiles read."""
    path = str(tmp_path / "qmp.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, "--unix", path, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        wanted = "control channel on" if "--control" in args else "listening on"
        while wanted not in (line := proc.stderr.readline()):
            assert line, "qmpsim serve ended before it was ready"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            reader = sock.makefile("rb")
            assert "QMP" in json.loads(reader.readline())
            sock.sendall(b'{"execute": "qmp_capabilities"}{"execute": "quit"}')
            replies = 0
            while replies < 2:  # to qmp_capabilities and to quit; events in between
                replies += "event" not in json.loads(reader.readline())
            reader.close()
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    report: dict[str, list[str]] = json.loads(out.splitlines()[-1])
    return report


def test_an_idle_vm_loads_neither_the_scenario_language_nor_the_control_channel(
    tmp_path: Path,
) -> None:
    loaded = modules_of_serve(tmp_path)
    assert "qmpsim.runtime.server" in loaded
    assert not loaded & (SCENARIO_LANGUAGE | NEVER | {"qmpsim.runtime.control"})


def test_an_idle_vm_with_a_control_channel_loads_no_yaml(tmp_path: Path) -> None:
    loaded = modules_of_serve(tmp_path, "--control", str(tmp_path / "control.sock"))
    assert {"qmpsim.runtime.control", "qmpsim.runtime.engine"} <= loaded
    assert not loaded & ({"yaml"} | NEVER)


@pytest.mark.parametrize("fake", [False, True])
def test_a_scenario_loads_yaml_and_faker_only_when_a_step_fakes_data(
    tmp_path: Path, fake: bool
) -> None:
    scenario = tmp_path / "s.yaml"
    step = "{emit: VNC_CONNECTED, fake: true}" if fake else "{emit: STOP}"
    scenario.write_text(f"name: s\nclock: startup\nsteps: [{step}]\n")
    loaded = modules_of_serve(tmp_path, str(scenario))
    assert loaded >= SCENARIO_LANGUAGE
    assert "qmpsim.runtime.control" not in loaded
    assert ("faker" in loaded) is fake


def test_a_profile_reads_its_own_data_and_no_other(tmp_path: Path) -> None:
    report = serve_and_quit(tmp_path, "--profile", "qemu-5.1")
    assert report["profiles"] == ["qemu-5.1"]
    assert not set(report["modules"]) & (SCENARIO_LANGUAGE | NEVER | {"qmpsim.runtime.control"})


def test_a_random_scenario_loads_neither_hypothesis_nor_pytest(tmp_path: Path) -> None:
    loaded = modules_of_serve(tmp_path, "--random", "--seed", "3")
    assert {"qmpsim.testing.walk", "qmpsim.scenario.loader"} <= loaded
    assert not loaded & ({"qmpsim.testing.strategies"} | NEVER)
