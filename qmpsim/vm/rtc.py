"""The real-time clock: the guest writes its RTC, QEMU sends RTC_CHANGE (throttled)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .component import Component, on_cause
from .values import Event

if TYPE_CHECKING:
    from qmpsim.qmp.profiles import ProfileSpec

RTC_PATHS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((8, 0, 0), "/machine/unattached/device[3]/rtc"),
    ((0, 0, 0), "/machine/unattached/device[9]"),
)
"""Where a ``pc``'s RTC sits in the QOM tree, from the QEMU version on: an ISA device
of its own (measured on 7.2.22), then a child of the PIIX south bridge (measured on
10.0.2).  The move came with QEMU 8.0's PIIX rework, by QEMU's history: the versions
between 7.2 and 10.0 are not measured."""


def rtc_path(profile: ProfileSpec) -> str:
    """The QOM path of a ``pc``'s RTC in ``profile``'s QEMU."""
    return next(path for since, path in RTC_PATHS if profile.version >= since)


@dataclass(frozen=True)
class RtcChange:
    """The guest wrote its RTC: ``offset`` seconds from host UTC."""

    offset: int


class Rtc(Component):
    """The RTC: RTC_CHANGE, with the RTC's QOM path where the profile's QEMU names it."""

    @on_cause(RtcChange)
    def changed(self, c: RtcChange) -> list[Event]:
        data: dict[str, Any] = {"offset": c.offset}
        if self.host.profile.run_states:
            data["qom-path"] = self.host.vm.rtc_qom_path or rtc_path(self.host.profile)
        return self.host.send(self.host.event("RTC_CHANGE", data))
