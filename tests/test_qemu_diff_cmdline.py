"""The drop-in refuses a command line exactly as QEMU 7.2 does: same text, same status.

Each case runs the real ``qemu-system-x86_64`` and the drop-in with the same
arguments and compares what they print on stderr and their exit status.
"""

from __future__ import annotations

import subprocess

import pytest
from qemu_harness import require_qemu

from qmpsim.qemu.main import run

# -display none: without it QEMU looks for GUI modules first and says so on stderr
PREFIX = ["-S", "-nodefaults", "-display", "none"]
CASES = [
    ["-foo"],
    ["-no-such", "-m", "1"],
    ["-m"],
    ["-S", "--S", "---S"],
    ["-prom-env", "x"],
    ["-m", "abc"],
    ["-m", "64x"],
    ["-m", "size=abc"],
    ["-smp", "x"],
    ["-smp", "2,foo=1"],
    ["-smp", "cpus=2,maxcpus=1"],
    ["-drive", "foo"],
    ["-drive", "file=/tmp/x,if=bogus"],
    ["-drive", "file=/tmp/x,werror=bogus"],
    ["-drive", "file=/tmp/x,rerror=enospc"],
    ["-device", "{bad"],
    ["-device", '{"driver":"x"'],
    ["-device", '{"driver":"x"} {}'],
    ["-device", "{}"],
    ["-blockdev", '{"driver":1}'],
    ["-object", '{"qom-type":"secret"}'],
    ["-name", "guest=a,bogus=1"],
    ["-name", "guest=a,debug-threads=maybe"],
    ["-uuid", "xyz"],
    ["-uuid", "123"],
    ["-accel", "bogus"],
    ["-machine", "none,accel=bogus"],
    ["-watchdog-action", "bogus"],
    ["-action", "watchdog=bogus"],
    ["-action", "bogus=1"],
    ["-overcommit", "bogus=on"],
    ["-rtc", "bogus=1"],
    ["-rtc", "base=bogus"],
    ["-msg", "bogus=on"],
    ["-sandbox", "bogus"],
    ["-display", "bogus"],
    ["-display", "none,bogus=1"],
    ["-mon", "chardev=none"],
    ["-mon", "chardev=x,mode=bogus"],
    ["-chardev", "socket,path=/tmp/qq.sock,server=on,wait=off"],
    ["-chardev", "bogus,id=x"],
    ["-chardev", "socket,id=c0,path=/tmp/qq.sock,server=maybe"],
    ["-qmp", "bogus"],
    ["-vnc", "127.0.0.1:x"],
    ["-vnc", "bogus::"],
]


@pytest.mark.qemu
@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_a_refused_command_line_fails_as_qemu_fails(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    real = subprocess.run(
        [require_qemu(), *PREFIX, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    status = run([*PREFIX, *args], prog="qemu-system-x86_64")
    err = capsys.readouterr().err
    assert (status, err) == (real.returncode, real.stderr)
    assert status == 1
