"""The VM a walk runs, drawn: one a scenario file can express.

The order of every option below is part of each seed's stream.
"""

from __future__ import annotations

from qmpsim.qmp.profiles import Enum, ProfileSpec
from qmpsim.testing.walk.choices import Choices
from qmpsim.vm import machine as m

__all__ = ["choose_vm"]

_READ_POLICIES = ("report", "stop", "ignore")
_WRITE_POLICIES = ("enospc", "report", "stop", "ignore")


def _watchdog_actions(spec: ProfileSpec) -> tuple[str, ...]:
    """The actions the profile's WATCHDOG event may say (older QEMUs know fewer)."""
    watchdog = spec.events.get("WATCHDOG")
    if watchdog is None or watchdog.data is None:
        return ()
    member = watchdog.data.member("action")
    return member.type.values if member is not None and isinstance(member.type, Enum) else ()


def choose_vm(ch: Choices, spec: ProfileSpec) -> m.VmConfig:
    """A VM a scenario file can express: disks, VNC, SPICE, watchdog, -no-shutdown, and
    a PCI bus (a ``pc`` machine with one vCPU) or none."""
    disks = tuple(
        m.DiskConfig(
            name=f"virtio{i}",
            on_read_error=ch.choice(_READ_POLICIES),
            on_write_error=ch.choice(_WRITE_POLICIES),
            thin=True,  # the walk may run it out of space
        )
        for i in range(ch.integer(0, 2))
    )
    actions = _watchdog_actions(spec)
    watchdog = ch.integer(0, len(actions))
    return m.VmConfig(
        initial_state=ch.choice(("running", "paused", "prelaunch")),
        no_shutdown=ch.boolean(),
        watchdog=actions[watchdog - 1] if watchdog else None,
        disks=disks,
        vnc=m.VncConfig() if ch.boolean() else None,
        spice=m.SpiceConfig() if ch.boolean() else None,
        cpus=1 if ch.boolean() else 0,
    )
