"""What describes a fleet: its settings (:class:`FleetConfig`, what every worker
builds its share from), and each VM's name, uuid and seed (:func:`fleet_identities`)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from qmpsim.runtime.session import IDLE
from qmpsim.scenario.model import Scenario

__all__ = ["FleetConfig", "VmIdentity", "fleet_identities"]

_UUID_NAMESPACE = uuid.UUID("5f1c0f4e-8a53-4b8e-9a57-0c3d2f6a6d11")


@dataclass(frozen=True, slots=True)  # slots: a fleet holds thousands
class VmIdentity:
    """What tells one VM of a fleet from the others."""

    index: int
    name: str
    uuid: str
    seed: int


def fleet_identities(
    count: int, *, prefix: str = "vm", seed: int = 0, part: range | None = None
) -> list[VmIdentity]:
    """``count`` distinct, reproducible identities: ``prefix`` + a zero-padded index.

    The uuid and seed of each VM derive from ``seed`` and its name, so two fleets
    with different seeds (or prefixes) differ everywhere.  ``part`` (a range of
    indices) gives only those VMs, named as in the whole fleet.
    """
    if count < 1:
        raise ValueError("a fleet needs at least one VM")
    width = len(str(count - 1))
    out = []
    for i in range(count) if part is None else part:
        name = f"{prefix}{i:0{width}d}"
        key = f"{seed}/{name}"
        vm_uuid = str(uuid.uuid5(_UUID_NAMESPACE, key))
        vm_seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        out.append(VmIdentity(i, name, vm_uuid, vm_seed))
    return out


@dataclass(frozen=True)
class FleetConfig:
    """What every worker of a fleet needs to build its share of the VMs."""

    count: int
    directory: str
    scenario: Scenario = IDLE
    prefix: str = "vm"
    seed: int = 0
    speed: float = 1.0
    multi_client: bool = False
    transcript: int = 0
