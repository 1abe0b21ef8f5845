"""The simulated guest: the power button, unplug requests and trays, on the virtual clock."""

from __future__ import annotations

import random

import pytest

from qmpsim.qmp.profiles import get_profile
from qmpsim.vm.guest import Guest
from qmpsim.vm.machine import (
    GuestConfig,
    GuestPowerdown,
    Machine,
    MachineError,
    ManualClock,
    VmConfig,
    WatchdogExpired,
)


def machine(
    guest: GuestConfig | None, *, seed: int = 0, **vm: object
) -> tuple[Machine, ManualClock]:
    clock = ManualClock(100.0)
    config = VmConfig(guest=guest, **vm)  # type: ignore[arg-type]
    return Machine(
        vm=config, profile=get_profile("qemu-7.2"), clock=clock, rng=random.Random(seed)
    ), clock


def names(events: object) -> list[str]:
    return [e.name for e in events]  # type: ignore[attr-defined]


def test_without_a_guest_the_power_button_is_only_powerdown() -> None:
    m, clock = machine(None)
    assert names(m.execute("system_powerdown", {}).events) == ["POWERDOWN"]
    assert m.next_deadline() is None
    clock.advance(3600)
    assert m.poll() == [] and m.status == "running"


def test_a_guest_shuts_down_after_its_delay_and_qemu_exits() -> None:
    m, clock = machine(GuestConfig(powerdown_delay=(2.0, 2.0)))
    assert names(m.execute("system_powerdown", {}).events) == ["POWERDOWN"]
    assert m.next_deadline() == 102.0
    clock.advance(1.9)
    assert m.poll() == []
    clock.advance(0.1)
    (shutdown,) = m.poll()
    assert shutdown.name == "SHUTDOWN" and shutdown.time == 102.0
    assert shutdown.data == {"guest": True, "reason": "guest-shutdown"}
    assert m.exited


def test_under_no_shutdown_the_guest_stops_and_reset_cont_boots_again() -> None:
    m, clock = machine(GuestConfig(powerdown_delay=1.0), no_shutdown=True)
    m.execute("system_powerdown", {})
    m.execute("system_powerdown", {})  # a second press while shutting down changes nothing
    clock.advance(1)
    assert names(m.poll()) == ["SHUTDOWN", "STOP"]
    assert m.status == "shutdown" and not m.exited
    assert m.next_deadline() is None
    assert names(m.execute("system_reset", {}).events) == ["RESET"]
    assert names(m.execute("cont", {}).events) == ["RESUME"]


def test_a_guest_that_ignores_the_power_button() -> None:
    m, clock = machine(GuestConfig(powerdown="ignore"))
    m.execute("system_powerdown", {})
    clock.advance(60)
    assert m.poll() == [] and m.running


def test_the_watchdog_shutdown_action_and_the_cause_press_the_button_too() -> None:
    m, clock = machine(GuestConfig(powerdown_delay=1.0), watchdog="shutdown")
    assert names(m.cause(WatchdogExpired())) == ["WATCHDOG", "POWERDOWN"]
    clock.advance(1)
    assert names(m.poll()) == ["SHUTDOWN"]
    m2, clock2 = machine(GuestConfig(powerdown_delay=1.0))
    assert names(m2.cause(GuestPowerdown())) == ["POWERDOWN"]
    clock2.advance(1)
    assert names(m2.poll()) == ["SHUTDOWN"]


def test_a_paused_guest_acts_once_it_runs_and_a_reset_forgets() -> None:
    m, clock = machine(GuestConfig(powerdown_delay=1.0))
    m.execute("stop", {})
    m.execute("system_powerdown", {})
    clock.advance(5)
    assert m.next_deadline() is None and m.poll() == []
    m.execute("cont", {})
    assert names(m.poll()) == ["SHUTDOWN"]
    m2, clock2 = machine(GuestConfig(powerdown_delay=1.0))
    m2.execute("system_powerdown", {})
    m2.execute("system_reset", {})
    clock2.advance(5)
    assert m2.poll() == [] and m2.running


def test_delays_are_drawn_from_the_seed() -> None:
    def due(seed: int) -> float | None:
        m, _ = machine(GuestConfig(powerdown_delay=(1.0, 3.0)), seed=seed)
        m.execute("system_powerdown", {})
        return m.next_deadline()

    assert due(1) == due(1)
    assert {due(s) for s in range(5)} != {due(1)}
    assert all(101.0 <= (due(s) or 0) <= 103.0 for s in range(5))


def test_tray_policy_is_exposed_for_the_block_model() -> None:
    m, _ = machine(GuestConfig(lock_tray=True, tray="ignore"))
    guest = m.part(Guest)
    assert guest.locks_trays
    assert not guest.tray_eject_request("cd0", list)
    m2, clock = machine(GuestConfig(tray_delay=0.5))
    opened: list[str] = []
    assert m2.part(Guest).tray_eject_request("cd0", lambda: opened.append("cd0") or [])
    assert m2.part(Guest).pending() == ["open tray cd0"]
    clock.advance(0.5)
    m2.poll()
    assert opened == ["cd0"]
    assert not machine(None)[0].part(Guest).locks_trays


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"powerdown": "halt"}, "guest powerdown 'halt' is not one of shutdown, ignore"),
        ({"unplug": "maybe"}, "guest unplug 'maybe' is not one of eject, ignore, refuse"),
        ({"unplug_delay": (2.0, 1.0)}, "guest unplug_delay [2.0, 1.0] is not 0 <= low <= high"),
    ],
)
def test_a_wrong_guest_description_says_what_is_expected(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(MachineError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GuestConfig(**config)  # type: ignore[arg-type]
