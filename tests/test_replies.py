"""Replies to the commands the VM model does not handle: from the VM, recorded, generated."""

from __future__ import annotations

import json
import random

import pytest
import trio
from test_server_peer import EPOCH, connect

from qmpsim.qmp.profiles import get_profile
from qmpsim.qmp.protocol import Request, ServerConnection
from qmpsim.runtime.server import Simulator
from qmpsim.vm.machine import CommandError, Machine, UnmodelledCommand, VmConfig

pytest_plugins = ["pytester"]


def _machine(profile: str = "qemu-7.2", **vm: object) -> Machine:
    return Machine(vm=VmConfig(**vm), profile=get_profile(profile))  # type: ignore[arg-type]


def test_the_recorded_reply_answers_the_same_request() -> None:
    machine = _machine()
    assert machine.execute("query-target", {}).reply == {"arch": "x86_64"}
    props = machine.execute("device-list-properties", {"typename": "virtio-blk-pci"}).reply
    assert (
        isinstance(props, list)
        and {"name": "drive", "type": "str"}.items()
        <= {**next(p for p in props if p["name"] == "drive")}.items()
    )
    # recorded twice: by Debian's recording with KVM, by qmpsim's with TCG
    assert _machine(kvm_enabled=True).execute("query-sev-capabilities", {}).reply == CommandError(
        "GenericError", "SEV is not enabled in KVM"
    )
    assert machine.execute("query-sev-capabilities", {}).reply == CommandError(
        "GenericError", "KVM not enabled"
    )


def test_a_none_machine_does_not_take_a_pc_machines_recorded_devices() -> None:
    # -M none has no PCI bus: only a recording of a -M pc VM lists devices
    assert _machine().execute("query-pci", {}).reply == []
    # 2.12's recordings asked no VM for query-pci: nothing is borrowed from elsewhere
    assert _machine("qemu-2.12").execute("query-pci", {}).reply == []
    pci = _machine(cpus=1).execute("query-pci", {}).reply
    assert isinstance(pci, list) and pci[0]["devices"]


def test_query_kvm_and_the_cpu_models_come_from_the_same_accelerator() -> None:
    kvm = _machine(kvm_enabled=True)
    tcg = _machine(kvm_enabled=False)
    assert kvm.execute("query-kvm", {}).reply == {"enabled": True, "present": True}
    on_kvm = kvm.execute("query-cpu-definitions", {}).reply
    on_tcg = tcg.execute("query-cpu-definitions", {}).reply
    assert on_kvm != on_tcg  # KVM and TCG disagree on which models run unchanged


def test_query_cpus_fast_lists_every_vcpu() -> None:
    cpus = _machine(cpus=3).execute("query-cpus-fast", {}).reply
    assert [c["cpu-index"] for c in cpus] == [0, 1, 2]
    assert len({c["thread-id"] for c in cpus}) == 3
    assert {c["target"] for c in cpus} == {"x86_64"}
    assert _machine().execute("query-cpus-fast", {}).reply == []


def test_generated_replies_are_the_same_for_the_same_seed() -> None:
    arguments = {"mnonce": "abc"}
    first = _machine().execute("query-sev-attestation-report", arguments).reply
    assert first == _machine().execute("query-sev-attestation-report", arguments).reply
    assert isinstance(first, dict) and isinstance(first["data"], str)
    other = Machine(profile=get_profile("qemu-7.2"), rng=random.Random(7))
    assert other.execute("query-sev-attestation-report", arguments).reply != first
    threshold = {"node-name": "n", "write-threshold": 1}
    assert _machine().execute("block-set-write-threshold", threshold).reply == {}


def test_a_strict_machine_refuses_to_make_up_a_reply() -> None:
    machine = Machine(profile=get_profile("qemu-7.2"), strict_commands=True)
    with pytest.raises(
        UnmodelledCommand, match="x-exit-preconfig is neither modelled nor recorded"
    ):
        machine.execute("x-exit-preconfig", {})
    assert machine.execute("query-target", {}).reply == {"arch": "x86_64"}  # recorded: fine


def test_migrate_pause_runs_out_of_band_and_fails_as_in_qemu_7_2() -> None:
    profile = get_profile("qemu-7.2")
    conn = ServerConnection(profile)
    conn.greeting()
    conn.receive_data(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    assert conn.next_request() == b'{"return": {}}\r\n'
    conn.receive_data(b'{"exec-oob": "migrate-pause", "id": 1}')
    request = conn.next_request()
    assert isinstance(request, Request) and request.oob
    reply = Machine(profile=profile).execute(request.command, request.arguments).reply
    assert isinstance(reply, CommandError)
    assert conn.send_error(request, reply.error_class, reply.desc) == (
        b'{"id": 1, "error": {"class": "GenericError", "desc": "migrate-pause is currently'
        b' only supported during postcopy-active state"}}\r\n'
    )


@pytest.mark.parametrize(
    ("arguments", "desc"),
    [
        ({}, "Parameter 'size' is missing"),
        ({"size": "1"}, "Invalid parameter type for 'size', expected: integer"),
        ({"size": 1, "x": 1}, "Parameter 'x' is unexpected"),
    ],
)
def test_arguments_of_any_command_are_checked(arguments: dict[str, object], desc: str) -> None:
    conn = ServerConnection(get_profile("qemu-7.2"))
    conn.greeting()
    conn.receive_data(b'{"execute": "qmp_capabilities"}')
    conn.next_request()
    conn.receive_data(json.dumps({"execute": "block_resize", "arguments": arguments}).encode())
    out = conn.next_request()
    assert isinstance(out, bytes)
    assert json.loads(out)["error"] == {"class": "GenericError", "desc": desc}


def test_a_union_and_an_alternate_are_checked_in_qemus_order() -> None:
    conn = ServerConnection(get_profile("qemu-7.2"))
    conn.greeting()
    conn.receive_data(b'{"execute": "qmp_capabilities"}')
    conn.next_request()

    def error(arguments: dict[str, object]) -> str:
        conn.receive_data(json.dumps({"execute": "blockdev-add", "arguments": arguments}).encode())
        out = conn.next_request()
        assert isinstance(out, bytes)
        desc: str = json.loads(out)["error"]["desc"]
        return desc

    assert error({}) == "Parameter 'driver' is missing"
    assert error({"driver": "nope"}) == "Parameter 'driver' does not accept value 'nope'"
    assert error({"driver": "qcow2", "node-name": "n"}) == "Parameter 'file' is missing"
    assert (
        error({"driver": "qcow2", "file": 1})
        == "Invalid parameter type for 'file', expected: BlockdevRef"
    )
    assert error({"driver": "qcow2", "file": {"driver": "file"}}) == (
        "Parameter 'file.filename' is missing"
    )


@pytest.mark.trio
async def test_an_override_answers_any_command_of_the_profile(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with Simulator(epoch=EPOCH) as sim, trio.open_nursery() as nursery:
        sim.override_reply("device_del", CommandError("DeviceNotFound", "Device 'x' not found"))
        peer, _ = connect(sim, nursery)
        await peer.negotiate()
        reply = await peer.execute("device_del", {"id": "x"}, id=1)
        assert reply["error"] == {"class": "DeviceNotFound", "desc": "Device 'x' not found"}
        reply = await peer.execute("query-stats", {"target": "vm"}, id=2)
        assert "return" in reply
        reply = await peer.execute("no-such-command", id=3)
        assert reply["error"]["class"] == "CommandNotFound"
        nursery.cancel_scope.cancel()


STRICT_EXAMPLE = """
import json
import socket

import pytest


def ask(path, *commands):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        lines = sock.makefile("rb")
        lines.readline()
        replies = []
        for command in ("qmp_capabilities", *commands):
            sock.sendall(json.dumps({"execute": command}).encode())
            replies.append(json.loads(lines.readline()))
        return replies


@pytest.mark.qmpsim(strict_commands=True)
def test_a_recorded_command_is_fine(qmp_server):
    assert ask(qmp_server.path, "query-target")[1] == {"return": {"arch": "x86_64"}}


@pytest.mark.qmpsim(strict_commands=True)
def test_a_generated_reply_fails_the_test(qmp_server):
    ask(qmp_server.path, "x-exit-preconfig")
"""


def test_the_marker_makes_generated_replies_fail_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_strict=STRICT_EXAMPLE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*x-exit-preconfig is neither modelled nor recorded*"])
