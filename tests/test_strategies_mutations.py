"""A drawn stream passes the checker; the same stream with one event dropped, swapped or
corrupted (in ways no QEMU could produce) does not."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qmpsim.qmp.profiles import get_profile
from qmpsim.testing.conformance import check_events
from qmpsim.testing.strategies import event_streams, vm_configs
from qmpsim.vm import machine as m

PROFILES = ("qemu-7.2", "qemu-0.14")
MUTATIONS = settings(max_examples=40, derandomize=True, database=None, deadline=None)
Stream = list[dict[str, Any]]
RUN_STATE_MOVES = {"stop", "cont", "disk-error", "watchdog", "rtc-change", "guest-reset"}


def stamp(event: dict[str, Any]) -> int:
    return int(event["timestamp"]["seconds"]) * 1_000_000 + int(event["timestamp"]["microseconds"])


def drawn(data: st.DataObject, profile: str, causes: set[str] | None = None) -> tuple[Stream, str]:
    vm = data.draw(vm_configs(profile=profile), label="vm")
    streams = event_streams(profile=profile, vm=vm, min_size=2, causes=causes)
    stream = data.draw(streams, label="stream")
    status = "running" if vm.initial_state == "running" else "paused"
    assert check_events(stream, profile, initial_status=status) == []
    return stream, status


def caught(stream: Stream, profile: str, status: str) -> set[str]:
    return {v.rule for v in check_events(stream, profile, initial_status=status)}


@pytest.mark.parametrize("profile", PROFILES)
def test_dropping_a_stop_before_a_resume_is_caught(profile: str) -> None:
    @MUTATIONS
    @given(st.data())
    def dropped(data: st.DataObject) -> None:
        stream, status = drawn(data, profile, RUN_STATE_MOVES)
        stops = [
            i
            for i, e in enumerate(stream)
            if e["event"] == "STOP" and any(x["event"] == "RESUME" for x in stream[i:])
        ]
        assume(stops)
        i = data.draw(st.sampled_from(stops), label="dropped")
        assert caught(stream[:i] + stream[i + 1 :], profile, status)

    dropped()


@pytest.mark.parametrize("profile", PROFILES)
def test_swapping_events_out_of_time_order_is_caught(profile: str) -> None:
    throttled = set(get_profile(profile).throttle)

    @MUTATIONS
    @given(st.data())
    def swapped(data: st.DataObject) -> None:
        stream, status = drawn(data, profile)
        # the earlier event, once moved after a later one, has no excuse to be late
        pairs = [
            i
            for i in range(len(stream) - 1)
            if stamp(stream[i]) < stamp(stream[i + 1]) and stream[i]["event"] not in throttled
        ]
        assume(pairs)
        i = data.draw(st.sampled_from(pairs), label="swapped")
        mutated = [*stream[:i], stream[i + 1], stream[i], *stream[i + 2 :]]
        assert "timestamp-order" in caught(mutated, profile, status)

    swapped()


CORRUPTIONS = ("rename", "microseconds", "extra-member", "drop-data")


@pytest.mark.parametrize("profile", PROFILES)
def test_corrupting_an_event_is_caught(profile: str) -> None:
    spec = get_profile(profile)

    @MUTATIONS
    @given(st.data())
    def corrupted(data: st.DataObject) -> None:
        stream, status = drawn(data, profile)
        i = data.draw(st.integers(0, len(stream) - 1), label="index")
        how = data.draw(st.sampled_from(CORRUPTIONS), label="how")
        event = copy.deepcopy(stream[i])
        if how == "rename":
            event["event"] = event["event"].lower()
        elif how == "microseconds":
            event["timestamp"]["microseconds"] = 1_000_000
        elif how == "extra-member":
            event["id"] = 1
        else:
            assume(spec.events[event["event"]].data is not None)
            del event["data"]
        assert "schema" in caught([*stream[:i], event, *stream[i + 1 :]], profile, status)

    corrupted()


def test_a_missing_stop_after_an_io_error_is_caught() -> None:
    disk = m.DiskConfig(on_read_error="stop", on_write_error="stop")
    vm = m.VmConfig(disks=(disk,))

    @MUTATIONS
    @given(event_streams(vm=vm, causes={"disk-error", "cont", "rtc-change"}, min_size=2))
    def missing(stream: Stream) -> None:
        stops = [
            i
            for i, e in enumerate(stream)
            if e["event"] == "STOP" and i > 0 and stream[i - 1]["event"] == "BLOCK_IO_ERROR"
        ]
        assume(stops)
        i = stops[-1]
        assert "block-io-error-stop" in caught(stream[:i] + stream[i + 1 :], "qemu-7.2", "running")

    missing()
