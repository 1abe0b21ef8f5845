"""The compiled profiles: what ships, how it loads, and that it says what QEMU said."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qmpsim.qmp.profiles import DATA_DIR, PROFILES, get_profile
from qmpsim.qmp.schema import problems
from qmpsim.vm.machine import Machine, VmConfig, modelled_commands
from qmpsim.vm.replies import RECORDED, source

ROOT = Path(__file__).resolve().parent.parent
COMPILED = [name for name in PROFILES if name != "qemu-0.14"]


def _recordings() -> Path | None:
    for candidate in (
        ROOT.parent / "shared" / "qemu-qmp",
        ROOT.parent.parent / "shared" / "qemu-qmp",
    ):
        if (candidate / "replies").is_dir():
            return candidate
    return None


def test_every_minor_version_from_2_5_with_a_recording_has_a_profile() -> None:
    versions = [tuple(map(int, name.removeprefix("qemu-").split("."))) for name in COMPILED]
    assert versions == sorted(versions)
    assert versions[0] == (2, 5) and versions[-1] == (11, 1)
    assert len(COMPILED) == 30


def test_the_shipped_data_is_small() -> None:
    size = sum(f.stat().st_size for f in DATA_DIR.iterdir())
    assert size <= 3 * 1024 * 1024
    assert (DATA_DIR / "NOTICE").read_text().count("GPL") >= 2


@pytest.mark.skipif(_recordings() is None, reason="the recordings (../shared/qemu-qmp) are absent")
def test_recompiling_gives_the_committed_bytes(tmp_path: Path) -> None:
    source = _recordings()
    assert source is not None
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "compile_profiles.py"),
            str(source),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    made = sorted(p.name for p in tmp_path.iterdir())
    shipped = sorted(p.name for p in DATA_DIR.iterdir() if p.name != "NOTICE")
    assert made == shipped
    for name in made:
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


@pytest.mark.parametrize(
    ("name", "version", "package", "commands", "events"),
    [
        ("qemu-2.5", (2, 5, 0), "", 135, 35),
        ("qemu-2.12", (2, 11, 90), "v2.12.0-rc0", 163, 39),
        ("qemu-7.2", (7, 2, 22), "Debian 1:7.2+dfsg-7+deb12u18+b3", 216, 52),
        ("qemu-10.0", (10, 0, 2), "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1", 233, 55),
        ("qemu-11.1", (11, 1, 3), "Debian 1:11.1.3+ds-2~bpo13+1", 242, 57),
    ],
)
def test_a_profile_is_its_recording(
    name: str, version: tuple[int, int, int], package: str, commands: int, events: int
) -> None:
    profile = get_profile(name)
    assert profile.version == version
    assert profile.package == package
    assert len(profile.commands) == commands
    assert len(profile.events) == events
    assert profile.capabilities == (() if version < (2, 12) else ("oob",))


def test_commands_qemu_lists_but_does_not_dispatch_are_not_found() -> None:
    # the 2.8 x86_64 schema describes s390's dump-skeys; query-commands lacks it
    assert "dump-skeys" not in get_profile("qemu-2.8").commands
    # 2.5 dispatched qmp_capabilities and device_add without describing them
    assert {"qmp_capabilities", "device_add"} <= set(get_profile("qemu-2.5").commands)


def test_a_profile_greets_before_reading_its_schema() -> None:
    program = (
        "import json, qmpsim.qmp.profiles as c\n"
        "p = c.get_profile('qemu-9.1')\n"
        "before = sorted(c._BODIES)\n"
        "package = p.greeting()['QMP']['version']['package']\n"
        "after_greeting = sorted(c._BODIES)\n"
        "'query-qmp-schema' in p.commands\n"
        "print(json.dumps([package, before, after_greeting, sorted(c._BODIES)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["v9.1.0", [], [], ["qemu-9.1"]]


def test_only_the_profile_in_use_is_read() -> None:
    program = (
        "import json, qmpsim.qmp.profiles as c\n"
        "c.get_profile('qemu-4.2').commands['cont']\n"
        "print(json.dumps(sorted(c._BODIES)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["qemu-4.2"]


@pytest.mark.parametrize("name", COMPILED)
def test_every_command_answers_within_its_return_type(name: str) -> None:
    profile = get_profile(name)
    # -M none (no vCPUs) for the old half, a two-vCPU pc for the new one
    for cpus in (0,) if profile.version < (7, 0, 0) else (2,):
        machine = Machine(vm=VmConfig(cpus=cpus), profile=profile)
        for command, spec in profile.commands.items():
            if command in ("quit", "qmp_capabilities") or spec.returns is None:
                continue
            needed = {f.name: _minimal(f.type) for f in spec.arguments.fields if not f.optional}
            if any(list(problems(spec.arguments, needed))):
                continue  # arguments a union needs: the argument tests cover those
            if source(profile, command, modelled=command in modelled_commands()) == RECORDED:
                continue  # the compiler checked those against the schema
            reply = machine.execute(command, needed).reply
            if isinstance(reply, dict | list | str | int | bool):
                found = list(problems(spec.returns, reply))
                assert not found, (command, found[:2])


def _minimal(typ: object) -> object:
    from qmpsim.qmp.schema import Alternate, Array, Builtin, Enum, Object

    if isinstance(typ, Builtin):
        return {"str": "x", "int": 1, "number": 1, "bool": False, "null": None}.get(typ.name, {})
    if isinstance(typ, Enum):
        return typ.values[0]
    if isinstance(typ, Array):
        return []
    if isinstance(typ, Alternate):
        return _minimal(typ.members[0])
    if isinstance(typ, Object):
        return {f.name: _minimal(f.type) for f in typ.fields if not f.optional}
    return None


@pytest.mark.parametrize("name", COMPILED)
def test_every_event_can_be_faked_and_conforms(name: str) -> None:
    from qmpsim.fakedata import FakeData
    from qmpsim.qmp.profiles import validate_event
    from qmpsim.runtime.fake_events import fake_data

    profile = get_profile(name)
    fake = FakeData(0)
    for event, spec in profile.events.items():
        message: dict[str, object] = {
            "timestamp": {"seconds": 1, "microseconds": 0},
            "event": event,
        }
        if spec.data is not None:
            message["data"] = fake_data(spec.data, fake)
        assert validate_event(profile, message) == [], event


def test_a_query_no_recording_of_a_version_asked_takes_the_nearest_versions_answer() -> None:
    (migrate,) = {r.borrowed for r in get_profile("qemu-9.2").recorded["query-migrate"]}
    assert migrate == "qemu-10.0"
    assert Machine(profile=get_profile("qemu-9.2")).execute("query-migrate", {}).reply == {}
    # a list of what one build has is never taken from another build
    for name in COMPILED:
        for command, recorded in get_profile(name).recorded.items():
            if command in ("query-machines", "query-events", "query-cpu-definitions"):
                assert all(r.borrowed is None for r in recorded), (name, command)
