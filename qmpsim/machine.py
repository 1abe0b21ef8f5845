"""The VM model: run state, devices, causal rules and what each command does.

The machine is sans-I/O and clock-driven: time comes from an injected clock and
randomness from an injected ``random.Random``.  It answers commands with an
:class:`Outcome` (the events the command caused, then the reply) and turns
*causes* (a disk error, a watchdog expiry, a VNC client arriving…) into the
conformant event sequence QEMU would emit.  Events QEMU throttles, and events
that come after a reply, wait in the machine until :meth:`Machine.poll` hands
them out; :meth:`Machine.next_deadline` says when.
"""

from __future__ import annotations

import copy
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .catalog import DEFAULT_PROFILE, ProfileSpec, get_profile, validate_event
from .errors import CatalogError, QmpSimError

Clock = Callable[[], float]
"""Seconds since the epoch, as a float (``time.time`` by default)."""

RUN_STATES = (
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
)
"""QEMU 7.2's ``RunState`` values, as ``query-status`` reports them."""

INITIAL_STATES = ("running", "paused", "prelaunch")

# runstate_needs_reset(): the states only system_reset leaves.  guest-panicked is not
# one of them: QEMU 7.2 resumes a panicked guest on `cont` (tests/test_diff_guest_devices.py).
_NEEDS_RESET = ("shutdown", "internal-error")
_STRERROR = {False: "Input/output error", True: "No space left on device"}


class MachineError(QmpSimError):
    """A cause the VM cannot undergo in its present state, or a VM description that is wrong."""


class ManualClock:
    """A deterministic clock: ``start`` plus the virtual time :meth:`advance` added."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (never backward)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back in time")
        self.now += seconds


def virtual_clock(start: float, elapsed: Callable[[], float]) -> Clock:
    """A clock reading ``start + elapsed()``; with ``trio.current_time`` under a ``MockClock``
    it gives reproducible timestamps."""
    return lambda: start + elapsed()


@dataclass(frozen=True)
class Event:
    """One event as it goes on the wire: name, optional data, timestamp."""

    name: str
    data: Mapping[str, Any] | None
    seconds: int
    microseconds: int

    def to_json(self) -> dict[str, Any]:
        """The message object, members in the order QEMU inserts them."""
        msg: dict[str, Any] = {
            "timestamp": {"seconds": self.seconds, "microseconds": self.microseconds},
            "event": self.name,
        }
        if self.data is not None:
            msg["data"] = _plain(self.data)
        return msg

    def message(self) -> Mapping[str, Any]:
        """:meth:`to_json` built once and shared (validated, then encoded): read it only."""
        cached: Mapping[str, Any] | None = self.__dict__.get("_message")
        if cached is None:
            cached = self.to_json()
            object.__setattr__(self, "_message", cached)  # a cache, not a field
        return cached

    @property
    def time(self) -> float:
        """The timestamp as float seconds."""
        return self.seconds + self.microseconds / 1_000_000


_SCALARS = frozenset((str, int, bool, float, type(None)))


def _plain(value: Any) -> Any:
    if type(value) is dict and _SCALARS.issuperset(map(type, value.values())):
        return dict(value)  # the common case, copied in C
    if isinstance(value, Mapping):
        return {k: v if type(v) in _SCALARS else _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _SCALARS else _plain(v) for v in value]
    return value


@dataclass(frozen=True)
class CommandError:
    """An error reply: QEMU's error class and human-readable text."""

    error_class: str
    desc: str


@dataclass(frozen=True)
class Outcome:
    """What a command produced: events first, then the reply; ``close`` ends the connection."""

    reply: Any | CommandError
    events: tuple[Event, ...] = ()
    close: bool = False


# --- causes: things that happen to the VM, which the machine turns into events ---


@dataclass(frozen=True)
class DiskError:
    """A disk I/O error on ``device``; the disk's error policy decides the action.

    When the action is ``stop``, ``cont`` retries the request: it succeeds unless
    ``persistent``, in which case it fails again (same event, another STOP) at every
    ``cont`` until :class:`DiskRepaired` (or ``system_reset``, which drops it).
    """

    device: str
    operation: str = "read"  # "read" | "write"
    nospace: bool = False
    persistent: bool = False


@dataclass(frozen=True)
class WatchdogExpired:
    """The watchdog timer expired; ``action`` overrides the VM's configured one."""

    action: str | None = None


@dataclass(frozen=True)
class RtcChange:
    """The guest wrote its RTC: ``offset`` seconds from host UTC."""

    offset: int


@dataclass(frozen=True)
class GuestShutdown:
    """The guest powered itself off (ACPI shutdown, halt)."""


@dataclass(frozen=True)
class GuestReset:
    """The guest rebooted itself."""


@dataclass(frozen=True)
class GuestPanic:
    """The guest kernel panicked (pvpanic)."""


@dataclass(frozen=True)
class VncConnect:
    """A VNC client called ``client`` (any stable label) opened a connection.

    ``host``/``service``/``family`` are its address (default: loopback, a random port).
    """

    client: str
    host: str | None = None
    service: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class VncInitialize:
    """The VNC client ``client`` passed authentication; its session is active.

    ``x509_dname``/``sasl_username`` identify it when the server's auth uses TLS/SASL.
    """

    client: str
    x509_dname: str | None = None
    sasl_username: str | None = None


@dataclass(frozen=True)
class VncDisconnect:
    """The VNC client ``client`` went away."""

    client: str


@dataclass(frozen=True)
class SpiceConnect:
    """A SPICE channel of client ``client`` connected (address: as for :class:`VncConnect`)."""

    client: str
    channel_type: int = 1
    channel_id: int = 0
    host: str | None = None
    port: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class SpiceInitialize:
    """A SPICE channel of ``client`` completed its handshake (``tls``: default the server's)."""

    client: str
    channel_type: int = 1
    channel_id: int = 0
    tls: bool | None = None


@dataclass(frozen=True)
class SpiceDisconnect:
    """A SPICE channel of client ``client`` went away."""

    client: str
    channel_type: int = 1
    channel_id: int = 0


@dataclass(frozen=True)
class GuestPowerdown:
    """An ACPI power button press reached the guest (what ``system_powerdown`` does)."""


@dataclass(frozen=True)
class HostSignal:
    """The host asked QEMU to terminate (SIGTERM, SIGINT or SIGHUP): SHUTDOWN
    ``{guest: false, reason: host-signal}``, then QEMU exits, even under ``-no-shutdown``."""


@dataclass(frozen=True)
class DiskRepaired:
    """The host fixed what made ``device`` fail; the next ``cont`` retry succeeds."""

    device: str


Cause = (
    DiskError
    | DiskRepaired
    | WatchdogExpired
    | RtcChange
    | GuestShutdown
    | GuestReset
    | GuestPanic
    | GuestPowerdown
    | HostSignal
    | VncConnect
    | VncInitialize
    | VncDisconnect
    | SpiceConnect
    | SpiceInitialize
    | SpiceDisconnect
)

# --- the VM description ----------------------------------------------------------

ERROR_POLICIES = ("report", "ignore", "stop", "enospc")
DISK_FORMATS = ("raw", "qcow2")
# what `qemu-img create` allocates for an empty image (query-block's actual-size)
_FRESH_SIZE = {"raw": 4096, "qcow2": 200704}


@dataclass(frozen=True)
class DiskConfig:
    """A block device: ``-drive file=…,format=…,if=virtio,rerror=…,werror=…``.

    Left empty, ``node_name``, ``file``, ``qdev`` and ``actual_size`` are filled in
    by :class:`VmConfig`, per disk, as QEMU would: an automatic ``#blockNNN`` node
    name, ``/var/lib/qemu/NAME.qcow2`` (``.img`` when raw), the disk's own virtio
    device, and the size of a freshly created image.  A ``thin`` disk is
    thin-provisioned: only such a disk can run out of space (ENOSPC).
    """

    name: str = "virtio0"
    node_name: str = ""
    file: str = ""
    format: str = "qcow2"
    virtual_size: int = 16 * 1024**3
    actual_size: int | None = None
    read_only: bool = False
    on_read_error: str = "report"
    on_write_error: str = "enospc"
    qdev: str = ""
    thin: bool = False
    device: str | None = None
    """The backend's name on the wire (``query-block``'s ``device``): ``None`` is ``name``;
    ``""`` for a disk on a ``-blockdev`` node, which QEMU names by ``node_name`` only."""
    storage_node_name: str | None = None
    """The protocol (``file``) node under the format node, when the command line named it."""
    media: str = "disk"
    """``disk`` or ``cdrom``."""

    @property
    def wire_name(self) -> str:
        """What QEMU calls this disk in ``query-block`` and ``BLOCK_IO_ERROR``."""
        return self.name if self.device is None else self.device

    def action(self, operation: str, nospace: bool) -> str:
        """The ``BLOCK_IO_ERROR`` action this disk takes (``blk_get_error_action``)."""
        policy = self.on_write_error if operation == "write" else self.on_read_error
        if policy == "enospc":
            return "stop" if nospace else "report"
        return policy

    @property
    def iostatus_enabled(self) -> bool:
        """Whether QEMU tracks (and reports) this disk's io-status (``blk_iostatus_is_enabled``)."""
        return self.on_write_error in ("enospc", "stop") or self.on_read_error == "stop"


def _complete_disks(disks: tuple[DiskConfig, ...]) -> tuple[DiskConfig, ...]:
    """The disks with every value QEMU would choose filled in.

    Each ``-drive`` opens its protocol node, then its format node; a node without a
    name gets ``#block`` + a counter + two random digits (``id_generate``).  Here
    the digits follow from the counter, so a description always names its nodes
    alike (the first disk's is ``#block103``).
    """
    if all(d.node_name and d.file and d.qdev and d.actual_size is not None for d in disks):
        return disks
    taken = {d.node_name for d in disks if d.node_name}
    counter = 0
    out = []
    for i, d in enumerate(disks):
        counter += 1  # the protocol node's automatic name
        node_name = d.node_name
        while not node_name:
            node_name = f"#block{counter}{3 * counter % 100:02d}"
            counter += 1
            if node_name in taken:  # a name given to another disk
                node_name = ""
        taken.add(node_name)
        out.append(
            replace(
                d,
                node_name=node_name,
                file=d.file or f"/var/lib/qemu/{d.name}.{'img' if d.format == 'raw' else 'qcow2'}",
                qdev=d.qdev or f"/machine/peripheral-anon/device[{i}]/virtio-backend",
                actual_size=_FRESH_SIZE[d.format] if d.actual_size is None else d.actual_size,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class VncConfig:
    """A VNC server: ``-vnc host:display`` and its authentication."""

    host: str = "127.0.0.1"
    port: int = 5900
    family: str = "ipv4"
    auth: str = "none"
    websocket: bool = False


@dataclass(frozen=True)
class SpiceConfig:
    """A SPICE server: ``-spice port=…,addr=…``."""

    host: str = "127.0.0.1"
    port: int = 5930
    family: str = "ipv4"
    auth: str = "spice"
    tls: bool = False
    compiled_version: str = "0.15.1"


@dataclass(frozen=True)
class DeviceConfig:
    """A ``-device``: its driver, its id (``None``: anonymous) and its other properties."""

    driver: str
    id: str | None = None
    properties: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        """The property ``name`` as given on the command line."""
        return next((v for k, v in self.properties if k == name), default)


@dataclass(frozen=True)
class ChardevConfig:
    """A character device: its id and what ``query-chardev`` calls it."""

    label: str
    filename: str
    frontend_open: bool = False


@dataclass(frozen=True)
class VmConfig:
    """The VM description; defaults give an idle machine like ``qemu-system-x86_64 -M none``.

    ``watchdog`` is the watchdog device's action (``None``: no watchdog device);
    ``initial_state`` is ``running``, ``paused`` or ``prelaunch`` (``-S``);
    ``cpus`` is the vCPU count (``-M none`` has none; ``-M pc`` has one).
    """

    name: str | None = None
    uuid: str = "00000000-0000-0000-0000-000000000000"
    no_shutdown: bool = False
    initial_state: str = "running"
    watchdog: str | None = None
    disks: tuple[DiskConfig, ...] = ()
    vnc: VncConfig | None = None
    spice: SpiceConfig | None = None
    cpus: int = 0
    kvm_enabled: bool = False
    kvm_present: bool = True
    rtc_qom_path: str = "/machine/unattached/device[9]"
    machine: str | None = None
    """The machine type (``-machine``): ``None`` is ``none``."""
    memory: int = 128 * 1024 * 1024
    """Guest RAM in bytes (``-m``)."""
    devices: tuple[DeviceConfig, ...] = ()
    """Every ``-device``, in command-line order."""
    chardevs: tuple[ChardevConfig, ...] = ()
    cpu_thread_ids: tuple[int, ...] = ()
    """The host thread of each vCPU, where a process runs one per vCPU (the drop-in)."""

    def __post_init__(self) -> None:
        if self.initial_state not in INITIAL_STATES:
            raise MachineError(
                f"initial_state {self.initial_state!r} is not one of {', '.join(INITIAL_STATES)}"
            )
        names = [d.name for d in self.disks]
        node_names = [d.node_name for d in self.disks if d.node_name]
        for d in self.disks:
            if names.count(d.name) > 1:
                raise MachineError(f"two disks are named {d.name!r}")
            if d.node_name and node_names.count(d.node_name) > 1:
                raise MachineError(f"two disks have the node name {d.node_name!r}")
            if d.format not in DISK_FORMATS:
                raise MachineError(
                    f"disk {d.name!r}: format {d.format!r} is not one of {', '.join(DISK_FORMATS)}"
                )
            for policy in (d.on_read_error, d.on_write_error):
                if policy not in ERROR_POLICIES:
                    raise MachineError(
                        f"disk {d.name!r}: error policy {policy!r} is not one of "
                        + ", ".join(ERROR_POLICIES)
                    )
        # frozen, but completed once here: every reader sees the values QEMU would report
        object.__setattr__(self, "disks", _complete_disks(self.disks))

    def disk(self, name: str) -> DiskConfig:
        """The disk called ``name``; a :class:`MachineError` naming the known ones otherwise."""
        for d in self.disks:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.disks) or "none"
        raise MachineError(f"no disk named {name!r} (disks: {known})")


# --- the machine -----------------------------------------------------------------


@dataclass
class _VncClient:
    host: str
    service: str
    family: str
    initialized: bool = False
    x509_dname: str | None = None
    sasl_username: str | None = None


@dataclass
class _SpiceChannel:
    host: str
    port: str
    family: str
    connection_id: int
    initialized: bool = False
    tls: bool = False


@dataclass
class _Window:
    """QEMU's per-event throttle state: when the window closes, and the one pending event."""

    closes: float
    pending: Event | None = None


@dataclass
class Machine:
    """One simulated VM.

    Its run state (:attr:`status`) starts as ``vm.initial_state`` and is the
    model's to change: it is not a constructor argument.
    """

    vm: VmConfig = field(default_factory=VmConfig)
    profile: ProfileSpec = field(default_factory=lambda: get_profile(DEFAULT_PROFILE))
    clock: Clock = time.time
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    status: str = field(init=False, default="running")

    def __post_init__(self) -> None:
        # A copy of the generator, not getstate(): the state tuple holds 625 Python
        # ints (~23 KB), ten times the generator's own ~2.5 KB, which counts when a
        # fleet holds thousands of machines.
        self._rng_start = copy.copy(self.rng)
        self.reset()

    def reset(self) -> None:
        """Back to the VM as described: initial run state, no clients, nothing pending.

        The random generator rewinds too, so a reset machine repeats its values.
        """
        self.rng.setstate(self._rng_start.getstate())
        self.status = self.vm.initial_state
        self.exited = False
        self._io_status: dict[str, str] = {d.name: "ok" for d in self.vm.disks}
        self._failing: dict[str, DiskError] = {}
        self._vnc: dict[str, _VncClient] = {}
        self._spice: dict[tuple[str, int, int], _SpiceChannel] = {}
        self._spice_ids: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}
        self._retry: list[DiskError] = []

    @property
    def running(self) -> bool:
        """Whether the guest's vCPUs run (``query-status``'s ``running``)."""
        return self.status == "running"

    # --- events ---------------------------------------------------------------

    def _now(self) -> tuple[int, int]:
        now = self.clock()
        seconds = int(now)
        micro = round((now - seconds) * 1_000_000)
        if micro >= 1_000_000:
            seconds, micro = seconds + 1, micro - 1_000_000
        return seconds, micro

    def _event(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        seconds, micro = self._now()
        event = Event(name, data, seconds, micro)
        problems = validate_event(self.profile, event.message())
        if problems:
            raise CatalogError(
                f"{name} does not conform to profile {self.profile.name}: " + "; ".join(problems)
            )
        return event

    def emit(self, name: str, data: Mapping[str, Any] | None = None) -> Event:
        """An explicit event, validated against the profile (``CatalogError`` otherwise).

        It bypasses the model: the run state does not change and nothing is throttled.
        """
        return self._event(name, data)

    def emit_raw(self, name: str, data: Any = None) -> Event:
        """An event exactly as given, not validated: for testing how clients take bad input."""
        seconds, micro = self._now()
        return Event(name, data, seconds, micro)

    def _send(self, event: Event) -> list[Event]:
        """Pass ``event`` through QEMU's throttle: the events that go out now."""
        rate = self.profile.throttle.get(event.name)
        if not rate:
            return [event]
        window = self._windows.get(event.name)
        if window is None:
            self._windows[event.name] = _Window(self.clock() + rate)
            return [event]
        window.pending = event
        return []

    def poll(self) -> list[Event]:
        """Events that became due by the clock's current time.

        These are throttled events whose window closed, and the outcome of requests
        the devices retry after ``cont`` (which may stop the VM again).
        """
        out: list[Event] = []
        retry, self._retry = self._retry, []
        for error in retry:
            out += self._on_DiskError(error)
        now = self.clock()
        due = sorted((w.closes, name) for name, w in self._windows.items() if w.closes <= now)
        for _, name in due:
            window = self._windows[name]
            if window.pending is None:
                del self._windows[name]
            else:
                out.append(window.pending)
                window.pending = None
                window.closes = now + self.profile.throttle[name]
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has something to do, on the clock's scale."""
        if self._retry:
            return self.clock()
        if not self._windows:
            return None
        return min(w.closes for w in self._windows.values())

    def pending_events(self) -> list[Event]:
        """Throttled events held back, oldest first, without releasing them."""
        held = [w.pending for w in self._windows.values() if w.pending is not None]
        return sorted(held, key=lambda e: (e.seconds, e.microseconds))

    def _stop(self, state: str) -> list[Event]:
        """``vm_stop(state)``: a STOP event only when the guest was running."""
        if not self.running:
            return []
        self.status = state
        return [self._event("STOP")]

    def _reset_data(self, guest: bool, reason: str) -> dict[str, Any] | None:
        return {"guest": guest, "reason": reason} if self.profile.run_states else None

    # --- causes ---------------------------------------------------------------

    def cause_error(self, cause: Cause) -> str | None:
        """Why ``cause`` cannot happen now (``None``: it can)."""
        if self.exited:
            return "the VM has exited"
        guest = (DiskError, WatchdogExpired, RtcChange, GuestShutdown, GuestReset, GuestPanic)
        if isinstance(cause, guest) and not self.running:
            return f"{type(cause).__name__} needs a running guest (the VM is {self.status})"
        if isinstance(cause, DiskError | DiskRepaired):
            try:
                disk = self.vm.disk(cause.device)
            except MachineError as exc:
                return str(exc)
            if isinstance(cause, DiskError) and cause.nospace and not disk.thin:
                return f"disk {disk.name!r} is not thin-provisioned: it cannot run out of space"
        if isinstance(cause, DiskError) and cause.operation not in ("read", "write"):
            return f"operation {cause.operation!r} is not read or write"
        if isinstance(cause, WatchdogExpired) and (cause.action or self.vm.watchdog) is None:
            return "the VM has no watchdog (VmConfig.watchdog) and the cause names no action"
        if isinstance(cause, GuestPanic) and "GUEST_PANICKED" not in self.profile.events:
            return f"profile {self.profile.name} has no guest panic notification"
        if isinstance(cause, VncConnect | VncInitialize | VncDisconnect):
            return self._vnc_error(cause)
        if isinstance(cause, SpiceConnect | SpiceInitialize | SpiceDisconnect):
            return self._spice_error(cause)
        return None

    def _vnc_error(self, cause: VncConnect | VncInitialize | VncDisconnect) -> str | None:
        if self.vm.vnc is None:
            return "the VM has no VNC server (VmConfig.vnc)"
        client = self._vnc.get(cause.client)
        if isinstance(cause, VncConnect):
            return f"VNC client {cause.client!r} is already connected" if client else None
        if client is None:
            return f"VNC client {cause.client!r} is not connected"
        if isinstance(cause, VncInitialize) and client.initialized:
            return f"VNC client {cause.client!r} is already initialized"
        return None

    def _spice_error(self, cause: SpiceConnect | SpiceInitialize | SpiceDisconnect) -> str | None:
        if self.vm.spice is None:
            return "the VM has no SPICE server (VmConfig.spice)"
        key = (cause.client, cause.channel_type, cause.channel_id)
        label = f"SPICE channel {cause.channel_type}/{cause.channel_id} of {cause.client!r}"
        channel = self._spice.get(key)
        if isinstance(cause, SpiceConnect):
            return f"{label} is already connected" if channel else None
        if channel is None:
            return f"{label} is not connected"
        if isinstance(cause, SpiceInitialize) and channel.initialized:
            return f"{label} is already initialized"
        return None

    def cause(self, cause: Cause) -> list[Event]:
        """Apply a cause; the events it produces now, in order (throttled ones may come later).

        A cause the VM cannot undergo now raises :class:`MachineError`.
        """
        problem = self.cause_error(cause)
        if problem is not None:
            raise MachineError(problem)
        out = self.poll()
        handler: Callable[[Any], list[Event]] = getattr(self, "_on_" + type(cause).__name__)
        out += handler(cause)
        return out

    def _on_DiskError(self, c: DiskError) -> list[Event]:
        disk = self.vm.disk(c.device)
        action = disk.action(c.operation, c.nospace)
        if action == "stop" and disk.iostatus_enabled and self._io_status[disk.name] == "ok":
            self._io_status[disk.name] = "nospace" if c.nospace else "failed"
        if action == "stop" and c.persistent:
            self._failing[disk.name] = c
        events = [self._event("BLOCK_IO_ERROR", self._io_error_data(disk, c, action))]
        if action == "stop":
            events += self._stop("io-error")
        return events

    def _io_error_data(self, disk: DiskConfig, c: DiskError, action: str) -> dict[str, Any]:
        if not self.profile.run_states:
            return {"device": disk.wire_name, "operation": c.operation, "action": action}
        data: dict[str, Any] = {"device": disk.wire_name, "node-name": disk.node_name}
        data["operation"] = c.operation
        data["action"] = action
        if disk.iostatus_enabled:
            data["nospace"] = c.nospace
        data["reason"] = _STRERROR[c.nospace]
        return data

    def _on_DiskRepaired(self, c: DiskRepaired) -> list[Event]:
        self._failing.pop(c.device, None)
        return []

    def _on_WatchdogExpired(self, c: WatchdogExpired) -> list[Event]:
        action = c.action or self.vm.watchdog
        assert action is not None
        out = self._send(self._event("WATCHDOG", {"action": action}))
        if action == "reset":
            out.append(self._event("RESET", self._reset_data(True, "guest-reset")))
        elif action == "pause":
            out += self._stop("watchdog")
        elif action == "shutdown":
            out.append(self._event("POWERDOWN"))
        elif action == "poweroff":
            self.exited = True
        return out

    def _on_RtcChange(self, c: RtcChange) -> list[Event]:
        data: dict[str, Any] = {"offset": c.offset}
        if self.profile.run_states:
            data["qom-path"] = self.vm.rtc_qom_path
        return self._send(self._event("RTC_CHANGE", data))

    def _shutdown(self, reason: str) -> list[Event]:
        out = [self._event("SHUTDOWN", self._reset_data(True, reason))]
        if self.vm.no_shutdown:
            out += self._stop("shutdown")
        else:
            self.exited = True
        return out

    def _on_GuestShutdown(self, _c: GuestShutdown) -> list[Event]:
        return self._shutdown("guest-shutdown")

    def _on_GuestReset(self, _c: GuestReset) -> list[Event]:
        return [self._event("RESET", self._reset_data(True, "guest-reset"))]

    def _on_GuestPanic(self, _c: GuestPanic) -> list[Event]:
        # qemu_system_guest_panicked() with the default -action panic=shutdown
        if self.vm.no_shutdown:
            return [
                self._event("GUEST_PANICKED", {"action": "pause"}),
                *self._stop("guest-panicked"),
            ]
        out = [self._event("GUEST_PANICKED", {"action": "poweroff"})]
        out += self._stop("guest-panicked")
        out.append(self._event("SHUTDOWN", self._reset_data(True, "guest-panic")))
        self.exited = True
        return out

    def _on_GuestPowerdown(self, _c: GuestPowerdown) -> list[Event]:
        return [self._event("POWERDOWN")]

    def _on_HostSignal(self, _c: HostSignal) -> list[Event]:
        # qemu_system_killed() forces the poweroff action: no STOP, whatever -no-shutdown says
        self.exited = True
        return [self._event("SHUTDOWN", self._reset_data(False, "host-signal"))]

    def _vnc_data(self, client: _VncClient, *, auth_ids: bool) -> dict[str, Any]:
        vnc = self.vm.vnc
        assert vnc is not None
        ws = self.profile.run_states  # the websocket member came with QEMU 2.3
        server: dict[str, Any] = {"host": vnc.host, "service": str(vnc.port), "family": vnc.family}
        if ws:
            server["websocket"] = vnc.websocket
        server["auth"] = vnc.auth
        info: dict[str, Any] = {
            "host": client.host,
            "service": client.service,
            "family": client.family,
        }
        if ws:
            info["websocket"] = vnc.websocket
        if auth_ids and client.x509_dname is not None:
            info["x509_dname"] = client.x509_dname
        if auth_ids and client.sasl_username is not None:
            info["sasl_username"] = client.sasl_username
        return {"server": server, "client": info}

    def _on_VncConnect(self, c: VncConnect) -> list[Event]:
        vnc = self.vm.vnc
        assert vnc is not None
        client = _VncClient(
            host=c.host or _loopback(vnc.family),
            service=c.service or str(self.rng.randint(32768, 60999)),
            family=c.family or vnc.family,
        )
        self._vnc[c.client] = client
        return [self._event("VNC_CONNECTED", self._vnc_data(client, auth_ids=False))]

    def _on_VncInitialize(self, c: VncInitialize) -> list[Event]:
        client = self._vnc[c.client]
        client.initialized = True
        client.x509_dname = c.x509_dname
        client.sasl_username = c.sasl_username
        return [self._event("VNC_INITIALIZED", self._vnc_data(client, auth_ids=True))]

    def _on_VncDisconnect(self, c: VncDisconnect) -> list[Event]:
        client = self._vnc.pop(c.client)
        return [self._event("VNC_DISCONNECTED", self._vnc_data(client, auth_ids=True))]

    def _spice_server(self, *, auth: bool) -> dict[str, Any]:
        spice = self.vm.spice
        assert spice is not None
        server: dict[str, Any] = {
            "host": spice.host,
            "port": str(spice.port),
            "family": spice.family,
        }
        if auth:
            server["auth"] = spice.auth
        return server

    @staticmethod
    def _spice_basic(ch: _SpiceChannel) -> dict[str, Any]:
        return {"host": ch.host, "port": ch.port, "family": ch.family}

    def _spice_channel_info(self, ch: _SpiceChannel, key: tuple[str, int, int]) -> dict[str, Any]:
        info = self._spice_basic(ch)
        info["connection-id"] = ch.connection_id
        info["channel-type"] = key[1]
        info["channel-id"] = key[2]
        info["tls"] = ch.tls
        return info

    def _on_SpiceConnect(self, c: SpiceConnect) -> list[Event]:
        spice = self.vm.spice
        assert spice is not None
        if c.client not in self._spice_ids:
            # spice-server's id is a random 32-bit value that QEMU 7.2 reports signed
            self._spice_ids[c.client] = self.rng.randint(-(2**31), 2**31 - 1)
        # all channels of one client come from one host, each on its own port
        same = next((ch for k, ch in self._spice.items() if k[0] == c.client), None)
        ch = _SpiceChannel(
            host=c.host or (same.host if same else _loopback(spice.family)),
            port=c.port or str(self.rng.randint(32768, 60999)),
            family=c.family or (same.family if same else spice.family),
            connection_id=self._spice_ids[c.client],
        )
        self._spice[(c.client, c.channel_type, c.channel_id)] = ch
        data = {"server": self._spice_server(auth=False), "client": self._spice_basic(ch)}
        return [self._event("SPICE_CONNECTED", data)]

    def _on_SpiceInitialize(self, c: SpiceInitialize) -> list[Event]:
        spice = self.vm.spice
        assert spice is not None
        key = (c.client, c.channel_type, c.channel_id)
        ch = self._spice[key]
        ch.initialized = True
        ch.tls = spice.tls if c.tls is None else c.tls
        data = {
            "server": self._spice_server(auth=True),
            "client": self._spice_channel_info(ch, key),
        }
        return [self._event("SPICE_INITIALIZED", data)]

    def _on_SpiceDisconnect(self, c: SpiceDisconnect) -> list[Event]:
        ch = self._spice.pop((c.client, c.channel_type, c.channel_id))
        if not any(k[0] == c.client for k in self._spice):
            del self._spice_ids[c.client]
        data = {"server": self._spice_server(auth=False), "client": self._spice_basic(ch)}
        return [self._event("SPICE_DISCONNECTED", data)]

    # --- commands -------------------------------------------------------------

    def execute(self, command: str, arguments: Mapping[str, Any]) -> Outcome:
        """Run a command whose arguments the protocol has already validated."""
        handler = getattr(self, "_cmd_" + command.replace("-", "_"), None)
        if handler is None or command not in self.profile.commands:
            return Outcome(
                CommandError("CommandNotFound", f"The command {command} has not been found")
            )
        if self.exited:
            raise MachineError(f"the VM has exited; it cannot run {command}")
        due = self.poll()
        result: Outcome = handler(arguments)
        if due:
            result = Outcome(result.reply, (*due, *result.events), result.close)
        return result

    def _cmd_query_status(self, _args: Mapping[str, Any]) -> Outcome:
        reply: dict[str, Any] = {"running": self.running, "singlestep": False}
        if self.profile.run_states:
            reply["status"] = self.status
        return Outcome(reply)

    def _cmd_query_version(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome(self.profile.greeting()["QMP"]["version"])

    def _cmd_query_commands(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome([{"name": name} for name in self.profile.commands])

    def _cmd_query_name(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({} if self.vm.name is None else {"name": self.vm.name})

    def _cmd_query_uuid(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"UUID": self.vm.uuid})

    def _cmd_query_kvm(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"enabled": self.vm.kvm_enabled, "present": self.vm.kvm_present})

    def _cmd_stop(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({}, tuple(self._stop("paused")))

    def _cmd_cont(self, _args: Mapping[str, Any]) -> Outcome:
        if self.profile.run_states and self.status in _NEEDS_RESET:
            return Outcome(
                CommandError("GenericError", "Resetting the Virtual Machine is required")
            )
        for name in self._io_status:
            self._io_status[name] = "ok"
        if self.running:
            return Outcome({})
        self.status = "running"
        resume = self._event("RESUME")
        # the devices retry their failed requests once the VM runs again, after the reply
        self._retry += self._failing.values()
        self._failing.clear()
        return Outcome({}, (resume,))

    def _cmd_system_reset(self, _args: Mapping[str, Any]) -> Outcome:
        event = self._event("RESET", self._reset_data(False, "host-qmp-system-reset"))
        self._failing.clear()  # a reset drops the requests that were waiting for a retry
        if self.profile.run_states and not self.running:
            self.status = "prelaunch"
        return Outcome({}, (event,))

    def _cmd_system_powerdown(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({}, (self._event("POWERDOWN"),))

    def _cmd_quit(self, _args: Mapping[str, Any]) -> Outcome:
        event = self._event("SHUTDOWN", self._reset_data(False, "host-qmp-quit"))
        self.exited = True
        return Outcome({}, (event,), close=True)

    def _cmd_query_block(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome([self._block_info(d) for d in self.vm.disks])

    def _block_info(self, d: DiskConfig) -> dict[str, Any]:
        if not self.profile.run_states:
            inserted0 = {"file": d.file, "ro": d.read_only, "drv": d.format, "encrypted": False}
            return {
                "device": d.wire_name,
                "type": "hd",
                "removable": False,
                "locked": False,
                "inserted": inserted0,
            }
        image: dict[str, Any] = {"filename": d.file, "format": d.format, "dirty-flag": False}
        image["actual-size"] = d.actual_size
        image["virtual-size"] = d.virtual_size
        if d.format == "qcow2":
            image["cluster-size"] = 65536
            image["format-specific"] = {"type": "qcow2", "data": dict(_QCOW2_INFO)}
        inserted: dict[str, Any] = {
            "file": d.file,
            "node-name": d.node_name,
            "ro": d.read_only,
            "drv": d.format,
            "backing_file_depth": 0,
            "encrypted": False,
            "detect_zeroes": "off",
            **dict.fromkeys(("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"), 0),
            "image": image,
            "cache": {"writeback": True, "direct": False, "no-flush": False},
            "write_threshold": 0,
        }
        info: dict[str, Any] = {
            "device": d.wire_name,
            "qdev": d.qdev,
            "type": "unknown",
            "removable": False,
            "locked": False,
            "inserted": inserted,
        }
        if d.iostatus_enabled:
            info["io-status"] = self._io_status[d.name]
        return info

    def _cmd_query_vnc(self, _args: Mapping[str, Any]) -> Outcome:
        vnc = self.vm.vnc
        if vnc is None:
            return Outcome({"enabled": False})
        clients = [self._vnc_data(c, auth_ids=True)["client"] for c in self._vnc.values()]
        return Outcome(
            {
                "enabled": True,
                "host": vnc.host,
                "family": vnc.family,
                "service": str(vnc.port),
                "auth": vnc.auth,
                "clients": clients,
            }
        )

    def _cmd_query_spice(self, _args: Mapping[str, Any]) -> Outcome:
        spice = self.vm.spice
        if spice is None:
            if not self.profile.run_states:
                return Outcome({"enabled": False})
            return Outcome({"enabled": False, "migrated": False, "mouse-mode": "client"})
        channels = [
            self._spice_channel_info(ch, key) for key, ch in self._spice.items() if ch.initialized
        ]
        reply: dict[str, Any] = {"enabled": True}
        if self.profile.run_states:
            reply["migrated"] = False
        reply |= {"host": spice.host, "port": spice.port}
        reply["auth"] = spice.auth
        reply["compiled-version"] = spice.compiled_version
        if self.profile.run_states:
            reply["mouse-mode"] = "server"
        reply["channels"] = channels
        return Outcome(reply)

    def _cmd_human_monitor_command(self, args: Mapping[str, Any]) -> Outcome:
        line = str(args.get("command-line", ""))
        cpu = args.get("cpu-index")
        if cpu is not None and not 0 <= cpu < self.vm.cpus:
            return Outcome(
                CommandError("GenericError", "Parameter 'cpu-index' expects a CPU number")
            )
        words = line.split()
        if not words:
            return Outcome("")
        if (
            words[0] in ("stop", "cont", "c", "system_reset", "system_powerdown")
            and len(words) == 1
        ):
            command = "cont" if words[0] == "c" else words[0]
            outcome: Outcome = getattr(self, "_cmd_" + command)({})
            if isinstance(outcome.reply, CommandError):
                return Outcome(f"Error: {outcome.reply.desc}\r\n", outcome.events)
            return Outcome("", outcome.events)
        what = " ".join(words[1:]) if words[0] == "info" and len(words) <= 2 else None
        info = self._hmp_info(what)
        if info is not None:
            return Outcome(info)
        match = re.match(r"\s*(info\s+\S+|\S+)", line)
        name = match.group(1) if match else line
        return Outcome(f"unknown command: '{name}'\r\n")

    def _hmp_info(self, what: str | None) -> str | None:
        if what == "":
            return "".join(f"info {name}  -- {text}\r\n" for name, text in _HMP_INFO.items())
        if what == "status":
            text = "VM status: " + ("running" if self.running else "paused")
            if self.profile.run_states and self.status not in ("running", "paused"):
                text += f" ({self.status})"
            return text + "\r\n"
        if what == "version":
            major, minor, micro = self.profile.version
            return f"{major}.{minor}.{micro}{self.profile.package}\r\n"
        if what == "name":
            return "" if self.vm.name is None else f"{self.vm.name}\r\n"
        if what == "uuid":
            return f"{self.vm.uuid}\r\n"
        if what == "kvm":
            state = "enabled" if self.vm.kvm_enabled else "disabled"
            return f"kvm support: {state}\r\n"
        return None


# ImageInfoSpecificQCow2 of an image `qemu-img create -f qcow2` made (QEMU 7.2's defaults)
_QCOW2_INFO = {
    "compat": "1.1",
    "extended-l2": False,
    "lazy-refcounts": False,
    "corrupt": False,
    "refcount-bits": 16,
    "compression-type": "zlib",
}

# the `info` subcommands qmpsim answers, with QEMU's help texts
_HMP_INFO = {
    "kvm": "show KVM information",
    "name": "show the current VM name",
    "status": "show the current VM status (running|paused)",
    "uuid": "show the current VM UUID",
    "version": "show the version of QEMU",
}


def _loopback(family: str) -> str:
    return "::1" if family == "ipv6" else "127.0.0.1"
