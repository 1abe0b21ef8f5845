"""Malformed scenario files: each mistake gets one clear message at the right place."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpsim.errors import ScenarioError
from qmpsim.scenario.loader import load_scenario, loads_scenario

VM = "vm:\n  disks: [{name: vda}]\n  vnc: {}\n  spice: {}\n"

# (id, document, expected line, expected column or None, a fragment of the message, path)
CASES = [
    ("yaml-syntax", "steps: [\n", 2, 1, "not valid YAML", ""),
    ("top-level-typo", "stepz: []\n", 1, 1, "did you mean 'steps'?", "stepz"),
    ("not-a-mapping", "- wait: 1s\n", 1, 1, "expected a mapping, found a list", ""),
    (
        "duplicate-key",
        "name: a\nname: b\n",
        2,
        1,
        "duplicate key 'name' (first given on line 1)",
        "",
    ),
    ("unknown-step", "steps:\n  - wiat: 1s\n", 2, 5, "did you mean 'wait'?", "steps[0]"),
    (
        "two-kinds",
        "steps:\n  - wait: 1s\n    emit: STOP\n",
        3,
        5,
        "'emit' is a second one",
        "steps[0]",
    ),
    (
        "key-typo",
        VM + "steps:\n  - cause: disk-error\n    devcie: vda\n",
        7,
        5,
        "did you mean 'device'?",
        "steps[0].devcie",
    ),
    (
        "unknown-disk",
        VM + "steps:\n  - cause: disk-error\n    device: vdb\n",
        7,
        13,
        "no disk named 'vdb'",
        "steps[0].device",
    ),
    (
        "nospace-on-a-thick-disk",
        VM + "steps:\n  - cause: disk-error\n    device: vda\n    nospace: true\n",
        8,
        14,
        "'vda' is not thin-provisioned, so it cannot run out of space; add `thin: true`",
        "steps[0].nospace",
    ),
    (
        "two-disks-one-node-name",
        "vm:\n  disks:\n    - {name: a, node_name: n1}\n    - {name: b, node_name: n1}\n",
        4,
        28,
        "a second disk with node name 'n1'",
        "vm.disks[1].node_name",
    ),
    (
        "automatic-node-names-are-qemus",
        "vm:\n  disks: [{name: a, node_name: '#block1'}]\n",
        2,
        32,
        "does not match the pattern",
        "vm.disks[0].node_name",
    ),
    (
        "unknown-cause",
        "steps:\n  - cause: disk-eror\n",
        2,
        12,
        "did you mean 'disk-error'?",
        "steps[0].cause",
    ),
    ("bad-duration", "steps:\n  - wait: soon\n", 2, 11, "expected a duration", "steps[0].wait"),
    (
        "bad-count",
        "steps:\n  - repeat: 0\n    steps: []\n",
        2,
        13,
        "positive count",
        "steps[0].repeat",
    ),
    (
        "wrong-type",
        "vm:\n  no_shutdown: maybe\n",
        2,
        16,
        "expected true or false",
        "vm.no_shutdown",
    ),
    ("bad-enum", "vm:\n  watchdog: explode\n", 2, 13, "expected one of: reset", "vm.watchdog"),
    (
        "unknown-command",
        "steps:\n  - until: contt\n",
        2,
        12,
        "unknown command 'contt' (did you mean 'cont'?) in profile qemu-7.2",
        "steps[0].until",
    ),
    (
        "command-of-another-profile",
        "profile: qemu-0.14\nsteps:\n  - on: device_del\n    steps: []\n",
        3,
        9,
        "unknown command 'device_del' in profile qemu-0.14",
        "steps[0].on",
    ),
    (
        "union-variant-member",
        "steps:\n  - emit: NETDEV_STREAM_CONNECTED\n    data:\n      netdev-id: n0\n"
        "      addr: {type: unix, path: /s, port: '1'}\n",
        5,
        36,
        "has no member 'port'; expected: type, path, abstract, tight",
        "steps[0].data.addr.port",
    ),
    (
        "unknown-event",
        "steps:\n  - emit: BLOCK_IO_EROR\n",
        2,
        11,
        "did you mean 'BLOCK_IO_ERROR'?",
        "steps[0].emit",
    ),
    (
        "data-breaks-schema",
        "steps:\n  - emit: BLOCK_IO_ERROR\n    data:\n      device: vda\n      operation: read\n"
        "      action: explode\n",
        6,
        15,
        "expected one of: ignore, report, stop",
        "steps[0].data.action",
    ),
    (
        "data-missing-member",
        "steps:\n  - emit: RTC_CHANGE\n    data: {}\n",
        3,
        11,
        "missing offset",
        "steps[0].data",
    ),
    (
        "data-on-dataless-event",
        "steps:\n  - emit: STOP\n    data: {a: 1}\n",
        3,
        11,
        "STOP carries no data",
        "steps[0].data",
    ),
    (
        "initialize-before-connect",
        VM + "steps:\n  - cause: vnc-initialize\n    client: a\n",
        6,
        5,
        "is not connected: it must connect (vnc-connect) first",
        "steps[0]",
    ),
    (
        "disconnect-unknown-spice",
        VM + "steps:\n  - cause: spice-disconnect\n    client: a\n",
        6,
        5,
        "is not connected",
        "steps[0]",
    ),
    (
        "leak-in-repeat",
        VM + "steps:\n  - repeat: 2\n    steps:\n      - cause: vnc-connect\n        client: a\n",
        8,
        9,
        "already connected",
        "steps[0].steps[0]",
    ),
    (
        "step-after-exit",
        "steps:\n  - cause: guest-shutdown\n  - wait: 1s\n",
        3,
        5,
        "already exited (on line 2)",
        "steps[1]",
    ),
    (
        "no-watchdog",
        "steps:\n  - cause: watchdog\n",
        2,
        12,
        "the VM has no watchdog",
        "steps[0].cause",
    ),
    (
        "no-vnc-server",
        "steps:\n  - cause: vnc-connect\n    client: a\n",
        2,
        12,
        "add vm.vnc",
        "steps[0].cause",
    ),
    (
        "reply-without-result",
        "steps:\n  - reply: query-status\n",
        2,
        5,
        "exactly one of `return`",
        "steps[0]",
    ),
    ("missing-required", "steps:\n  - on: cont\n", 2, 5, "needs the key 'steps'", "steps[0]"),
    (
        "missing-include",
        "steps:\n  - include: nope.yaml\n",
        2,
        14,
        "cannot read 'nope.yaml'",
        "steps[0].include",
    ),
    (
        "forever-without-time",
        "steps:\n  - repeat: forever\n    steps: [{cause: guest-reset}]\n",
        2,
        5,
        "needs a `wait`",
        "steps[0]",
    ),
    (
        "alias-bomb",
        "steps:\n  - reply: stop\n    return:\n      a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
        + "".join(f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7)),
        4,
        40,
        "expands to more than 100000 values",
        "steps[0].return.a4[7][8][8][8][8]",
    ),
    (
        "not-in-this-profile",
        "profile: qemu-0.14\nvm: {watchdog: inject-nmi}\nsteps:\n  - cause: watchdog\n",
        4,
        12,
        "watchdog action 'inject-nmi' does not exist in profile qemu-0.14",
        "steps[0].cause",
    ),
    (
        "crash-kernel-before-qemu-5",
        "profile: qemu-4.2\nsteps:\n  - cause: guest-crashloaded\n",
        3,
        12,
        "profile qemu-4.2 has no crash-loaded notification (GUEST_CRASHLOADED)",
        "steps[0].cause",
    ),
    (
        "python-object",
        "steps:\n  - reply: stop\n    return: !!python/object:os.system {}\n",
        3,
        13,
        "python/object:os.system is not plain JSON data",
        "steps[0].return",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment", "path"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_mistake_is_reported_with_its_place(
    tmp_path: Path, text: str, line: int | None, column: int | None, fragment: str, path: str
) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(file)
    err = info.value
    assert fragment in err.message
    assert err.file == str(file)
    if line is not None:
        assert (err.line, err.column, err.path) == (line, column, path)
        assert str(err).startswith(f"{file}:{line}:{column}: ")


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("steps:\n  - include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("steps:\n  - wait: 1s\n  - include: a.yaml\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "a.yaml")
    assert "include cycle: a.yaml -> b.yaml -> a.yaml" in info.value.message
    assert info.value.file == str(tmp_path / "b.yaml")
    assert info.value.line == 3


def test_mistake_inside_an_include_names_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("steps:\n  - include: sub/b.yaml\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("steps:\n  - wait: never\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "a.yaml")
    assert (info.value.file, info.value.line) == (str(tmp_path / "sub" / "b.yaml"), 2)


def test_unreadable_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the file"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(bad)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ScenarioError, match="nested too deeply"):
        loads_scenario("steps:\n  - reply: stop\n    return: " + "[" * 5000 + "]" * 5000 + "\n")


def test_empty_document() -> None:
    with pytest.raises(ScenarioError, match="the file is empty"):
        loads_scenario("")
