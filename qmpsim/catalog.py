"""The event and command catalog of each protocol profile: data, not logic.

A profile is what one QEMU era says on the wire: its greeting, its commands with
their argument schemas, and its events with their data schemas.  Everything
qmpsim emits is validated against the active profile before it leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import CatalogError

# --- the schema mini-language -------------------------------------------------


@dataclass(frozen=True)
class Builtin:
    """A QAPI builtin: ``str``, ``int``, ``number``, ``bool``, ``null`` or ``any``."""

    name: str


@dataclass(frozen=True)
class Enum:
    """A QAPI enum: a closed set of strings."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Array:
    """A JSON array whose every element has type ``of``."""

    of: Type


@dataclass(frozen=True)
class Field:
    """One member of an object; ``optional`` members may be absent."""

    name: str
    type: Type
    optional: bool = False


@dataclass(frozen=True)
class Object:
    """A QAPI struct: named members, no others allowed."""

    name: str
    fields: tuple[Field, ...]

    def member(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


Type = Builtin | Enum | Array | Object

STR = Builtin("str")
INT = Builtin("int")
NUMBER = Builtin("number")
BOOL = Builtin("bool")
ANY = Builtin("any")


@dataclass(frozen=True)
class CommandSpec:
    """A command's name, its arguments (as an object type) and whether it may run out-of-band."""

    name: str
    arguments: Object
    allow_oob: bool = False
    allow_preconfig: bool = False


@dataclass(frozen=True)
class EventSpec:
    """An event's name and the schema of its ``data`` member (``None``: the event has no data)."""

    name: str
    data: Object | None


@dataclass(frozen=True)
class ProfileSpec:
    """Everything one protocol profile says about the wire.

    ``throttle`` maps event names to QEMU's minimum interval between two of
    them (seconds); ``run_states`` is whether ``query-status`` reports ``status``
    (QEMU 1.1 and later) and commands check it.
    """

    name: str
    version: tuple[int, int, int]
    package: str
    capabilities: tuple[str, ...]
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)
    events: Mapping[str, EventSpec] = field(default_factory=dict)
    throttle: Mapping[str, float] = field(default_factory=dict)
    run_states: bool = True

    def greeting(self) -> dict[str, Any]:
        """The greeting object, in the member order QEMU builds it."""
        major, minor, micro = self.version
        return {
            "QMP": {
                "version": {
                    "qemu": {"major": major, "minor": minor, "micro": micro},
                    "package": self.package,
                },
                "capabilities": list(self.capabilities),
            }
        }


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
_FAMILY = Enum("NetworkAddressFamily", ("ipv4", "ipv6", "unix", "vsock", "unknown"))
_IO_OPERATION = Enum("IoOperationType", ("read", "write"))
_ERROR_ACTION = Enum("BlockErrorAction", ("ignore", "report", "stop"))
_SHUTDOWN_CAUSE = Enum(
    "ShutdownCause",
    (
        "none",
        "host-error",
        "host-qmp-quit",
        "host-qmp-system-reset",
        "host-signal",
        "host-ui",
        "guest-shutdown",
        "guest-reset",
        "guest-panic",
        "subsystem-reset",
        "snapshot-load",
    ),
)
WATCHDOG_ACTIONS_0_14 = ("reset", "shutdown", "poweroff", "pause", "debug", "none")
WATCHDOG_ACTIONS = (*WATCHDOG_ACTIONS_0_14, "inject-nmi")


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

_SHUTDOWN_DATA = (Field("guest", BOOL), Field("reason", _SHUTDOWN_CAUSE))

_EVENTS_7_2: tuple[EventSpec, ...] = (
    EventSpec(
        "BLOCK_IO_ERROR",
        Object(
            "BLOCK_IO_ERROR",
            (
                Field("device", STR),
                Field("node-name", STR, optional=True),
                Field("operation", _IO_OPERATION),
                Field("action", _ERROR_ACTION),
                Field("nospace", BOOL, optional=True),
                Field("reason", STR),
            ),
        ),
    ),
    EventSpec("RESET", Object("RESET", _SHUTDOWN_DATA)),
    EventSpec("RESUME", None),
    EventSpec("RTC_CHANGE", Object("RTC_CHANGE", (Field("offset", INT), Field("qom-path", STR)))),
    EventSpec("SHUTDOWN", Object("SHUTDOWN", _SHUTDOWN_DATA)),
    EventSpec("POWERDOWN", None),
    EventSpec("STOP", None),
    *_vnc_events(websocket=True, family=_FAMILY),
    *_spice_events(_FAMILY),
    EventSpec(
        "WATCHDOG", Object("WATCHDOG", (Field("action", Enum("WatchdogAction", WATCHDOG_ACTIONS)),))
    ),
    EventSpec(
        "GUEST_PANICKED",
        Object(
            "GUEST_PANICKED",
            (
                Field("action", Enum("GuestPanicAction", ("pause", "poweroff", "run"))),
                Field("info", ANY, optional=True),
            ),
        ),
    ),
)


def _events_by_name(specs: tuple[EventSpec, ...]) -> dict[str, EventSpec]:
    return {spec.name: spec for spec in specs}


# --- profiles -------------------------------------------------------------------

QEMU_7_2 = ProfileSpec(
    name="qemu-7.2",
    version=(7, 2, 0),
    package="",
    capabilities=("oob",),
    commands=_by_name(_COMMON_COMMANDS),
    events=_events_by_name(_EVENTS_7_2),
    # monitor_qapi_event_conf: rates QEMU applies to the events qmpsim knows.
    throttle={"RTC_CHANGE": 1.0, "WATCHDOG": 1.0},
)

QEMU_0_14 = ProfileSpec(
    name="qemu-0.14",
    version=(0, 14, 0),
    package="",
    capabilities=(),
    commands=_by_name(_COMMANDS_0_14),
    events=_events_by_name(_EVENTS_0_14),
    run_states=False,
)

PROFILES: Mapping[str, ProfileSpec] = {p.name: p for p in (QEMU_7_2, QEMU_0_14)}
DEFAULT_PROFILE = QEMU_7_2.name


def get_profile(name: str) -> ProfileSpec:
    """The profile called ``name``; a clear error naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise CatalogError(f"unknown profile {name!r} (known profiles: {known})") from None


# --- validation -----------------------------------------------------------------


def check_value(schema: Type, value: Any, path: str = "") -> list[str]:
    """Every way ``value`` departs from ``schema``; ``path`` names where, for messages."""
    where = path or "value"
    if isinstance(schema, Builtin):
        return _check_builtin(schema.name, value, where)
    if isinstance(schema, Enum):
        if not isinstance(value, str) or value not in schema.values:
            allowed = ", ".join(schema.values)
            return [f"{where}: {value!r} is not one of {schema.name} ({allowed})"]
        return []
    if isinstance(schema, Array):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {_kind(value)}"]
        problems: list[str] = []
        for i, item in enumerate(value):
            problems += check_value(schema.of, item, f"{where}[{i}]")
        return problems
    return _check_object(schema, value, path)


def _check_object(schema: Object, value: Any, path: str) -> list[str]:
    where = path or "value"
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({schema.name}), got {_kind(value)}"]
    problems: list[str] = []
    prefix = f"{path}." if path else ""
    for f in schema.fields:
        if f.name in value:
            problems += check_value(f.type, value[f.name], prefix + f.name)
        elif not f.optional:
            problems.append(f"{where}: missing member '{f.name}'")
    for key in value:
        if schema.member(key) is None:
            problems.append(f"{where}: unexpected member '{key}'")
    return problems


def _check_builtin(name: str, value: Any, where: str) -> list[str]:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "null": value is None,
        "any": True,
    }[name]
    return [] if ok else [f"{where}: expected {name}, got {_kind(value)}"]


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# --- compiled checkers -------------------------------------------------------------
#
# Every emitted event is validated, so a profile's schemas are compiled once into
# predicates that only say whether a value conforms.  They accept exactly what
# check_value accepts; when one says no, check_value runs to say why.

Checker = Callable[[Any], bool]

_COMPILED: dict[int, tuple[Type, Checker]] = {}


def compile_schema(schema: Type) -> Checker:
    """A predicate true exactly when ``check_value(schema, value)`` finds no problem."""
    cached = _COMPILED.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    checker = _compile(schema)
    _COMPILED[id(schema)] = (schema, checker)  # the schema is kept, so its id stays unique
    return checker


def _compile(schema: Type) -> Checker:
    if isinstance(schema, Builtin):
        return _BUILTIN_CHECKERS[schema.name]
    if isinstance(schema, Enum):
        values = frozenset(schema.values)
        return lambda value: isinstance(value, str) and value in values
    if isinstance(schema, Array):
        of = _compile(schema.of)
        return lambda value: isinstance(value, list) and all(of(item) for item in value)
    members = {f.name: _compile(f.type) for f in schema.fields}
    required = frozenset(f.name for f in schema.fields if not f.optional)
    items = tuple(members.items())

    def check_object(value: Any) -> bool:
        if not isinstance(value, dict) or not required.issubset(value):
            return False
        if len(value) == len(members):
            # Every member is present and none is unexpected iff the key sets are equal.
            # A loop rather than all() over a generator: it runs for every emitted event.
            for name, check in items:  # noqa: SIM110
                if name not in value or not check(value[name]):
                    return False
            return True
        for key, item in value.items():
            member = members.get(key)
            if member is None or not member(item):
                return False
        return True

    return check_object


_BUILTIN_CHECKERS: dict[str, Checker] = {
    "str": lambda value: isinstance(value, str),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "bool": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    "any": lambda value: True,
}

_EVENT_KEYS = frozenset(("event", "data", "timestamp"))


def _conforms(profile: ProfileSpec, message: Mapping[str, Any]) -> bool:
    if not _EVENT_KEYS.issuperset(message):
        return False
    ts = message.get("timestamp")
    if type(ts) is not dict or len(ts) != 2:
        return False
    seconds = ts.get("seconds")
    micro = ts.get("microseconds")
    if type(seconds) is not int or type(micro) is not int or not 0 <= micro < 1_000_000:
        return False
    name = message.get("event")
    spec = profile.events.get(name) if isinstance(name, str) else None
    if spec is None:
        return False
    if spec.data is None:
        return "data" not in message
    return "data" in message and compile_schema(spec.data)(message["data"])


def validate_event(profile: ProfileSpec, message: Mapping[str, Any]) -> list[str]:
    """Every way the event message ``message`` departs from ``profile`` (empty: conformant)."""
    if _conforms(profile, message):
        return []
    problems: list[str] = []
    for key in message:
        if key not in ("event", "data", "timestamp"):
            problems.append(f"unexpected member '{key}' in an event message")
    name = message.get("event")
    ts = message.get("timestamp")
    problems += check_value(_TIMESTAMP, ts, "timestamp")
    micro = ts.get("microseconds") if isinstance(ts, dict) else None
    if isinstance(micro, int) and not 0 <= micro < 1_000_000:
        problems.append("timestamp.microseconds: must be in 0..999999")
    if not isinstance(name, str):
        return [*problems, "event: expected the event name as a string"]
    spec = profile.events.get(name)
    if spec is None:
        return [*problems, f"event {name!r} does not exist in profile {profile.name}"]
    if spec.data is None:
        if "data" in message:
            problems.append(f"{name}: has no data in profile {profile.name}")
        return problems
    if "data" not in message:
        return [*problems, f"{name}: missing member 'data'"]
    return problems + [f"{name}: {p}" for p in check_value(spec.data, message["data"], "data")]


_TIMESTAMP = Object("timestamp", (Field("seconds", INT), Field("microseconds", INT)))
