"""docs/libvirt.md: its examples run as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from qmpsim.qemu.ctl import request_for
from qmpsim.qemu.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "libvirt.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(DOC.read_text()) if m.group(1) == lang]


def test_the_plain_launcher_script_runs(tmp_path: Path) -> None:
    (script,) = [b for b in blocks("sh") if b.startswith("#!/bin/sh")]
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("QMPSIM_RUN_DIR", None)
    env["TMPDIR"] = str(tmp_path)  # the script's mktemp -d
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    first, second = [line for line in done.stdout.splitlines() if '"status"' in line]
    assert '"running"' in first and '"io-error"' in second


def test_the_settings_example_loads(tmp_path: Path) -> None:
    guest, toml = blocks("toml")
    assert tomllib.loads(toml)
    (tmp_path / "vm1.toml").write_text(toml)
    settings = load_settings("vm1", {"QMPSIM_CONFIG_DIR": str(tmp_path)})
    assert (settings.profile, settings.seed) == ("qemu-7.2", 7)
    assert settings.scenario == str(tmp_path / "vm1-disk-fails.yaml")
    (tmp_path / "default.toml").write_text(guest)
    assert load_settings("vm2", {"QMPSIM_CONFIG_DIR": str(tmp_path)}).guest == {
        "powerdown": "ignore"
    }


def test_the_qemu_conf_is_the_one_the_tests_use() -> None:
    from libvirt_harness import QEMU_CONF

    (ini,) = blocks("ini")
    assert ini == QEMU_CONF + 'vnc_listen = "127.0.0.1"\n'


def test_every_ctl_example_is_a_valid_request() -> None:
    import shlex

    lines = [
        line.split("  #", 1)[0]
        for block in blocks("sh")
        for line in block.splitlines()
        if line.startswith("qmpsim ctl ") and "--list" not in line
    ]
    assert len(lines) >= 6
    for line in lines:
        _, _, _guest, action, *words = shlex.split(line)
        command, _ = request_for(action, words)
        assert command.startswith("qmpsim-")
