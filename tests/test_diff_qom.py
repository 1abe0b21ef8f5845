"""``qom-get`` and ``qom-set`` on plugged devices, against real QEMU 7.2 and 10.0.

A guestless ``-M pc -S`` with a balloon, a virtio NIC and an anonymous e1000: their
property lists (``qom-list``, which the profiles of 7.2 and 10.0 recorded), the
read-only, the static and the settable properties, a virtio proxy's aliases of
its backend's properties (errors name the backend, an anonymous device), the
backend child itself, and the balloon's statistics, which no guest reports here.
Messages are compared as parsed JSON, and the statistics' member order as QEMU
wrote it.
"""

from __future__ import annotations

from typing import Any

import pytest
from qemu_harness import Referee, qemu_process
from test_diff_devices import Real, Sim, profile_for
from test_diff_machine import RealMonitor

from qmpsim.vm.machine import DeviceConfig, VmConfig

pytestmark = pytest.mark.qemu

BALLOON = "/machine/peripheral/balloon0"
DEVICES = (
    ("virtio-balloon-pci", "balloon0"),
    ("virtio-net-pci", "net0"),
    ("e1000", None),
)


def get(path: str, prop: str) -> tuple[str, dict[str, Any]]:
    return "qom-get", {"path": path, "property": prop}


def put(path: str, prop: str, value: Any) -> tuple[str, dict[str, Any]]:
    return "qom-set", {"path": path, "property": prop, "value": value}


def ls(path: str) -> tuple[str, dict[str, Any]]:
    return "qom-list", {"path": path}


STEPS = [
    ls(BALLOON),
    ls(f"{BALLOON}/virtio-backend"),
    ls("/machine/peripheral/net0"),
    ls("/machine/peripheral/net0/virtio-backend"),
    ls("/machine/peripheral-anon/device[0]"),
    ls("/machine/peripheral-anon/device[0]/virtio-backend"),
    ls("/machine/peripheral/nope"),
    get(BALLOON, "guest-stats"),
    get(BALLOON, "guest-stats-polling-interval"),
    put(BALLOON, "guest-stats-polling-interval", 2),
    get("balloon0", "guest-stats-polling-interval"),
    put("balloon0", "guest-stats-polling-interval", 2),  # the same: nothing changes
    put("balloon0", "guest-stats-polling-interval", -1),
    put("balloon0", "guest-stats-polling-interval", "5"),
    put("balloon0", "guest-stats-polling-interval", 1.5),
    put("balloon0", "guest-stats-polling-interval", True),
    put("balloon0", "guest-stats-polling-interval", 4294967295),
    put("balloon0", "guest-stats-polling-interval", 4294967296),
    put("balloon0", "guest-stats-polling-interval", 9223372036854775808),
    get("balloon0", "guest-stats-polling-interval"),
    put("balloon0", "guest-stats-polling-interval", 0),
    put("balloon0", "guest-stats", 4),
    *(
        get("balloon0", name)
        for name in (
            "deflate-on-oom",
            "free-page-hint",
            "free-page-reporting",
            "page-poison",
            "qemu-4-0-config-size",
            "type",
            "nope",
        )
    ),
    put("balloon0", "deflate-on-oom", True),
    put("balloon0", "addr", 5),
    *(put("balloon0", name, True) for name in ("hotplugged", "hotpluggable", "parent_bus", "type")),
    put("balloon0", "nope", 1),
    put("/machine/peripheral/nope", "x", 1),
    put("balloon0", "realized", True),
    put("balloon0", "realized", 1),
    put("balloon0", "realized", "x"),
    get(f"{BALLOON}/virtio-backend", "type"),
    get(f"{BALLOON}/virtio-backend", "guest-stats-polling-interval"),
    get(f"{BALLOON}/virtio-backend", "addr"),
    put(f"{BALLOON}/virtio-backend", "guest-stats-polling-interval", 3),
    get("balloon0", "guest-stats-polling-interval"),
    put(f"{BALLOON}/virtio-backend", "deflate-on-oom", True),
    put(f"{BALLOON}/virtio-backend", "type", "x"),
    get(f"{BALLOON}/virtio-backend", "guest-stats"),
    get("net0", "mac"),
    get("/machine/peripheral/net0/virtio-backend", "mac"),
    get("/machine/peripheral/net0/virtio-backend", "netdev"),
    put("net0", "mac", "52:54:00:12:34:57"),
    put("net0", "netdev", "x"),
    put("net0", "addr", 7),
    put("/machine/peripheral-anon/device[0]", "addr", 5),
    put("/machine/peripheral-anon/device[0]", "mac", "52:54:00:12:34:59"),
    get("/machine/peripheral-anon/device[0]/virtio-backend", "type"),
    put("/machine/unattached/device[0]", "type", 3),
    put("/machine/unattached/device[0]", "nope", 3),
    ("human-monitor-command", {"command-line": "info balloon"}),
    ("human-monitor-command", {"command-line": "info balloon 1"}),
]


def test_qom_get_and_set_on_devices(real_qemu: Referee) -> None:
    args = [a for driver, dev_id in DEVICES for a in ("-device", _device(driver, dev_id))]
    with qemu_process("-M", "pc", "-S", *args, referee=real_qemu) as path:
        real = Real(RealMonitor(path))
        try:
            for command, arguments in STEPS:
                real.execute(command, arguments)
        finally:
            real.monitor.close()
    vm = VmConfig(
        cpus=1,
        initial_state="prelaunch",
        devices=tuple(DeviceConfig(driver, dev_id) for driver, dev_id in DEVICES),
    )
    sim = Sim(profile_for(real_qemu), vm)
    for command, arguments in STEPS:
        sim.execute(command, arguments)
    assert len(sim.messages) == len(real.messages) == len(STEPS)
    for step, mine, theirs in zip(STEPS, sim.messages, real.messages, strict=True):
        assert mine == theirs, step
    # the statistics' members in the order QEMU's dictionary gave them
    theirs_order = _stats_orders(real.messages)
    assert len(theirs_order) == 2 and len(theirs_order[0]) in (10, 16)
    assert _stats_orders(sim.messages) == theirs_order


def _stats_orders(messages: list[dict[str, Any]]) -> list[list[str]]:
    replies = [m.get("return") for m in messages]
    return [list(r["stats"]) for r in replies if isinstance(r, dict) and "stats" in r]


def _device(driver: str, dev_id: str | None) -> str:
    return driver if dev_id is None else f"{driver},id={dev_id}"
