"""libvirt 9.0's capability probe of QEMU 7.2, replayed against ``qmpsim serve --profile qemu-7.2``.

tests/data/libvirt-probe-qemu-7.2.jsonl is what Debian's libvirt 9.0 asked
Debian's QEMU 7.2.22 at its capability probe and what QEMU answered (recorded by
tools/record_libvirt_probe.py, see tests/data/README.md).  The same requests, in
the same order on one connection, go to ``qmpsim serve``; every reply must be
identical, member order included, except the answers that depend on the host the
probe ran on (KVM and the host CPU), which must have the same shape.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu_harness import assert_same_message

FIXTURE = Path(__file__).parent / "data" / "libvirt-probe-qemu-7.2.jsonl"
TIMEOUT = 30.0

# Whether KVM is there and what the host CPU offers: the recording host's facts.
HOST_DEPENDENT = {
    "query-kvm",
    "query-cpu-definitions",
    "query-cpu-model-expansion",
    "query-sev-capabilities",
}

# Where qmpsim is known to answer otherwise, and why (an expected failure while it differs).
KNOWN_GAPS: dict[str, str] = {}


def _load() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    return lines[0]["greeting"], lines[1:]


GREETING, PAIRS = _load()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """One ``qmpsim serve`` asked every request of the probe: its greeting and replies."""
    with tempfile.TemporaryDirectory(prefix="qs-") as tmp:
        path = str(Path(tmp) / "qmp.sock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "qmpsim", "serve", "--unix", path, "--profile", "qemu-7.2"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # the readiness signal
            assert "listening on" in line, f"qmpsim serve did not start: {line!r}"
            yield _ask(path)
        finally:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def _ask(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        reader = sock.makefile("rb")
        greeting = json.loads(reader.readline())
        replies = []
        for pair in PAIRS:
            # libvirt's own bytes: compact JSON in its member order
            sock.sendall(json.dumps(pair["request"], separators=(",", ":")).encode() + b"\r\n")
            while "event" in (message := json.loads(reader.readline())):
                pass
            replies.append(message)
        reader.close()
    return greeting, replies


def host_masked(command: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The reply with what the recording host decided replaced by its JSON type.

    ``query-kvm``: whether KVM is there; ``query-cpu-definitions``: which features
    of each model the host CPU lacks (none of ``host``'s with KVM, ``kvm`` without);
    ``query-cpu-model-expansion`` of ``host``: the host CPU's features (``props``);
    ``query-sev-capabilities``: its error text says whether KVM is on.  Everything
    else must be identical.
    """
    if command == "query-sev-capabilities" and "error" in reply:
        # "SEV is not enabled in KVM" with KVM, "KVM not enabled" without
        return {**reply, "error": {**reply["error"], "desc": "DESC"}}
    result = reply.get("return")
    if result is None:
        return reply
    if command == "query-kvm":
        result = {key: type(value).__name__ for key, value in result.items()}
    elif command == "query-cpu-definitions":
        result = [{**cpu, "unavailable-features": "strings"} for cpu in result]
    elif command == "query-cpu-model-expansion":
        model = result["model"]
        result = {**result, "model": {**model, "props": _types(model.get("props", {}).values())}}
    return {**reply, "return": result}


def _types(values: Any) -> list[str]:
    return sorted({type(value).__name__ for value in values})


def _id(pair: dict[str, Any]) -> str:
    request = pair["request"]
    typename = request.get("arguments", {}).get("typename")
    return f"{request['id']}-{request['execute']}" + (f"-{typename}" if typename else "")


def test_the_fixture_is_libvirts_first_probe_pass() -> None:
    commands = Counter(pair["request"]["execute"] for pair in PAIRS)
    assert len(PAIRS) == 51
    assert [pair["request"]["id"] for pair in PAIRS] == [f"libvirt-{i}" for i in range(1, 52)]
    assert PAIRS[0]["request"]["execute"] == "qmp_capabilities"
    assert commands["device-list-properties"] == 29
    assert commands["qom-list-properties"] == 4
    assert commands["query-cpu-model-expansion"] == 3
    not_found = [p for p in PAIRS if p["reply"].get("error", {}).get("class") == "DeviceNotFound"]
    assert len(not_found) == 3
    assert GREETING["QMP"]["version"]["qemu"] == {"micro": 22, "minor": 2, "major": 7}


def test_the_greeting_is_qemus(served: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    greeting, _ = served
    assert_same_message(greeting, GREETING)


@pytest.mark.parametrize("index", range(len(PAIRS)), ids=[_id(p) for p in PAIRS])
def test_each_reply_is_qemus(
    index: int, served: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    _, replies = served
    expected, actual = PAIRS[index]["reply"], replies[index]
    command = PAIRS[index]["request"]["execute"]
    if command in KNOWN_GAPS and actual != expected:
        pytest.xfail(KNOWN_GAPS[command])
    if command in HOST_DEPENDENT:
        expected, actual = host_masked(command, expected), host_masked(command, actual)
    assert_same_message(actual, expected)


def test_kvm_agrees_with_the_cpu_answers(
    served: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    """QEMU 7.2's ``host`` CPU lacks the feature ``kvm`` exactly when KVM is off."""
    _, replies = served
    by_command = {p["request"]["execute"]: r for p, r in zip(PAIRS, replies, strict=True)}
    enabled = by_command["query-kvm"]["return"]["enabled"]
    (host,) = [
        cpu for cpu in by_command["query-cpu-definitions"]["return"] if cpu["name"] == "host"
    ]
    assert host["unavailable-features"] == ([] if enabled else ["kvm"])
    # the recording itself says the same
    recorded = {p["request"]["execute"]: p["reply"] for p in PAIRS}
    (recorded_host,) = [
        cpu for cpu in recorded["query-cpu-definitions"]["return"] if cpu["name"] == "host"
    ]
    assert recorded["query-kvm"]["return"]["enabled"] is True
    assert recorded_host["unavailable-features"] == []
