"""Every ``qmpsim`` command in a runtime install: no Hypothesis, no pytest.

``pip install qmpsim`` brings trio, Faker and PyYAML only; Hypothesis and pytest
are extras (``qmpsim[hypothesis]``, ``qmpsim[pytest]``).  Each test runs the
command in a fresh interpreter whose import system refuses those packages, as an
interpreter without them installed would.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # seconds; a guard against a hang, not an assertion on timing
TEST_ONLY = ("hypothesis", "pytest", "_pytest", "pytest_trio")

# A finder first on sys.meta_path that refuses the test-only packages, then the CLI.
RUNTIME = f"""\
import sys

class TestOnly:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {TEST_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, TestOnly())
from qmpsim.cli import main
sys.exit(main(sys.argv[1:]))
"""


def runtime(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNTIME, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def finish(*args: str) -> tuple[int, str, str]:
    proc = runtime(*args)
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def importing(module: str) -> subprocess.CompletedProcess[str]:
    """``import MODULE`` in the same runtime interpreter."""
    code = RUNTIME.split("from qmpsim.cli")[0] + f"import {module}\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )


@pytest.mark.parametrize("module", ["hypothesis", "pytest", "pytest_trio"])
def test_the_test_frameworks_cannot_be_imported(module: str) -> None:
    result = importing(module)
    assert result.returncode == 1
    assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr


def test_strategies_name_the_extra_that_brings_hypothesis() -> None:
    result = importing("qmpsim.testing.strategies")
    assert result.returncode == 1
    assert "pip install 'qmpsim[hypothesis]'" in result.stderr


def test_generate_and_check(tmp_path: Path) -> None:
    status, out, err = finish("generate", "--seed", "7", "--count", "30")
    assert (status, err) == (0, "")
    assert len(out.splitlines()) == 30
    log = tmp_path / "events.jsonl"
    log.write_text(out)
    assert finish("check", str(log)) == (0, f"{log}: conforms to qemu-7.2\n", "")


@pytest.mark.parametrize(
    "args",
    [["list"], ["show", "tour"], ["validate", "scenarios/tour.yaml"], ["schema"], ["demo"]],
    ids=lambda args: args[0],
)
def test_commands_that_finish(args: list[str]) -> None:
    status, out, err = finish(*args)
    assert (status, err) == (0, "")
    assert out


def test_serve_random(tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    proc = runtime("serve", "--random", "--seed", "5", "--unix", path)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the readiness signal
        assert "listening on" in line and "random-5" in line, line
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
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_the_extras_bring_the_test_frameworks_and_the_readme_names_them() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert [r.split(">")[0] for r in extras["pytest"]] == ["pytest", "pytest-trio"]
    assert [r.split(">")[0] for r in extras["hypothesis"]] == ["hypothesis"]
    runtime_deps = " ".join(project["dependencies"])
    assert not any(name in runtime_deps for name in TEST_ONLY)
    readme = (ROOT / "README.md").read_text()
    assert "[pytest]" in readme and "[hypothesis]" in readme
