"""Disks against a real QEMU 7.2: query-block for raw and qcow2 images, one node name each.

The images are made by ``qemu-img``, as a user makes them, and attached with
``-drive``.  QEMU names a node it was given no name for ``#block`` + a counter +
two random digits; the digits are masked, the counters must agree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_diff_machine import SimMonitor, real

from qmpsim.vm.machine import DiskConfig, VmConfig

pytestmark = pytest.mark.qemu

_AUTO_NAME = re.compile(rb'"#block(\d+)\d\d"')


def qemu_img(*args: str) -> None:
    binary = shutil.which("qemu-img")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-img is missing under CI=true; `make test` installs it")
        pytest.skip("qemu-img not installed (make qemu installs it)")
    subprocess.run([binary, *args], check=True, capture_output=True)


def allocated(path: Path) -> int:
    """query-block's actual-size: what the image file occupies on the host."""
    return os.stat(path).st_blocks * 512


def test_query_block_of_raw_and_qcow2_drives(tmp_path: Path) -> None:
    raw, qcow2, named = tmp_path / "a.img", tmp_path / "b.qcow2", tmp_path / "c.qcow2"
    qemu_img("create", "-f", "raw", str(raw), "1M")
    qemu_img("create", "-f", "qcow2", str(qcow2), "16M")
    qemu_img("create", "-f", "qcow2", str(named), "32M")
    drives = [
        f"file={raw},format=raw,if=virtio",
        f"file={qcow2},format=qcow2,if=virtio,werror=stop",
        f"file={named},format=qcow2,if=virtio,readonly=on,node-name=data,rerror=stop",
    ]
    with real("-M", "pc", "-S", *(a for d in drives for a in ("-drive", d))) as qemu:
        qemu.execute("query-block")
    disks = (
        DiskConfig("virtio0", file=str(raw), format="raw", virtual_size=1 << 20),
        DiskConfig(
            "virtio1",
            file=str(qcow2),
            virtual_size=16 << 20,
            actual_size=allocated(qcow2),
            on_write_error="stop",
        ),
        DiskConfig(
            "virtio2",
            node_name="data",
            file=str(named),
            virtual_size=32 << 20,
            actual_size=allocated(named),
            read_only=True,
            on_read_error="stop",
        ),
    )
    sim = SimMonitor(VmConfig(disks=disks))
    sim.execute("query-block")

    (real_line,) = qemu.raw
    (sim_line,) = sim.raw
    real_names = [i["inserted"]["node-name"] for i in qemu.messages[0]["return"]]
    sim_names = [i["inserted"]["node-name"] for i in sim.messages[0]["return"]]
    assert len(set(sim_names)) == 3
    assert [n[:-2] for n in sim_names] == [n[:-2] for n in real_names[:2]] + ["da"]
    # raw: no cluster-size, no format-specific; qcow2: both; member order included
    assert json.loads(_AUTO_NAME.sub(rb'"#block\1NN"', sim_line)) == json.loads(
        _AUTO_NAME.sub(rb'"#block\1NN"', real_line)
    )
    assert _AUTO_NAME.sub(rb'"#block\1NN"', sim_line) == _AUTO_NAME.sub(rb'"#block\1NN"', real_line)
