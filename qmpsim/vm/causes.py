"""Everything that can happen to the VM, which the machine turns into events: each
cause is a frozen dataclass defined beside the component that handles it."""

from __future__ import annotations

from .balloon import BalloonResized
from .block import DiskError, DiskIo, DiskRepaired, TrayMoved
from .devices import DeviceEjected, UnplugRefused
from .display import (
    SpiceConnect,
    SpiceDisconnect,
    SpiceInitialize,
    VncConnect,
    VncDisconnect,
    VncInitialize,
)
from .jobs import JobError
from .migration import (
    GuestDirtiesMemory,
    IncomingCompleted,
    IncomingConnected,
    IncomingFailed,
    IncomingPostcopy,
    MigrationTargetLost,
)
from .power import (
    GuestCrashLoaded,
    GuestPanic,
    GuestPowerdown,
    GuestReset,
    GuestShutdown,
    HostSignal,
)
from .rtc import RtcChange
from .suspend import GuestSuspend
from .watchdog import WatchdogExpired

__all__ = ["GUEST_CAUSES", "Cause"]

Cause = (
    DiskError
    | DiskRepaired
    | DiskIo
    | TrayMoved
    | JobError
    | WatchdogExpired
    | RtcChange
    | GuestShutdown
    | GuestReset
    | GuestPanic
    | GuestCrashLoaded
    | GuestPowerdown
    | HostSignal
    | DeviceEjected
    | UnplugRefused
    | VncConnect
    | VncInitialize
    | VncDisconnect
    | SpiceConnect
    | SpiceInitialize
    | SpiceDisconnect
    | BalloonResized
    | GuestSuspend
    | GuestDirtiesMemory
    | MigrationTargetLost
    | IncomingConnected
    | IncomingCompleted
    | IncomingFailed
    | IncomingPostcopy
)
"""Things that happen to the VM, which the machine turns into events."""

GUEST_CAUSES = (
    DiskError,
    DiskIo,
    WatchdogExpired,
    RtcChange,
    GuestShutdown,
    GuestReset,
    GuestPanic,
    GuestCrashLoaded,
    DeviceEjected,
    UnplugRefused,
)
"""The causes that come from a guest whose vCPUs run: refused while they do not."""
