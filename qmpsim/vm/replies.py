"""Replies for the commands the VM model does not handle: recorded, else generated.

The machine answers the commands it models (``machine.Machine._cmd_*``).  For
every other command of the profile, :func:`unmodelled_reply` gives, in this order:

1. an answer derived from the VM description where the answer depends on it
   (``query-cpus-fast`` lists one entry per vCPU, ``query-blockstats`` one per
   disk…), shaped like the recorded one where there is one;
2. a fact of QEMU's own code that no recording shows;
3. the reply the real QEMU of the profile gave to the same request
   (``query-target``, ``qom-list-types``, ``device-list-properties``…);
4. a reply generated from the command's return type: schema-valid, the same for
   the same request and seed, ``{}`` for commands that return nothing, and empty
   lists for the things a VM of this description does not have.

:func:`source` names which of these answers a command, for ``qmpsim commands``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from qmpsim.qmp.profiles import ProfileSpec
from qmpsim.qmp.schema import (
    Alternate,
    Array,
    Builtin,
    Enum,
    Object,
    Type,
    compile_schema,
    problems,
)
from qmpsim.qmp.wire import qdict_insertion

__all__ = [
    "GENERATED",
    "LOADS_MODULES",
    "MODELLED",
    "RECORDED",
    "VmFacts",
    "fit_reply",
    "generate",
    "source",
    "unmodelled_reply",
]

MODELLED: Final = "modelled"
RECORDED: Final = "recorded"
GENERATED: Final = "generated"

Reply = dict[str, Any]
"""``{"return": value}`` or ``{"error": {"class": …, "desc": …}}``."""


class VmFacts(Protocol):
    """What a generated reply must agree with (``machine.VmConfig`` has all of it)."""

    @property
    def name(self) -> str | None: ...
    @property
    def uuid(self) -> str: ...
    @property
    def cpus(self) -> int: ...
    @property
    def kvm_enabled(self) -> bool: ...
    @property
    def disks(self) -> Sequence[Any]: ...
    @property
    def cpu_thread_ids(self) -> Sequence[int]: ...
    def cpu_props(self, index: int, *, prefer_cores: bool = True) -> dict[str, int]: ...
    def cpu_path(self, index: int) -> str: ...


LOADS_MODULES = frozenset({"qom-list-types"})
"""Commands after which QEMU has loaded every module it has: a display module adds
its option group to ``query-command-line-options`` (measured on QEMU 7.2.22)."""


def machine_type(vm: VmFacts) -> str:
    """The recorded machine a VM is like: ``-M none`` has no vCPUs, a ``pc`` has some."""
    return "pc" if vm.cpus > 0 else "none"


def _error(error_class: str, desc: str) -> Reply:
    return {"error": {"class": error_class, "desc": desc}}


# --- answers that follow from the VM description -----------------------------------


def _cpu_props(profile: ProfileSpec, vm: VmFacts, index: int) -> dict[str, int]:
    # QEMU 6.2 made the vCPUs of a bare -smp N cores of one socket, not sockets
    return vm.cpu_props(index, prefer_cores=profile.version >= (6, 2))


def _thread_ids(vm: VmFacts, rng: random.Random) -> list[int]:
    """Each vCPU's host thread: the real ones where a process runs them (the drop-in)."""
    base = rng.randint(2000, 60000)
    given = list(vm.cpu_thread_ids)
    return [given[i] if i < len(given) else base + i for i in range(vm.cpus)]


def _cpus_fast(profile: ProfileSpec, vm: VmFacts, rng: random.Random, _args: Any) -> Reply:
    template = _recorded_first(profile, "query-cpus-fast", vm)
    out = []
    tids = _thread_ids(vm, rng)
    for index in range(vm.cpus):
        entry: dict[str, Any] = dict(template) if template else {}
        entry.update(
            {
                "thread-id": tids[index],
                "props": _cpu_props(profile, vm, index),
                "qom-path": vm.cpu_path(index),
                "cpu-index": index,
            }
        )
        if template is None:
            entry["target"] = "x86_64"
        out.append(entry)
    return {"return": out}


def _cpus(profile: ProfileSpec, vm: VmFacts, rng: random.Random, _args: Any) -> Reply:
    # query-cpus (QEMU < 6.0): the older, slower form of query-cpus-fast
    tids = _thread_ids(vm, rng)
    out = [
        {
            "CPU": index,
            "current": index == 0,
            "halted": False,
            "qom_path": vm.cpu_path(index),
            "thread_id": tids[index],
            "props": _cpu_props(profile, vm, index),
            "arch": "x86",
            "pc": 0xFFF0,
        }
        for index in range(vm.cpus)
    ]
    return {"return": out}


def _hotpluggable(profile: ProfileSpec, vm: VmFacts, _rng: random.Random, _args: Any) -> Reply:
    if vm.cpus == 0:
        # -M none cannot hot-plug CPUs: what its recording says, else QEMU 7.2's words
        recorded = profile.recorded_reply(
            "query-hotpluggable-cpus", {}, kvm=vm.kvm_enabled, machine="none", other_machines=False
        )
        if recorded is not None:
            return dict(recorded)
        return _error("GenericError", "The feature 'query-hotpluggable-cpus' is not enabled")
    template = _recorded_first(profile, "query-hotpluggable-cpus", vm)
    kind = template.get("type", "qemu64-x86_64-cpu") if template else "qemu64-x86_64-cpu"
    return {
        "return": [
            {
                "props": _cpu_props(profile, vm, index),
                "vcpus-count": 1,
                "qom-path": vm.cpu_path(index),
                "type": kind,
            }
            for index in reversed(range(vm.cpus))
        ]
    }


def _per_disk(command: str) -> Callable[[ProfileSpec, VmFacts, random.Random, Any], Reply]:
    """One generated entry per disk, its names taken from the VM description."""

    def reply(profile: ProfileSpec, vm: VmFacts, rng: random.Random, _args: Any) -> Reply:
        spec = profile.commands[command]
        element = spec.returns.of if isinstance(spec.returns, Array) else None
        out = []
        for disk in vm.disks:
            value = _Generator(rng, vm, disk).value(element, "", 1) if element else {}
            if isinstance(value, dict):
                for key, fact in (("device", disk.name), ("node-name", disk.node_name)):
                    if key in value:
                        value[key] = fact
                if "file" in value and isinstance(value["file"], str):
                    value["file"] = disk.file
                if "drv" in value and isinstance(value["drv"], str):
                    value["drv"] = disk.format
            out.append(value)
        return {"return": out}

    return reply


_FROM_THE_VM: Final[Mapping[str, Callable[[ProfileSpec, VmFacts, random.Random, Any], Reply]]] = {
    "query-cpus-fast": _cpus_fast,
    "query-cpus": _cpus,
    "query-hotpluggable-cpus": _hotpluggable,
    "query-blockstats": _per_disk("query-blockstats"),
    "query-named-block-nodes": _per_disk("query-named-block-nodes"),
}

# What a pc machine has and -M none lacks: a reply recorded on a pc does not do for
# -M none (it has no PCI bus, no RAM, no ACPI, no PS/2 mouse).  Any other reply
# recorded on a pc is what an idle -M none VM answers too.
_PC_DEVICES: Final = frozenset(
    (
        "query-pci",
        "query-memdev",
        "query-memory-size-summary",
        "query-mice",
        "query-acpi-ospm-status",
        "query-sgx",
        "query-memory-devices",
        "query-rocker",
    )
)

# --- facts of QEMU's code that recordings do not show ----------------------------------

_KNOWN: Final[Mapping[str, Reply]] = {}
"""(The postcopy commands' refusals that were here are :mod:`qmpsim.vm.migration`'s.)"""


# --- the answer -----------------------------------------------------------------------------


def source(profile: ProfileSpec, command: str, *, modelled: bool) -> str:
    """Which source answers ``command``: modelled, recorded or generated.

    ``modelled``: the machine has a handler.  A recorded command may still be
    generated for requests with other arguments than the recorded ones.
    """
    if modelled or command in _FROM_THE_VM or command in _KNOWN:
        return MODELLED
    if command in profile.recorded:
        return RECORDED
    return GENERATED


def unmodelled_reply(
    profile: ProfileSpec,
    vm: VmFacts,
    command: str,
    arguments: Mapping[str, Any],
    seed: int,
    *,
    modules_loaded: bool = False,
) -> tuple[str, Reply]:
    """The source and the reply for an unmodelled ``command`` of ``profile``;
    ``modules_loaded``: whether QEMU would have loaded its modules by now
    (:data:`LOADS_MODULES`)."""
    rng = random.Random(f"{seed}:{command}:{json.dumps(arguments, sort_keys=True)}")
    special = _FROM_THE_VM.get(command)
    if special is not None:
        reply = special(profile, vm, rng, arguments)
        returns = profile.commands[command].returns
        if "return" in reply and returns is not None:
            # shaped after today's QEMU: fitted to this version's type
            reply["return"] = _Generator(rng, vm, None).conform(returns, reply["return"], 0)
        return MODELLED, reply
    known = _KNOWN.get(command)
    if known is not None:
        return MODELLED, known
    machine = machine_type(vm)
    recorded = profile.recorded_reply(
        command,
        arguments,
        kvm=vm.kvm_enabled,
        machine=machine,
        other_machines=machine == "pc" or command not in _PC_DEVICES,
        modules_loaded=modules_loaded,
    )
    if recorded is not None:
        # a recording holds QEMU's output order; the writer wants insertion order
        return RECORDED, qdict_insertion(recorded)
    spec = profile.commands[command]
    return GENERATED, {"return": generate(spec.returns, vm, rng)}


def fit_reply(profile: ProfileSpec, vm: VmFacts, command: str, value: Any, seed: int) -> Any:
    """A modelled reply, fitted to this version's return type where it does not match:
    the model answers like today's QEMU (``query-status`` lost ``singlestep`` in 9.0)."""
    spec = profile.commands.get(command)
    returns = spec.returns if spec is not None else None
    if returns is None or compile_schema(returns)(value):
        return value
    return _Generator(random.Random(f"{seed}:{command}"), vm, None).conform(returns, value, 0)


def _recorded_first(profile: ProfileSpec, command: str, vm: VmFacts) -> dict[str, Any] | None:
    reply = profile.recorded_reply(command, {}, kvm=vm.kvm_enabled, machine="pc")
    value = reply.get("return") if reply else None
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return dict(value[0])
    return None


# --- generation from the return type ---------------------------------------------------


def generate(returns: Type | None, vm: VmFacts, rng: random.Random) -> Any:
    """A value of type ``returns``; a list the VM has nothing for is empty."""
    if returns is None:
        return {}
    if isinstance(returns, Array):
        return []  # a list of things (jobs, iothreads, …) this VM was not given
    return _Generator(rng, vm, None).value(returns, "", 0)


_MAX_DEPTH: Final = 4


class _Generator:
    """Values that look like QEMU's, by member name where the name says what it is."""

    def __init__(self, rng: random.Random, vm: VmFacts, disk: Any) -> None:
        self.rng = rng
        self.vm = vm
        self.disk = disk

    def value(self, typ: Type, name: str, depth: int) -> Any:
        if isinstance(typ, Builtin):
            return self.builtin(typ.name, name)
        if isinstance(typ, Enum):
            return self.rng.choice(typ.values) if typ.values else ""
        if isinstance(typ, Array):
            count = 0 if depth >= _MAX_DEPTH else self.rng.randint(0, 2)
            return [self.value(typ.of, name, depth + 1) for _ in range(count)]
        if isinstance(typ, Alternate):
            scalars = [m for m in typ.members if not isinstance(m, Object | Array)]
            branch = self.rng.choice(scalars if scalars and depth >= 1 else list(typ.members))
            if isinstance(branch, Builtin) and branch.name == "null" and len(typ.members) > 1:
                branch = next(m for m in typ.members if m is not branch)
            return self.value(branch, name, depth)
        return self.object(typ, depth)

    def conform(self, typ: Type, value: Any, depth: int) -> Any:
        """``value`` with the members ``typ`` lacks dropped and the ones it needs added."""
        if isinstance(typ, Array) and isinstance(value, list):
            return [self.conform(typ.of, v, depth + 1) for v in value]
        if isinstance(typ, Alternate):
            branch = next((m for m in typ.members if not any(problems(m, value))), None)
            return value if branch is not None else self.value(typ, "", depth)
        if not isinstance(typ, Object) or not isinstance(value, dict):
            return value if not any(problems(typ, value)) else self.value(typ, "", depth)
        tag = typ.member(typ.tag) if typ.tag is not None else None
        if tag is not None and value.get(typ.tag) not in getattr(tag.type, "values", ()):
            return self.object(typ, depth)
        branch = typ.variant(value)
        fields = (*typ.fields, *(branch.fields if branch is not None else ()))
        out: dict[str, Any] = {}
        for f in fields:
            if f.name in value:
                out[f.name] = self.conform(f.type, value[f.name], depth + 1)
            elif not f.optional:
                out[f.name] = self.value(f.type, f.name, depth + 1)
        return out

    def object(self, typ: Object, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields = list(typ.fields)
        if typ.tag is not None:
            tag = typ.member(typ.tag)
            cases = [v for v in typ.variants] or (
                list(tag.type.values) if tag and isinstance(tag.type, Enum) else []
            )
            if cases:
                case = self.rng.choice(cases)
                out[typ.tag] = case
                branch = typ.variants.get(case)
                fields = [f for f in fields if f.name != typ.tag]
                if branch is not None:
                    fields += branch.fields
        for f in fields:
            if f.optional and (depth >= _MAX_DEPTH or self.rng.random() < 0.5):
                continue
            out[f.name] = self.value(f.type, f.name, depth + 1)
        return out

    def builtin(self, kind: str, name: str) -> Any:
        rng = self.rng
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "int":
            if "size" in name or name.endswith("bytes") or name.endswith("memory"):
                return rng.randint(1, 64) * 1024 * 1024
            return rng.randint(0, 100)
        if kind == "number":
            return round(rng.uniform(0, 100), 3)
        if kind == "null":
            return None
        if kind == "any":
            return {}
        return self.string(name)

    def string(self, name: str) -> str:
        rng = self.rng
        disk = self.disk
        if name in ("UUID", "uuid"):
            return self.vm.uuid
        if name == "device" and disk is not None:
            return str(disk.name)
        if name == "node-name":
            return str(disk.node_name) if disk is not None else f"#block{rng.randint(100, 999)}"
        if name in ("qom-path", "qom_path", "path"):
            return f"/machine/unattached/device[{rng.randint(0, 40)}]"
        if name in ("host", "address", "ip"):
            return "127.0.0.1"
        if name in ("port", "service"):
            return str(rng.randint(5900, 5999))
        if name in ("filename", "file", "backing_file", "backing-filename"):
            return str(disk.file) if disk is not None else "/var/lib/qemu/disk0.qcow2"
        if name in ("format", "drv", "driver"):
            return str(disk.format) if disk is not None else "qcow2"
        if name == "name" and self.vm.name is not None:
            return self.vm.name
        return f"{name or 'value'}{rng.randint(0, 99)}"
