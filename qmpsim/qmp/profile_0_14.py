"""The hand-written seed profile, ``qemu-0.14``: QEMU before ``query-qmp-schema``.

Its commands and events are typed by hand, from the seed specification
(``spec/qmp-events.txt``): no recording of so old a QEMU describes them.
"""

from __future__ import annotations

from qmpsim.qmp.profile_spec import CommandSpec, EventSpec, ProfileSpec
from qmpsim.qmp.qapi import BOOL, INT, STR, Array, Enum, Field, Object

__all__ = ["QEMU_0_14", "QMP_CAPABILITY", "WATCHDOG_ACTIONS_0_14"]


# --- commands -------------------------------------------------------------------

QMP_CAPABILITY = Enum("QMPCapability", ("oob",))


def _cmd(name: str, *fields: Field, oob: bool = False, preconfig: bool = False) -> CommandSpec:
    return CommandSpec(name, Object(f"q_obj_{name}-arg", fields), oob, preconfig)


_COMMON_COMMANDS: tuple[CommandSpec, ...] = (
    _cmd(
        "qmp_capabilities",
        Field("enable", Array(QMP_CAPABILITY), optional=True),
        preconfig=True,
    ),
    _cmd("query-version", preconfig=True),
    _cmd("query-commands", preconfig=True),
    _cmd("query-status", preconfig=True),
    _cmd("stop"),
    _cmd("cont"),
    _cmd("system_reset"),
    _cmd("system_powerdown"),
    _cmd("quit", preconfig=True),
    _cmd("query-name", preconfig=True),
    _cmd("query-uuid", preconfig=True),
    _cmd("query-kvm", preconfig=True),
    _cmd("query-block"),
    _cmd("query-vnc"),
    _cmd("query-spice"),
    _cmd(
        "human-monitor-command",
        Field("command-line", STR),
        Field("cpu-index", INT, optional=True),
    ),
)

# QEMU 0.14 negotiated no capabilities: qmp_capabilities took no arguments.
_COMMANDS_0_14: tuple[CommandSpec, ...] = (
    _cmd("qmp_capabilities"),
    *(spec for spec in _COMMON_COMMANDS if spec.name != "qmp_capabilities"),
)


def _by_name(specs: tuple[CommandSpec, ...]) -> dict[str, CommandSpec]:
    return {spec.name: spec for spec in specs}


# --- events ---------------------------------------------------------------------
# Members are listed in QAPI declaration order, which is the order QEMU inserts
# them into the event's dictionary.

_FAMILY_0_14 = Enum("NetworkAddressFamily", ("ipv4", "ipv6"))
_IO_OPERATION = Enum("IoOperationType", ("read", "write"))
_ERROR_ACTION = Enum("BlockErrorAction", ("ignore", "report", "stop"))
WATCHDOG_ACTIONS_0_14 = ("reset", "shutdown", "poweroff", "pause", "debug", "none")


def _vnc_events(websocket: bool, family: Enum) -> tuple[EventSpec, ...]:
    ws = (Field("websocket", BOOL),) if websocket else ()
    basic = (Field("host", STR), Field("service", STR), Field("family", family), *ws)
    server = Object("VncServerInfo", (*basic, Field("auth", STR, optional=True)))
    client = Object("VncBasicInfo", basic)
    client_info = Object(
        "VncClientInfo",
        (
            *basic,
            Field("x509_dname", STR, optional=True),
            Field("sasl_username", STR, optional=True),
        ),
    )
    return (
        EventSpec("VNC_CONNECTED", Object("VNC_CONNECTED", _server_client(server, client))),
        EventSpec(
            "VNC_INITIALIZED", Object("VNC_INITIALIZED", _server_client(server, client_info))
        ),
        EventSpec(
            "VNC_DISCONNECTED", Object("VNC_DISCONNECTED", _server_client(server, client_info))
        ),
    )


def _server_client(server: Object, client: Object) -> tuple[Field, ...]:
    return (Field("server", server), Field("client", client))


def _spice_events(family: Enum) -> tuple[EventSpec, ...]:
    basic = Object(
        "SpiceBasicInfo", (Field("host", STR), Field("port", STR), Field("family", family))
    )
    server = Object("SpiceServerInfo", (*basic.fields, Field("auth", STR, optional=True)))
    channel = Object(
        "SpiceChannel",
        (
            *basic.fields,
            Field("connection-id", INT),
            Field("channel-type", INT),
            Field("channel-id", INT),
            Field("tls", BOOL),
        ),
    )
    return (
        EventSpec("SPICE_CONNECTED", Object("SPICE_CONNECTED", _server_client(basic, basic))),
        EventSpec(
            "SPICE_INITIALIZED", Object("SPICE_INITIALIZED", _server_client(server, channel))
        ),
        EventSpec("SPICE_DISCONNECTED", Object("SPICE_DISCONNECTED", _server_client(basic, basic))),
    )


_EVENTS_0_14: tuple[EventSpec, ...] = (
    EventSpec(
        "BLOCK_IO_ERROR",
        Object(
            "BLOCK_IO_ERROR",
            (
                Field("device", STR),
                Field("operation", _IO_OPERATION),
                Field("action", _ERROR_ACTION),
            ),
        ),
    ),
    EventSpec("RESET", None),
    EventSpec("RESUME", None),
    EventSpec("RTC_CHANGE", Object("RTC_CHANGE", (Field("offset", INT),))),
    EventSpec("SHUTDOWN", None),
    EventSpec("POWERDOWN", None),
    EventSpec("STOP", None),
    *_vnc_events(websocket=False, family=_FAMILY_0_14),
    *_spice_events(_FAMILY_0_14),
    EventSpec(
        "WATCHDOG",
        Object("WATCHDOG", (Field("action", Enum("WatchdogAction", WATCHDOG_ACTIONS_0_14)),)),
    ),
)


def _events_by_name(specs: tuple[EventSpec, ...]) -> dict[str, EventSpec]:
    return {spec.name: spec for spec in specs}


# --- the hand-written seed profile --------------------------------------------------

QEMU_0_14 = ProfileSpec(
    name="qemu-0.14",
    version=(0, 14, 0),
    package="",
    capabilities=(),
    commands=_by_name(_COMMANDS_0_14),
    events=_events_by_name(_EVENTS_0_14),
    run_states=False,
)
