"""The scenario model: frozen values a loaded scenario is made of (the VM description,
the steps, :class:`Scenario`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from qmpsim.vm import machine as m

if TYPE_CHECKING:
    pass


# --- the typed model --------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a step was written: file (``None`` for a string), 1-based line and column."""

    file: str | None
    line: int
    column: int = 1


@dataclass(frozen=True)
class Disk:
    """A disk, its image and its error policies (QEMU's ``rerror``/``werror``).

    ``None`` leaves a value to QEMU's choice (see :class:`~qmpsim.vm.machine.DiskConfig`).
    """

    name: str
    on_read_error: str = "report"
    on_write_error: str = "enospc"
    thin: bool = False
    format: str = "qcow2"
    file: str | None = None
    node_name: str | None = None
    media: str = "disk"
    size: int | None = None
    data: int | None = None
    backing: str | None = None


@dataclass(frozen=True)
class Image:
    """An image file on the host the VM can open (a backing file, a CD-ROM image…)."""

    file: str
    format: str = "qcow2"
    size: int | None = None
    data: int | None = None
    backing: str | None = None

    def config(self) -> m.ImageConfig:
        """The machine's image description."""
        extra = {"virtual_size": self.size} if self.size is not None else {}
        return m.ImageConfig(self.file, self.format, data=self.data, backing=self.backing, **extra)


@dataclass(frozen=True)
class Vnc:
    """A VNC server the VM exposes."""

    host: str = "127.0.0.1"
    port: int = 5900
    family: str = "ipv4"
    auth: str = "none"


@dataclass(frozen=True)
class Spice:
    """A SPICE server the VM exposes."""

    host: str = "127.0.0.1"
    port: int = 5930
    family: str = "ipv4"
    auth: str = "spice"
    tls: bool = False


@dataclass(frozen=True)
class Guest:
    """The guest OS and how it reacts (see :class:`~qmpsim.vm.machine.GuestConfig`); a delay
    left out is the default range, drawn from the seed."""

    powerdown: str = "shutdown"
    powerdown_delay: float | None = None
    unplug: str = "eject"
    unplug_delay: float | None = None
    lock_tray: bool = True
    tray: str = "open"
    tray_delay: float | None = None
    balloon: str = "follow"
    balloon_delay: float | None = None
    balloon_rate: int | None = None

    def config(self) -> m.GuestConfig:
        """The machine's guest description."""
        delays = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k.endswith("_delay") and v is not None
        }
        config = m.GuestConfig(
            powerdown=self.powerdown,
            unplug=self.unplug,
            lock_tray=self.lock_tray,
            tray=self.tray,
            balloon=self.balloon,
            **delays,
        )
        if self.balloon_rate is None:
            return config
        return dataclasses.replace(config, balloon_rate=self.balloon_rate)


@dataclass(frozen=True)
class VmSpec:
    """The VM a scenario runs on."""

    name: str | None = None
    uuid: str | None = None
    seed: int = 0
    no_shutdown: bool = False
    initial_state: str = "running"
    watchdog: str | None = None
    disks: tuple[Disk, ...] = ()
    vnc: Vnc | None = None
    spice: Spice | None = None
    cpus: int = 0
    guest: Guest | None = None
    images: tuple[Image, ...] = ()
    memory: int | None = None
    balloon: bool = False
    incoming: str | None = None


@dataclass(frozen=True)
class CauseStep:
    """Make something happen the way QEMU would; the machine emits the events."""

    kind: str
    cause: m.Cause
    where: Where


@dataclass(frozen=True)
class EmitStep:
    """Emit one event with explicit data (validated) and/or data filled by Faker."""

    event: str
    data: Mapping[str, Any] | None
    fake: bool
    where: Where


@dataclass(frozen=True)
class WaitStep:
    """Let ``seconds`` of (scaled, possibly virtual) time pass."""

    seconds: float
    where: Where


@dataclass(frozen=True)
class UntilStep:
    """Wait until a client sends ``command`` (with ``arguments``, as
    :func:`~qmpsim.qmp.transcript.arguments_match` matches them)."""

    command: str
    arguments: Mapping[str, Any] | None
    timeout: float | None
    where: Where


@dataclass(frozen=True)
class ReplyStep:
    """Override the reply to ``command``: a canned ``result`` or an ``error``."""

    command: str
    result: Any
    error_class: str | None
    error_desc: str | None
    times: int | None  # None: always
    where: Where


@dataclass(frozen=True)
class OnStep:
    """Whenever a client sends ``command`` (matching ``arguments``, as ``until`` does), run
    ``steps``."""

    command: str
    arguments: Mapping[str, Any] | None
    steps: tuple[Step, ...]
    times: int | None  # None: always
    where: Where


@dataclass(frozen=True)
class RepeatStep:
    """Run ``steps`` ``count`` times (``None``: forever)."""

    count: int | None
    steps: tuple[Step, ...]
    where: Where


@dataclass(frozen=True)
class IncludeStep:
    """The timeline of another scenario file, run in place."""

    path: str
    steps: tuple[Step, ...]
    where: Where


@dataclass(frozen=True)
class FaultStep:
    """Misbehave on the wire to test a client's robustness."""

    kind: str
    text: str | None
    command: str | None
    chunk: int
    delay: float
    where: Where


Step: TypeAlias = (
    CauseStep | EmitStep | WaitStep | UntilStep | ReplyStep | OnStep | RepeatStep | IncludeStep
) | FaultStep

ClockMode = Literal["first-client", "startup"]


@dataclass(frozen=True)
class Scenario:
    """A loaded, validated scenario."""

    name: str
    description: str
    profile: str
    vm: VmSpec
    clock: ClockMode
    steps: tuple[Step, ...]
    actions: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
    source: str | None = None

    def to_yaml(self) -> str:
        """The scenario as a YAML file that loads back to it (see :mod:`qmpsim.scenario.text`)."""
        from qmpsim.scenario.text import to_yaml  # it imports this module

        return to_yaml(self)
