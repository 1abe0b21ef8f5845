"""One VM of a fleet (:class:`FleetVm`): its identity and socket, and its simulator
and scenario, made when first needed so that an idle VM is a socket and a name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from qmpsim.qmp.transcript import Direction, Entry, Transcript
from qmpsim.runtime.fleet.config import VmIdentity
from qmpsim.runtime.listen import UnixSocketFile
from qmpsim.runtime.server import Simulator
from qmpsim.runtime.session import Session
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.model import Scenario

__all__ = ["FleetVm", "Owner"]


class Owner(Protocol):
    """What a VM takes from the fleet it belongs to."""

    scenario: Scenario
    multi_client: bool
    transcript: int
    """Entries each VM keeps in its transcript (0: none)."""


class _NoTranscript(Transcript):
    """What a VM records when the fleet keeps no transcripts: nothing (not even the
    parsing state of each connection, or the time to lex every message)."""

    def record(self, direction: Direction, client: int, time: float, raw: bytes) -> Entry:
        return Entry(direction, client, time, raw)

    def append(self, entry: Entry) -> None:
        pass


@dataclass(eq=False, slots=True)  # slots: a fleet holds thousands
class FleetVm:
    """One VM of a fleet: its identity, socket, and (once needed) simulator and scenario run."""

    identity: VmIdentity
    path: str
    fleet: Owner = field(repr=False)
    session: Session | None = None
    listening: bool = False
    socket: UnixSocketFile | None = None
    live: bool = False
    """Its simulator runs (it was started for a client, the control channel or a timeline)."""
    _sim: Simulator | None = None
    _scenario: Scenario | None = None
    _starting: trio.Event | None = None
    _gone: bool = False
    _closed: trio.Event | None = None

    @property
    def closed(self) -> trio.Event:
        """Set when the VM's socket is gone (the VM exited, or the fleet stopped)."""
        if self._closed is None:  # made when asked for: most VMs never are
            self._closed = trio.Event()
            if self._gone:
                self._closed.set()
        return self._closed

    def _close(self) -> None:
        self.listening = False
        self._gone = True
        if self._closed is not None:
            self._closed.set()

    @property
    def name(self) -> str:
        """The VM's name (also its socket's file name, without ``.sock``)."""
        return self.identity.name

    @property
    def scenario(self) -> Scenario:
        """The fleet's scenario with this VM's name, uuid and seed."""
        if self._scenario is None:
            base = self.fleet.scenario
            ident = self.identity
            self._scenario = dataclasses.replace(
                base,
                vm=dataclasses.replace(base.vm, name=ident.name, uuid=ident.uuid),
                seed=ident.seed,
            )
        return self._scenario

    @property
    def sim(self) -> Simulator:
        """The VM's simulator, built on first use."""
        if self._sim is None:
            keep = self.fleet.transcript
            self._sim = Simulator(
                build_machine(self.scenario),
                multi_client=self.fleet.multi_client,
                transcript=Transcript(max_entries=keep) if keep else _NoTranscript(),
            )
        return self._sim

    def summary(self) -> dict[str, Any]:
        """What ``qmpsim-fleet`` reports about this VM."""
        runner = self.session.runner if self.session is not None else None
        timeline = "idle" if runner is None else "done" if runner.done.is_set() else "running"
        sim = self._sim
        if sim is None:
            status, clients = self.fleet.scenario.vm.initial_state, 0
        else:
            status = "exited" if sim.exited else sim.machine.status
            clients = len(sim.clients)
        return {
            "name": self.name,
            "uuid": self.identity.uuid,
            "socket": self.path,
            "status": status,
            "clients": clients,
            "timeline": timeline,
        }
