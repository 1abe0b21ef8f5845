"""Per-guest settings of the drop-in: where they are looked up, how they merge, what
they pick (profile and scenario), and where the control sockets go."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from dropin_harness import DROPIN, ROOT, TIMEOUT, Qmp, dropin_env

from qmpsim.qemu.settings import SettingsError, control_socket, load_settings, run_dirs


def test_a_guest_file_overrides_the_default_file(tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text('profile = "qemu-7.2"\nseed = 3\n')
    (tmp_path / "vm1.toml").write_text('scenario = "scenarios/disk.yaml"\nspeed = 2\n')
    env = {"QMPSIM_CONFIG_DIR": str(tmp_path)}
    vm1 = load_settings("vm1", env)
    assert (vm1.profile, vm1.seed, vm1.speed) == ("qemu-7.2", 3, 2.0)
    assert vm1.scenario == str(tmp_path / "scenarios/disk.yaml")  # relative to its file
    assert vm1.sources == (str(tmp_path / "default.toml"), str(tmp_path / "vm1.toml"))
    other = load_settings("vm2", env)
    assert (other.scenario, other.seed) == (None, 3)
    assert load_settings("../vm1", env).scenario is None  # names never leave the directory


def test_a_shipped_scenario_is_named_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "default.toml").write_text('scenario = "watchdog-reset"\n')
    assert load_settings(None, {"QMPSIM_CONFIG_DIR": str(tmp_path)}).scenario == "watchdog-reset"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('profil = "qemu-7.2"', "unknown key 'profil'"),
        ("seed = 'x'", "seed must be an integer, not 'x'"),
        ("speed = 0", "speed must be a positive number"),
        ("seed = ", "Invalid value"),
    ],
)
def test_a_wrong_settings_file_names_itself(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "default.toml").write_text(text + "\n")
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings("vm1", {"QMPSIM_CONFIG_DIR": str(tmp_path)})
    assert str(tmp_path / "default.toml") in str(caught.value)


def test_run_directories_in_order(tmp_path: Path) -> None:
    assert run_dirs(None, {"QMPSIM_RUN_DIR": "/x"}) == [Path("/x")]
    found = run_dirs(None, {"XDG_RUNTIME_DIR": "/run/user/7"})
    assert found == [
        Path("/run/qmpsim"),
        Path("/run/user/7/qmpsim"),
        Path(f"/tmp/qmpsim-{os.getuid()}"),
    ]
    assert control_socket(Path("/r"), "vm1") == Path("/r/vm1.sock")
    assert control_socket(Path("/r"), None) == Path(f"/r/qemu-{os.getpid()}.sock")


def test_the_guest_settings_pick_the_profile_and_the_scenario(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "default.toml").write_text('profile = "qemu-0.14"\n')
    (etc / "vm1.toml").write_text('profile = "qemu-7.2"\nscenario = "vm1.yaml"\n')
    # the scenario names the disk the command line gives, and waits for libvirt's cont
    (etc / "vm1.yaml").write_text(
        "vm: {disks: [{name: drive0, on_read_error: stop}]}\n"
        "steps:\n  - until: cont\n  - cause: disk-error\n    device: drive0\n"
    )
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(512))
    qmp_path = tmp_path / "qmp.sock"
    base = ["-M", "pc", "-S", "-nodefaults", "-display", "none", "-daemonize"]
    for name in ("vm1", "vm2"):
        pidfile = tmp_path / f"{name}.pid"
        done = subprocess.run(
            [
                *DROPIN,
                *base,
                *("-name", name, "-pidfile", str(pidfile)),
                *("-qmp", f"unix:{qmp_path},server=on,wait=off"),
                *("-drive", f"file={disk},if=none,id=drive0,format=raw,rerror=stop"),
                *("-device", "virtio-blk-pci,drive=drive0"),
            ],
            env=dropin_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=ROOT,
        )
        assert (done.returncode, done.stderr) == (0, "")
        pid = int(pidfile.read_text())
        try:
            with Qmp(qmp_path) as qmp:
                if name == "vm2":  # the default: QEMU 0.14's greeting has no capabilities
                    assert qmp.greeting["QMP"]["capabilities"] == []
                    continue
                qmp.execute("cont")
                while len(qmp.events) < 3:
                    qmp.events.append(qmp.read())
                assert [e["event"] for e in qmp.events] == ["RESUME", "BLOCK_IO_ERROR", "STOP"]
                assert qmp.events[1]["data"]["device"] == "drive0"
        finally:
            os.kill(pid, signal.SIGKILL)
