"""Loading scenarios into the typed model, and the JSON Schema generated from the grammar."""

from __future__ import annotations

import json
from pathlib import Path

from qmpsim.scenario.dryrun import build_machine, show_timeline
from qmpsim.scenario.json_schema import scenario_schema
from qmpsim.scenario.loader import loads_scenario
from qmpsim.scenario.model import (
    CauseStep,
    EmitStep,
    FaultStep,
    IncludeStep,
    OnStep,
    RepeatStep,
    ReplyStep,
    UntilStep,
    WaitStep,
)
from qmpsim.vm import machine as m

FULL = """
name: full
description: every kind of step
profile: qemu-7.2
clock: startup
vm:
  name: db01
  seed: 7
  no_shutdown: true
  watchdog: pause
  disks: [{name: vda, on_read_error: stop}]
  vnc: {port: 5901, auth: sasl}
steps:
  - cause: disk-error
    device: vda
  - emit: RTC_CHANGE
    data: {offset: 5, qom-path: "/machine/unattached/device[0]"}
  - emit: VNC_CONNECTED
    fake: true
  - wait: 250ms
  - until: cont
    arguments: {}
    timeout: 1m
  - reply: query-status
    error: {class: GenericError, desc: busy}
    times: once
  - on: cont
    steps: [{cause: watchdog}]
  - repeat: forever
    steps: [{wait: 1}]
  - fault: split
    chunk: 3
actions:
  panic:
    - cause: guest-panic
"""


def test_every_step_kind_loads_into_the_typed_model() -> None:
    s = loads_scenario(FULL)
    assert (s.name, s.clock, s.vm.name, s.seed, s.vm.no_shutdown) == (
        "full",
        "startup",
        "db01",
        7,
        True,
    )
    assert s.vm.disks[0].on_read_error == "stop" and s.vm.vnc is not None
    cause, emit, fake, wait, until, reply, on, repeat, fault = s.steps
    assert isinstance(cause, CauseStep) and cause.cause == m.DiskError("vda", "read", False)
    assert cause.where.line == 14
    assert isinstance(emit, EmitStep) and emit.data == {
        "offset": 5,
        "qom-path": "/machine/unattached/device[0]",
    }
    assert isinstance(fake, EmitStep) and fake.fake and fake.data is None
    assert isinstance(wait, WaitStep) and wait.seconds == 0.25
    assert isinstance(until, UntilStep) and (until.command, until.timeout) == ("cont", 60.0)
    assert isinstance(reply, ReplyStep) and (reply.error_class, reply.times) == ("GenericError", 1)
    assert isinstance(on, OnStep) and on.times is None
    assert isinstance(on.steps[0], CauseStep) and on.steps[0].cause == m.WatchdogExpired(None)
    assert isinstance(repeat, RepeatStep) and repeat.count is None
    assert isinstance(fault, FaultStep) and (fault.kind, fault.chunk) == ("split", 3)
    assert list(s.actions) == ["panic"]


def test_defaults_and_include_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "reboot.yaml").write_text("steps:\n  - cause: guest-reset\n")
    main = tmp_path / "main.yaml"
    main.write_text("steps:\n  - include: parts/reboot.yaml\n")
    from qmpsim.scenario.loader import load_scenario

    s = load_scenario(main)
    assert (s.name, s.profile, s.clock, s.vm.initial_state) == (
        "main",
        "qemu-7.2",
        "first-client",
        "running",
    )
    (inc,) = s.steps
    assert isinstance(inc, IncludeStep)
    assert isinstance(inc.steps[0], CauseStep) and inc.steps[0].cause == m.GuestReset()


def test_no_shutdown_allows_steps_after_a_guest_shutdown() -> None:
    s = loads_scenario("vm: {no_shutdown: true}\nsteps:\n  - cause: guest-shutdown\n  - wait: 1\n")
    assert len(s.steps) == 2


def test_schema_is_json_and_mirrors_the_grammar() -> None:
    schema = scenario_schema()
    json.dumps(schema)
    assert set(schema["properties"]) == {
        "name",
        "description",
        "profile",
        "clock",
        "vm",
        "steps",
        "actions",
    }
    variants = schema["$defs"]["step"]["oneOf"]
    causes = {v["properties"]["cause"]["const"] for v in variants if "cause" in v["properties"]}
    assert {"disk-error", "watchdog", "vnc-connect", "spice-disconnect"} <= causes
    disk = next(
        v for v in variants if v["properties"].get("cause", {}).get("const") == "disk-error"
    )
    assert disk["required"] == ["cause", "device"] and disk["additionalProperties"] is False


def test_each_disk_gets_its_own_node_name_and_image() -> None:
    scenario = loads_scenario(
        "vm:\n  disks:\n    - {name: vda, thin: true}\n    - {name: vdb, format: raw}\n"
        "    - {name: vdc, file: /srv/c.qcow2, node_name: data}\n"
    )
    disks = build_machine(scenario).vm.disks
    assert [(d.node_name, d.file, d.format, d.thin) for d in disks] == [
        ("#block103", "/var/lib/qemu/vda.qcow2", "qcow2", True),
        ("#block309", "/var/lib/qemu/vdb.img", "raw", False),
        ("data", "/srv/c.qcow2", "qcow2", False),
    ]
    assert len({d.qdev for d in disks}) == 3


def test_a_thin_disk_runs_out_of_space() -> None:
    scenario = loads_scenario(
        "vm:\n  disks: [{name: vda, thin: true}]\n"
        "steps:\n  - {cause: disk-error, device: vda, operation: write, nospace: true}\n"
    )
    machine = build_machine(scenario)
    (step,) = scenario.steps
    assert isinstance(step, CauseStep)
    assert [e.name for e in machine.cause(step.cause)] == ["BLOCK_IO_ERROR", "STOP"]
    assert "disk vda rerror=report werror=enospc thin\n" in show_timeline(scenario)
