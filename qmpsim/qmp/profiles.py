"""The protocol profiles: every command and event one QEMU version has, as data.

A profile is what one QEMU version says on the wire: its greeting, its commands
with their argument and return types, and its events with their data types.
``qemu-2.5`` … ``qemu-11.1`` are compiled from recorded conversations with real
QEMU builds (``tools/compile_profiles.py``; the data ships in
``qmpsim/profiles/``) and load lazily: only the profile in use, and only its
greeting until a command or an event needs the rest.  ``qemu-0.14`` is written
by hand, from the seed specification.  Everything qmpsim emits is validated
against the active profile before it leaves (the walker lives in
:mod:`qmpsim.qmp.schema`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qmpsim.errors import CatalogError
from qmpsim.qmp.schema import (
    ANY,
    BOOL,
    INT,
    NUMBER,
    STR,
    Alternate,
    Array,
    Builtin,
    Enum,
    Field,
    Object,
    Type,
    check_value,
    compile_schema,
    member_names,
    types_from_introspection,
)

__all__ = [
    "ANY",
    "BOOL",
    "DEFAULT_PROFILE",
    "INT",
    "NUMBER",
    "PROFILES",
    "STR",
    "Alternate",
    "Array",
    "Builtin",
    "CommandSpec",
    "Enum",
    "EventSpec",
    "Field",
    "Object",
    "ProfileSpec",
    "Type",
    "check_value",
    "compile_schema",
    "fit_event_data",
    "get_profile",
    "validate_event",
]


@dataclass(frozen=True)
class CommandSpec:
    """A command: its arguments (an object type), its return type, whether it may run
    out-of-band.  ``returns`` is ``None`` where the schema does not say (hand-written
    profiles, commands QEMU dispatches without introspection)."""

    name: str
    arguments: Object
    allow_oob: bool = False
    allow_preconfig: bool = False
    returns: Type | None = None


@dataclass(frozen=True)
class EventSpec:
    """An event's name and the schema of its ``data`` member (``None``: the event has no data)."""

    name: str
    data: Object | None


@dataclass(frozen=True)
class Recorded:
    """A reply a real QEMU gave to one request, whether that QEMU ran with KVM and
    which machine (``none``: ``-M none``, ``pc``: a ``-M pc`` VM)."""

    command: str
    arguments: Mapping[str, Any] | None
    kvm: bool
    machine: str
    reply: Mapping[str, Any]
    """``{"return": …}`` or ``{"error": {"class": …, "desc": …}}``."""
    borrowed: str | None = None
    """The profile whose QEMU gave this reply, when not this one's: the nearest
    recorded version's answer to a query this version's recordings did not ask,
    where it fits this version's return type."""
    modules: bool = False
    """Given once QEMU had loaded its modules (``qom-list-types`` does), where that
    changed the answer (a display module adds its option group)."""


@dataclass(frozen=True)
class ProfileSpec:
    """Everything one protocol profile says about the wire.

    ``throttle`` maps event names to QEMU's minimum interval between two of
    them (seconds); ``run_states`` is whether ``query-status`` reports ``status``
    (QEMU 1.1 and later) and commands check it.  ``recorded`` holds the replies of
    the real QEMU the profile was compiled from, by command (``query-qmp-schema``
    among them; empty for a hand-written profile).
    """

    name: str
    version: tuple[int, int, int]
    package: str
    capabilities: tuple[str, ...]
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)
    events: Mapping[str, EventSpec] = field(default_factory=dict)
    throttle: Mapping[str, float] = field(default_factory=dict)
    run_states: bool = True
    recorded: Mapping[str, Sequence[Recorded]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<ProfileSpec {self.name}: QEMU {'.'.join(map(str, self.version))}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints its arguments with IPython's protocol: all of a schema is too much
        printer.text(repr(self))

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

    def recorded_reply(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        kvm: bool = False,
        machine: str = "none",
        other_machines: bool = True,
        modules_loaded: bool = False,
    ) -> Mapping[str, Any] | None:
        """What the recorded QEMU answered to the same request, or ``None``.

        A reply recorded on the same machine type (``none``, ``pc``) is preferred,
        then one given in the same state of QEMU's modules, then one with the same
        accelerator; ``other_machines=False`` takes only the same machine type.  The
        defaults ask for an idle ``-M none`` without KVM, as the facts of a build
        (its types and their properties) are recorded.
        """
        best: tuple[int, Mapping[str, Any]] | None = None
        for rec in self.recorded.get(command, ()):
            if (rec.arguments or {}) != (arguments or {}):
                continue
            if rec.machine != machine and not other_machines:
                continue
            rank = (rec.machine != machine) * 4 + (rec.modules != modules_loaded) * 2
            rank += rec.kvm != kvm
            if best is None or rank < best[0]:
                best = (rank, rec.reply)
        return best[1] if best is not None else None


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


# --- compiled profiles, loaded lazily ---------------------------------------------------

DATA_DIR: Final = Path(__file__).parent.parent / "profiles"
"""Where the compiled profiles ship: ``index.json`` and one ``<name>.json.xz`` each."""

# QEMU's monitor_qapi_event_conf: the rates qmpsim's model applies (per event name).
_THROTTLED: Final = ("RTC_CHANGE", "WATCHDOG", "BALLOON_CHANGE")

# Commands QEMU marshals by hand ('gen': false): they take members beyond the
# declared ones (device properties, netdev and object options).  netdev_add and
# object-add became typed unions in 5.2 and 6.0; the arguments say which era.
_OPEN_ARGUMENTS: Final = ("device_add", "netdev_add", "object-add")


class _Lazy(Mapping[str, Any]):
    """A mapping built on first use (the profile's body is read then)."""

    __slots__ = ("_build", "_table")

    def __init__(self, build: Any) -> None:
        self._build = build
        self._table: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        table = self._table
        if table is None:
            table = self._table = self._build()
        return table

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._get().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return "<not loaded yet>" if self._table is None else repr(self._table)


@dataclass(frozen=True)
class _Body:
    commands: dict[str, CommandSpec]
    events: dict[str, EventSpec]
    recorded: dict[str, tuple[Recorded, ...]]


_BODIES: dict[str, _Body] = {}
_LOCK = threading.Lock()  # a background simulator may load while the test's thread does


def _body(name: str) -> _Body:
    body = _BODIES.get(name)
    if body is None:
        with _LOCK:
            body = _BODIES.get(name)
            if body is None:
                body = _BODIES[name] = _read_body(name)
    return body


def _read_body(name: str) -> _Body:
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
    return _Body(commands, events, {k: tuple(v) for k, v in recorded.items()})


def _unintrospected(command: str) -> CommandSpec:
    """A command QEMU dispatches that its schema does not list (QEMU 2.5–2.7)."""
    if command == "device_add":
        args = Object("q_obj_device_add-arg", (Field("driver", STR),), open=True)
    else:
        args = Object(f"q_obj_{command}-arg", ())
    return CommandSpec(command, args)


def _compiled(name: str, head: Mapping[str, Any]) -> ProfileSpec:
    major, minor, micro = head["version"]
    return ProfileSpec(
        name=name,
        version=(major, minor, micro),
        package=head["package"],
        capabilities=tuple(head["capabilities"]),
        commands=_Lazy(lambda: _body(name).commands),
        events=_Lazy(lambda: _body(name).events),
        throttle=_Lazy(lambda: {e: 1.0 for e in _THROTTLED if e in _body(name).events}),
        recorded=_Lazy(lambda: _body(name).recorded),
    )


class _Profiles(Mapping[str, ProfileSpec]):
    """Every profile by name, oldest first; compiled ones are read when first asked for."""

    def __init__(self) -> None:
        self._index: dict[str, Mapping[str, Any]] | None = None
        self._made: dict[str, ProfileSpec] = {QEMU_0_14.name: QEMU_0_14}

    def _heads(self) -> dict[str, Mapping[str, Any]]:
        if self._index is None:
            try:
                text = (DATA_DIR / "index.json").read_text(encoding="utf-8")
            except OSError as exc:
                raise CatalogError(f"the profile index cannot be read: {exc}") from None
            self._index = {QEMU_0_14.name: {}, **json.loads(text)["profiles"]}
        return self._index

    def __getitem__(self, name: str) -> ProfileSpec:
        made = self._made.get(name)
        if made is None:
            head = self._heads()[name]  # KeyError for an unknown name, as a mapping should
            with _LOCK:
                made = self._made.setdefault(name, _compiled(name, head))
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads())

    def __len__(self) -> int:
        return len(self._heads())

    def __contains__(self, name: object) -> bool:
        return name in self._heads()


PROFILES: Mapping[str, ProfileSpec] = _Profiles()
DEFAULT_PROFILE = "qemu-7.2"


def get_profile(name: str) -> ProfileSpec:
    """The profile called ``name``; a clear error naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise CatalogError(f"unknown profile {name!r} (known profiles: {known})") from None


def __getattr__(name: str) -> Any:
    # QEMU_7_2 was a hand-written table; it is the compiled profile now, read on use.
    if name == "QEMU_7_2":
        return get_profile("qemu-7.2")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- event validation ---------------------------------------------------------------

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


def fit_event_data(
    profile: ProfileSpec, name: str, data: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``data`` as the VM model builds it (for recent QEMU), cut to what ``profile``'s
    event carries: members the event did not have yet are dropped (SHUTDOWN's
    ``reason`` before QEMU 4.0, RTC_CHANGE's ``qom-path`` before 7.0…)."""
    spec = profile.events.get(name)
    if spec is None or data is None:
        return data
    if spec.data is None:
        return None
    return _fit(spec.data, data)


def _fit(typ: Object, data: Mapping[str, Any]) -> dict[str, Any]:
    names = member_names(typ, data)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            continue
        member = typ.member(key)
        if member is not None and isinstance(member.type, Object) and isinstance(value, Mapping):
            value = _fit(member.type, value)
        out[key] = value
    return out


_TIMESTAMP = Object("timestamp", (Field("seconds", INT), Field("microseconds", INT)))
