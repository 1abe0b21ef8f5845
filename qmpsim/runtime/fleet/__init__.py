"""Fleet mode: many simulated VMs, each behind its own monitor socket, over one or more processes.

A :class:`Fleet` of ``count`` VMs serves ``DIR/<name>.sock`` for each of them.
Every VM is independent: its own name, uuid, seed (so its own fake data), its
own :class:`~qmpsim.runtime.server.Simulator` and clock, and its own run of the
scenario.  One optional control socket reaches all of them (``qmpsim-fleet``
lists them; the ``qmpsim-*`` commands of the single-VM control channel take a
``vm`` argument).

It is built for load-testing management planes, which connect to every VM and
stay connected, so a VM costs as little as possible:

- one task accepts for all the VMs of a process and watches their idle
  connections: the listening sockets, and the sockets of connections waiting
  for their client's next command, sit in one epoll (kqueue) set, which trio
  waits on as a single file descriptor (:mod:`.accept`);
- a VM's simulator is built and started when it is first needed (a client
  connects, the control channel drives it, or a ``clock: startup`` timeline
  plays), so idle VMs are a socket and a name (:mod:`.vm`);
- a connection runs tasks only while it has something to read, write or run
  (:meth:`~qmpsim.runtime.server.Simulator.handle_socket_stream`); a VM playing a
  scenario runs one task for it.

File descriptors are reserved for the connected fleet, not the listeners alone
(:mod:`.limits`).  :func:`run_fleet` (:mod:`.run`) spreads the VMs over several
processes ("workers", contiguous ranges of names, :mod:`.workers`), so a fleet
uses every core and each worker has its own file descriptor limit.  The process
that runs it serves the first range itself, owns the control socket and forwards
each control request to the worker that owns the VM.  A worker that dies is
reported and stops the fleet; a stopped fleet stops its workers, and every
socket file goes with them.

This package's names are the fleet's public face; its modules are its parts:
:mod:`.config` (what describes a fleet), :mod:`.limits`, :mod:`.accept`,
:mod:`.vm`, :mod:`.local`, :mod:`.workers`, :mod:`.run`.
"""

from __future__ import annotations

from qmpsim.runtime.fleet.config import FleetConfig, VmIdentity, fleet_identities
from qmpsim.runtime.fleet.limits import (
    FD_HEADROOM,
    FD_PER_VM,
    FleetLimitError,
    check_fd_limit,
    default_workers,
    fds_needed,
    fewer_collections,
    raise_fd_limit,
    split_fleet,
)
from qmpsim.runtime.fleet.local import Fleet
from qmpsim.runtime.fleet.run import run_fleet, serve_fleet
from qmpsim.runtime.fleet.vm import FleetVm
from qmpsim.runtime.fleet.workers import WorkerFailed, worker_main

__all__ = [
    "FD_HEADROOM",
    "FD_PER_VM",
    "Fleet",
    "FleetConfig",
    "FleetLimitError",
    "FleetVm",
    "VmIdentity",
    "WorkerFailed",
    "check_fd_limit",
    "default_workers",
    "fds_needed",
    "fewer_collections",
    "fleet_identities",
    "raise_fd_limit",
    "run_fleet",
    "serve_fleet",
    "split_fleet",
    "worker_main",
]
