"""Reading a compiled profile: ``qmpsim/profiles/<name>.json.xz`` into commands and events.

``tools/compile_profiles.py`` turns recorded conversations with real QEMU
builds into one xz-compressed JSON file per profile (its ``query-qmp-schema``,
the commands and events it has, the replies it gave) plus ``index.json``, the
greetings.  :func:`read_body` reads one file; :mod:`qmpsim.qmp.profiles` calls
it once per process, on a profile's first command or event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qmpsim.errors import CatalogError
from qmpsim.qmp.profile_spec import CommandSpec, EventSpec, Recorded
from qmpsim.qmp.qapi import STR, Field, Object, types_from_introspection

__all__ = ["DATA_DIR", "Body", "read_body"]

DATA_DIR: Final = Path(__file__).parent.parent / "profiles"
"""Where the compiled profiles ship: ``index.json`` and one ``<name>.json.xz`` each."""

# Commands QEMU marshals by hand ('gen': false): they take members beyond the
# declared ones (device properties, netdev and object options).  netdev_add and
# object-add became typed unions in 5.2 and 6.0; the arguments say which era.
_OPEN_ARGUMENTS: Final = ("device_add", "netdev_add", "object-add")


@dataclass(frozen=True)
class Body:
    """A compiled profile's body: its commands, events and recorded replies."""

    commands: dict[str, CommandSpec]
    events: dict[str, EventSpec]
    recorded: dict[str, tuple[Recorded, ...]]


def read_body(name: str) -> Body:
    """The body of the compiled profile ``name``, read from :data:`DATA_DIR`."""
    import lzma  # only a process that uses a compiled profile's body pays for it

    path = DATA_DIR / f"{name}.json.xz"
    try:
        data = json.loads(lzma.decompress(path.read_bytes()))
    except (OSError, lzma.LZMAError, ValueError) as exc:
        raise CatalogError(f"profile {name}: cannot read {path}: {exc}") from None
    schema: list[dict[str, Any]] = data["schema"]
    resolve = types_from_introspection(schema)
    entries = {e["name"]: e for e in schema if e["meta-type"] in ("command", "event")}
    order = data["commands"]
    if order is None:
        order = [e["name"] for e in schema if e["meta-type"] == "command"]
    commands: dict[str, CommandSpec] = {}
    for command in order:
        entry = entries.get(command)
        if entry is None or entry["meta-type"] != "command":
            commands[command] = _unintrospected(command)
            continue
        arguments = resolve(entry["arg-type"])
        assert isinstance(arguments, Object)
        if command in _OPEN_ARGUMENTS and arguments.tag is None:
            arguments = Object(arguments.name, arguments.fields, open=True)
        commands[command] = CommandSpec(
            command,
            arguments,
            allow_oob=bool(entry.get("allow-oob", False)),
            returns=resolve(entry["ret-type"]),
        )
    events: dict[str, EventSpec] = {}
    for event in data["events"]:
        arg = resolve(entries[event]["arg-type"])
        assert isinstance(arg, Object)
        events[event] = EventSpec(event, arg if arg.fields or arg.tag else None)
    recorded: dict[str, list[Recorded]] = {}
    for command, arguments, kvm, machine, reply, *borrowed in data["replies"]:
        rec = Recorded(command, arguments, kvm, machine, reply, *borrowed)
        recorded.setdefault(command, []).append(rec)
    for command, arguments, kvm, machine, reply in data.get("after_modules", ()):
        rec = Recorded(command, arguments, kvm, machine, reply, modules=True)
        recorded.setdefault(command, []).append(rec)
    return Body(commands, events, {k: tuple(v) for k, v in recorded.items()})


def _unintrospected(command: str) -> CommandSpec:
    """A command QEMU dispatches that its schema does not list (QEMU 2.5–2.7)."""
    if command == "device_add":
        args = Object("q_obj_device_add-arg", (Field("driver", STR),), open=True)
    else:
        args = Object(f"q_obj_{command}-arg", ())
    return CommandSpec(command, args)
