"""The memory balloon: the device's target, the guest's driver on the clock, the throttle."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from qmpsim.machine import (
    BalloonResized,
    GuestConfig,
    Machine,
    MachineError,
    ManualClock,
    VmConfig,
)
from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.machine import DeviceConfig

MiB = 1 << 20
RAM = 128 * MiB
BALLOON = (DeviceConfig("virtio-balloon-pci", "balloon0"),)


def machine(
    guest: GuestConfig | None = None, *, devices: tuple[DeviceConfig, ...] = BALLOON, **vm: object
) -> tuple[Machine, ManualClock]:
    clock = ManualClock(100.0)
    config = VmConfig(cpus=1, devices=devices, guest=guest, **vm)  # type: ignore[arg-type]
    return Machine(config, get_profile("qemu-7.2"), clock, rng=random.Random(0)), clock


def actual(m: Machine) -> object:
    return m.execute("query-balloon", {}).reply


def run_until_idle(m: Machine, clock: ManualClock, limit: float = 600.0) -> list[tuple[float, int]]:
    """Advance to each deadline; the BALLOON_CHANGE events seen, as (time, actual)."""
    seen = []
    while (deadline := m.next_deadline()) is not None and deadline - 100.0 < limit:
        clock.advance(max(0.0, deadline - clock.now))
        seen += [(e.time, e.data["actual"]) for e in m.poll() if e.name == "BALLOON_CHANGE"]
    return seen


def test_without_a_balloon_device_both_commands_are_refused() -> None:
    m, _ = machine(devices=())
    for command, args in (("query-balloon", {}), ("balloon", {"value": 0})):
        reply = m.execute(command, args).reply
        assert reply.error_class == "DeviceNotActive"  # type: ignore[union-attr]
        assert reply.desc == "No balloon device has been activated"  # type: ignore[union-attr]


def test_without_a_driver_the_target_changes_nothing_the_host_sees() -> None:
    m, clock = machine(None)
    assert actual(m) == {"actual": RAM}
    assert m.execute("balloon", {"value": 64 * MiB}).reply == {}
    assert run_until_idle(m, clock) == []
    assert actual(m) == {"actual": RAM}


@pytest.mark.parametrize("value", [0, -1])
def test_a_target_that_is_not_a_size_is_refused(value: int) -> None:
    m, _ = machine(GuestConfig())
    reply = m.execute("balloon", {"value": value}).reply
    assert reply.desc == "Parameter 'target' expects a size"  # type: ignore[union-attr]
    assert m.next_deadline() is None


def test_a_slow_guest_inflates_at_its_rate_and_the_throttle_lets_one_event_a_second_out() -> None:
    m, clock = machine(GuestConfig(balloon_rate=16 * MiB, balloon_delay=0.5))
    assert m.execute("balloon", {"value": 64 * MiB}).events == ()
    seen = run_until_idle(m, clock)
    times = [round(t - 100.0, 3) for t, _ in seen]
    # first report 0.5 s after the request, then one a second: the throttle's windows
    gaps = [b - a for a, b in pairwise(times)]
    assert times[0] == 0.5 and all(g >= 1.0 - 1e-6 for g in gaps)
    assert [a for _, a in seen] == sorted((a for _, a in seen), reverse=True)
    assert seen[-1][1] == 64 * MiB == actual(m)["actual"]  # type: ignore[index]
    # 64 MiB at 16 MiB/s: about four seconds of reports, the last one out when its window closed
    assert 4.0 <= clock.now - 100.0 <= 5.6
    assert len(seen) == 5


def test_query_balloon_shows_the_guest_on_its_way() -> None:
    m, clock = machine(GuestConfig(balloon_rate=16 * MiB, balloon_delay=0.0))
    m.execute("balloon", {"value": 64 * MiB})
    clock.advance(2.0)
    m.poll()
    now = actual(m)["actual"]  # type: ignore[index]
    assert 64 * MiB < now < RAM
    assert (RAM - now) % 4096 == 0


def test_a_target_beyond_the_ram_deflates_to_all_of_it_and_pages_round_up() -> None:
    m, clock = machine(GuestConfig(balloon_delay=0.0))
    m.execute("balloon", {"value": 100 * MiB + 1})
    run_until_idle(m, clock)
    assert actual(m) == {"actual": 100 * MiB + 4096}  # num_pages rounds down: actual up
    m.execute("balloon", {"value": 1 << 40})
    run_until_idle(m, clock)
    assert actual(m) == {"actual": RAM}


def test_a_guest_that_ignores_the_balloon_keeps_its_memory() -> None:
    m, clock = machine(GuestConfig(balloon="ignore"))
    m.execute("balloon", {"value": 32 * MiB})
    assert m.next_deadline() is None and run_until_idle(m, clock) == []
    assert actual(m) == {"actual": RAM}


def test_a_paused_guest_moves_nothing_until_it_runs_again() -> None:
    m, clock = machine(GuestConfig(balloon_rate=16 * MiB, balloon_delay=0.0))
    m.execute("balloon", {"value": 64 * MiB})
    clock.advance(1.0)
    m.poll()
    m.execute("stop", {})
    run_until_idle(m, clock)  # the report the throttle held goes out; the driver stops
    held = actual(m)
    assert held != {"actual": RAM} and m.next_deadline() is None
    clock.advance(60.0)
    assert m.poll() == [] and actual(m) == held
    m.execute("cont", {})
    # it goes on where it stopped: three more seconds of moving and the last window, not sixty
    start = clock.now
    run_until_idle(m, clock)
    assert actual(m) == {"actual": 64 * MiB}
    assert 3.0 < clock.now - start < 5.0


def test_the_guest_reports_a_size_itself() -> None:
    m, clock = machine(GuestConfig(balloon="ignore"))
    (event,) = m.cause(BalloonResized(96 * MiB))
    assert (event.name, event.data) == ("BALLOON_CHANGE", {"actual": 96 * MiB})
    assert m.cause(BalloonResized(96 * MiB)) == []  # the same size again: nothing changed
    assert m.cause(BalloonResized(80 * MiB)) == []  # within the second: held back
    clock.advance(1.0)
    assert [e.data for e in m.poll()] == [{"actual": 80 * MiB}]
    assert actual(m) == {"actual": 80 * MiB}


def test_causes_need_a_balloon_and_a_running_guest() -> None:
    m, _ = machine(GuestConfig(), devices=())
    with pytest.raises(MachineError, match="no balloon device"):
        m.cause(BalloonResized(MiB))
    m, _ = machine(GuestConfig(), initial_state="paused")
    with pytest.raises(MachineError, match="needs a running guest"):
        m.cause(BalloonResized(MiB))


def test_one_balloon_only_and_a_new_one_starts_full() -> None:
    m, clock = machine(GuestConfig(balloon_delay=0.0))
    refused = m.execute("device_add", {"driver": "virtio-balloon-pci", "id": "b2"}).reply
    assert refused.desc == "Only one balloon device is supported"  # type: ignore[union-attr]
    m.execute("balloon", {"value": 64 * MiB})
    run_until_idle(m, clock)
    m.execute("device_del", {"id": "balloon0"})
    run_until_idle(m, clock)
    assert m.execute("query-balloon", {}).reply.error_class == "DeviceNotActive"  # type: ignore[union-attr]
    assert m.execute("device_add", {"driver": "virtio-balloon-pci", "id": "b2"}).reply == {}
    assert actual(m) == {"actual": RAM}


def test_a_reset_machine_repeats_itself() -> None:
    m, clock = machine(GuestConfig(balloon_rate=8 * MiB))
    m.execute("balloon", {"value": 100 * MiB})
    first = run_until_idle(m, clock)
    m.reset()
    clock.now = 100.0
    assert actual(m) == {"actual": RAM}
    m.execute("balloon", {"value": 100 * MiB})
    assert run_until_idle(m, clock) == first


# --- the guest's statistics (guest-stats, guest-stats-polling-interval) ----------------


def stats(m: Machine) -> dict[str, object]:
    reply = m.execute("qom-get", {"path": "balloon0", "property": "guest-stats"}).reply
    assert isinstance(reply, dict)
    return reply


def set_interval(m: Machine, seconds: object) -> object:
    path = "/machine/peripheral/balloon0"
    args = {"path": path, "property": "guest-stats-polling-interval", "value": seconds}
    return m.execute("qom-set", args).reply


def test_a_guest_without_a_driver_never_reports_statistics() -> None:
    m, clock = machine(GuestConfig(balloon="ignore"))
    assert set_interval(m, 1) == {}
    clock.advance(10)
    m.poll()
    got = stats(m)
    assert got["last-update"] == 0
    assert set(got["stats"].values()) == {(1 << 64) - 1}  # type: ignore[attr-defined]


def test_a_driver_reports_when_the_guest_first_runs_then_at_each_poll_of_the_timer() -> None:
    m, clock = machine(GuestConfig())
    first = stats(m)
    assert first["last-update"] == 100
    figures = first["stats"]
    assert isinstance(figures, dict)
    assert figures["stat-total-memory"] == RAM
    assert figures["stat-free-memory"] == RAM // 2
    assert figures["stat-minor-faults"] == 1000
    assert set_interval(m, 2) == {}  # the new timer asks at once, then every 2 s
    clock.advance(5)
    m.poll()
    assert stats(m)["last-update"] == 104
    assert stats(m)["stats"]["stat-minor-faults"] == 4000  # type: ignore[index]
    # the virtual clock stands while the vCPUs do: 10 s paused add nothing
    m.execute("stop", {})
    clock.advance(10)
    m.poll()
    assert stats(m)["last-update"] == 104
    m.execute("cont", {})  # at 115: 106 was due, 10 s later it is 116
    clock.advance(0.5)
    m.poll()
    assert stats(m)["last-update"] == 104
    clock.advance(0.5)
    m.poll()
    assert stats(m)["last-update"] == 116
    # turned off, the last figures stay
    assert set_interval(m, 0) == {}
    clock.advance(30)
    m.poll()
    assert stats(m)["last-update"] == 116


def test_the_total_follows_the_balloon() -> None:
    m, clock = machine(GuestConfig(balloon_delay=(0.0, 0.0)))
    m.execute("balloon", {"value": 64 * MiB})
    run_until_idle(m, clock)
    assert set_interval(m, 1) == {}
    m.poll()
    assert stats(m)["stats"]["stat-total-memory"] == 64 * MiB  # type: ignore[index]


@pytest.mark.parametrize(
    ("profile", "count"), [("qemu-7.2", 10), ("qemu-9.1", 16), ("qemu-10.0", 16)]
)
def test_the_statistics_each_version_reports(profile: str, count: int) -> None:
    config = VmConfig(cpus=1, devices=BALLOON, guest=GuestConfig())
    m = Machine(config, get_profile(profile), ManualClock(100.0), rng=random.Random(0))
    assert len(stats(m)["stats"]) == count  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "desc"),
    [
        (-1, "timer value must be greater than zero"),
        (1 << 32, "timer value is too big"),
        ("5", "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
        (True, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
        (1 << 63, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    ],
)
def test_a_polling_interval_qemu_refuses(value: object, desc: str) -> None:
    m, _ = machine(GuestConfig())
    reply = set_interval(m, value)
    assert reply.desc == desc  # type: ignore[attr-defined]
    assert set_interval(m, (1 << 32) - 1) == {}


@pytest.mark.parametrize("profile", ["qemu-7.2", "qemu-9.1"])
def test_the_property_list_names_the_polling_interval(profile: str) -> None:
    """What libvirt looks for before it polls: recorded for 7.2, the model's list for 9.1."""
    config = VmConfig(cpus=1, devices=BALLOON, guest=GuestConfig())
    m = Machine(config, get_profile(profile), ManualClock(100.0), rng=random.Random(0))
    listed = m.execute("qom-list", {"path": "/machine/peripheral/balloon0"}).reply
    assert isinstance(listed, list)
    assert {"name": "guest-stats-polling-interval", "type": "int"} in listed
    assert {"name": "guest-stats", "type": "guest statistics"} in listed
    assert len(listed) > (50 if profile == "qemu-7.2" else 10)
