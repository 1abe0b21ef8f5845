"""QEMU's command line read by the drop-in: option syntax, and the VM it describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmpsim.qemu.cmdline import Chardev, Monitor, parse_command_line
from qmpsim.qemu.opts import OptionError, parse_keyval, parse_object, parse_size
from qmpsim.qemu.vmdesc import build_vm
from qmpsim.vm.machine import Machine

# The command line libvirt 9.0 gives QEMU 7.2 for a small domain (recorded from its log),
# with the disk image's path left to each test.
LIBVIRT: list[str] = json.loads(
    (Path(__file__).parent / "data" / "libvirt-cmdline-qemu-7.2.json").read_text()
)


def libvirt_args(disk: Path) -> list[str]:
    return [a.replace('"DISK"', json.dumps(str(disk))) for a in LIBVIRT]


def test_keyval_reads_qemuopts_syntax() -> None:
    assert parse_keyval("a=1,b=x,,y,c=") == [("a", "1"), ("b", "x,y"), ("c", "")]
    assert parse_keyval("64", "size") == [("size", "64")]
    assert parse_keyval("pc,accel=tcg", "type") == [("type", "pc"), ("accel", "tcg")]
    warnings: list[str] = []
    assert parse_keyval("id=x,nowait,server", warnings=warnings) == [
        ("id", "x"),
        ("wait", "off"),
        ("server", "on"),
    ]
    assert warnings[0].startswith("warning: short-form boolean option 'nowait' deprecated")


def test_json_options_and_their_errors() -> None:
    assert parse_object('{"driver": "x", "n": 1}', "driver") == {"driver": "x", "n": 1}
    assert parse_object("[1]", "driver") == {"driver": "[1]"}  # not JSON: key=value
    with pytest.raises(OptionError, match="JSON parse error, invalid keyword 'bad'"):
        parse_object("{bad", "driver")
    with pytest.raises(OptionError, match="Expecting at most one JSON value"):
        parse_object('{"driver":"x"} {}', "driver")


@pytest.mark.parametrize(
    ("text", "size"),
    [("64", 64 << 20), ("64M", 64 << 20), ("1G", 1 << 30), ("1.5k", 1536), ("abc", None)],
)
def test_sizes_default_to_megabytes(text: str, size: int | None) -> None:
    assert parse_size(text, default_suffix="m") == size


def test_the_libvirt_command_line(tmp_path: Path) -> None:
    disk = tmp_path / "disk0.raw"
    disk.write_bytes(b"\0" * 4096)
    inv = parse_command_line(libvirt_args(disk))
    assert inv.chardevs == (Chardev("charmonitor", "socket", fd=24, server=True, wait=False),)
    assert inv.monitors == (Monitor("charmonitor", "control"),)
    assert (inv.name, inv.paused, inv.no_shutdown, inv.msg_timestamp) == ("vm1", True, True, True)
    vm = build_vm(inv, cpu_thread_ids=[4242])
    assert (vm.name, vm.uuid) == ("vm1", "6f1c9a40-3b7e-4e4c-9d7e-1a2b3c4d5e6f")
    assert (vm.initial_state, vm.no_shutdown, vm.watchdog) == ("prelaunch", True, "pause")
    assert (vm.cpus, vm.cpu_thread_ids, vm.memory) == (1, (4242,), 64 << 20)
    assert vm.machine == "pc-i440fx-7.2"
    assert vm.vnc is not None and (vm.vnc.host, vm.vnc.port) == ("127.0.0.1", 5900)
    (d,) = vm.disks
    assert (d.name, d.wire_name, d.node_name, d.storage_node_name) == (
        "virtio-disk0",
        "",
        "libvirt-1-format",
        "libvirt-1-storage",
    )
    assert (d.qdev, d.file, d.format) == (
        "/machine/peripheral/virtio-disk0/virtio-backend",
        str(disk),
        "raw",
    )
    assert (d.on_read_error, d.on_write_error, d.virtual_size) == ("stop", "stop", 4096)
    assert [dev.id for dev in vm.devices] == [
        "usb",
        "virtio-disk0",
        "video0",
        "watchdog0",
        "balloon0",
    ]


def test_drives_are_named_and_numbered_as_qemu_names_them(tmp_path: Path) -> None:
    qcow2 = tmp_path / "d.qcow2"
    # a qcow2 header: magic, version, and the virtual size at offset 24
    qcow2.write_bytes(b"QFI\xfb" + b"\0" * 20 + (32 << 20).to_bytes(8, "big"))
    inv = parse_command_line(
        [
            "-drive", "file=/nonexistent/a.raw,if=virtio,format=raw,werror=stop",
            "-drive", f"file={qcow2},if=none,id=drive-y",
            "-device", "virtio-blk-pci,drive=drive-y",
            "-cdrom", "/nonexistent/c.iso",
        ]
    )  # fmt: skip
    vm = build_vm(inv)
    disks = {d.name: d for d in vm.disks}
    assert [d.name for d in vm.disks] == ["virtio0", "drive-y", "ide1-cd0"]  # as created
    assert disks["drive-y"].qdev == "/machine/peripheral-anon/device[0]/virtio-backend"
    assert disks["virtio0"].qdev == "/machine/peripheral-anon/device[1]/virtio-backend"
    assert (disks["drive-y"].format, disks["drive-y"].virtual_size) == ("qcow2", 32 << 20)
    assert disks["virtio0"].on_write_error == "stop"
    assert disks["ide1-cd0"].media == "cdrom"
    # automatic node names from the VM description, for any -drive: each disk's protocol
    # node, then its format node, a counter apiece; the block graph lists them newest first
    assert [d.node_name[:7] for d in vm.disks] == ["#block1", "#block3", "#block5"]
    nodes = Machine(vm=vm).execute("query-named-block-nodes", {}).reply
    assert [n["node-name"][:7] for n in nodes] == [f"#block{i}" for i in (5, 4, 3, 2, 1, 0)]
    assert disks["drive-y"].thin
    assert all(d.wire_name == d.name for d in disks.values())


def test_several_monitors_and_legacy_chardevs() -> None:
    inv = parse_command_line(
        [
            "-qmp", "unix:/tmp/a.sock,server=on,wait=off",
            "-qmp", "tcp:127.0.0.1:4444,server=on,wait=off",
            "-chardev", "socket,id=m2,path=/tmp/b.sock,server=on,wait=off",
            "-mon", "chardev=m2,mode=control,pretty=on",
        ]
    )  # fmt: skip
    assert [m.chardev for m in inv.monitors] == ["compat_monitor0", "compat_monitor1", "m2"]
    assert inv.monitors[2].pretty
    assert inv.chardevs[1] == Chardev(
        "compat_monitor1", "socket", host="127.0.0.1", port="4444", server=True, wait=False
    )
    assert inv.chardevs[0].filename(connected=True) == "unix:/tmp/a.sock,server=on"
    assert inv.chardevs[1].filename(connected=False) == (
        "disconnected:tcp:127.0.0.1:4444,server=on"
    )


def test_version_and_help_act_before_anything_else() -> None:
    inv = parse_command_line(["-m", "bogus", "-version"])
    assert inv.show_version


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (["-foo"], ["-foo: invalid option"]),
        (["-m"], ["-m: requires an argument"]),
        (["-S", "--S", "---S"], ["---S: invalid option"]),
        (["-uuid", "123"], ["-uuid 123: failed to parse UUID string: wrong format"]),
        (["-smp", "2,foo=1"], ["Parameter 'smp.foo' is unexpected"]),
        (["-prom-env", "x"], ["-prom-env x: Option not supported for this target"]),
        (
            ["-qmp", "bogus"],
            ["-qmp bogus: 'bogus' is not a valid char driver", "-qmp bogus: parse error: bogus"],
        ),
    ],
)
def test_refused_command_lines(args: list[str], lines: list[str]) -> None:
    with pytest.raises(OptionError) as caught:
        parse_command_line(args)
    assert caught.value.lines("qemu-system-x86_64") == [f"qemu-system-x86_64: {x}" for x in lines]
