"""A QEMU 7.2 profile with the device commands, for tests of the device model.

The hand-written ``qemu-7.2`` profile lists only the commands the model had
before devices; the profiles compiled from recordings list them all.
"""

from __future__ import annotations

import dataclasses

from qmpsim.catalog import (
    ANY,
    STR,
    CommandSpec,
    EventSpec,
    Field,
    Object,
    ProfileSpec,
    get_profile,
)

DEVICE_COMMANDS = {
    # QEMU's device_add takes any property; the hand-written schema names the ones tested
    "device_add": (
        Field("driver", STR),
        Field("bus", STR, True),
        Field("id", STR, True),
        Field("addr", STR, True),
        Field("netdev", STR, True),
        Field("chardev", STR, True),
    ),
    "device_del": (Field("id", STR),),
    "qom-list": (Field("path", STR),),
    "qom-get": (Field("path", STR), Field("property", STR)),
    "query-pci": (),
    "netdev_add": (Field("type", STR), Field("id", STR)),
    "netdev_del": (Field("id", STR),),
    "chardev-add": (Field("id", STR), Field("backend", ANY)),
    "chardev-remove": (Field("id", STR),),
    "query-chardev": (),
}

_DEVICE = (Field("device", STR, True), Field("path", STR))
DEVICE_EVENTS = {
    "DEVICE_DELETED": Object("q_obj_DEVICE_DELETED-arg", _DEVICE),
    "DEVICE_UNPLUG_GUEST_ERROR": Object("q_obj_DEVICE_UNPLUG_GUEST_ERROR-arg", _DEVICE),
}


def with_devices(name: str = "qemu-7.2") -> ProfileSpec:
    """``name``'s profile, plus the device commands it lacks."""
    base = get_profile(name)
    extra = {
        command: CommandSpec(command, Object(f"q_obj_{command}-arg", fields))
        for command, fields in DEVICE_COMMANDS.items()
        if command not in base.commands
    }
    events = {
        event: EventSpec(event, data)
        for event, data in DEVICE_EVENTS.items()
        if event not in base.events
    }
    return dataclasses.replace(
        base, commands={**base.commands, **extra}, events={**base.events, **events}
    )
