"""A recorded QMP session, read back from a transcript: what to replay, and in what order.

A transcript (``qmpsim record``'s, or any qmpsim transcript) holds the bytes each
client sent and received.  :func:`read_cassette` splits it into one
:class:`Session` per client connection: the greeting, then every request with
the reply it got and the events around it.

An event belongs to the request that preceded it.  When the event went out after
the request arrived and before its reply (``stop`` makes QEMU write STOP, then
``{"return": {}}``), it is one of the request's ``events``: a replay writes it
just before the reply.  Otherwise it happened on its own, ``delay`` seconds after
that request arrived: a replay writes it that long after the request arrives in
the replay, or when the next request arrives, whichever comes first, so the
client sees the messages in their recorded order.  Events before any request
count from the greeting.

The bytes are lexed again here, item by item, with QEMU's own lexer: every item
a client sends (a request, or input QEMU rejects) gets exactly one reply, so
replies pair with requests by order (out-of-band ones by their ``id``).
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from qmpsim.errors import QmpSimError
from qmpsim.qmp.profiles import (
    ANY,
    DEFAULT_PROFILE,
    PROFILES,
    CommandSpec,
    Field,
    Object,
    ProfileSpec,
)
from qmpsim.qmp.transcript import Direction, Transcript
from qmpsim.qmp.wire import JsonStreamer, ParseError

__all__ = [
    "Cassette",
    "CassetteError",
    "Exchange",
    "RecordedEvent",
    "Session",
    "load_cassette",
    "profile_for",
    "read_cassette",
]

_NEGOTIATE = "qmp_capabilities"
_ENVELOPE = frozenset(("execute", "exec-oob", "arguments", "id"))


class CassetteError(QmpSimError):
    """A transcript file that cannot be read back: the message names the file and line."""


@dataclass(frozen=True)
class RecordedEvent:
    """An event as QEMU sent it, and when, relative to what it belongs to."""

    message: Mapping[str, Any]
    delay: float
    """Seconds after the request it follows arrived (or after the greeting)."""

    @property
    def name(self) -> str:
        """The event's name."""
        return str(self.message.get("event"))


@dataclass(frozen=True)
class Exchange:
    """One request a client sent, and what QEMU answered.

    ``reply`` is ``None`` when QEMU never answered (the recording ended first).
    ``closed``: QEMU closed the connection after this reply (it exited).
    """

    index: int
    request: Mapping[str, Any]
    command: str
    arguments: Mapping[str, Any]
    oob: bool
    time: float
    reply: Mapping[str, Any] | None
    events: tuple[RecordedEvent, ...] = ()
    after: tuple[RecordedEvent, ...] = ()
    closed: bool = False

    def matches(self, command: str, arguments: Mapping[str, Any]) -> bool:
        """The same command with the same arguments (ids do not count)."""
        return command == self.command and dict(arguments) == dict(self.arguments)

    def describe(self) -> str:
        """The request as recorded, without its id: ``{"execute": "stop"}``."""
        shown = {k: v for k, v in self.request.items() if k != "id"}
        return json.dumps(shown, ensure_ascii=False)


@dataclass(frozen=True)
class Session:
    """One client connection of a recording."""

    client: int
    greeting: Mapping[str, Any] | None
    start: float
    """When the greeting went out (or the connection's first byte)."""
    opening: tuple[RecordedEvent, ...]
    """Events before the first request after negotiation; their ``delay`` counts from
    the negotiation's reply."""
    exchanges: tuple[Exchange, ...]
    """Every request after negotiation, in the order the client sent them."""
    negotiation: Mapping[str, Any] | None = None
    """The ``qmp_capabilities`` request, when the client negotiated."""
    closed: bool = False
    """QEMU closed the connection (it exited)."""

    def events(self) -> list[RecordedEvent]:
        """Every event of the session, in the order QEMU sent them."""
        out = list(self.opening)
        for exchange in self.exchanges:
            out += [*exchange.events, *exchange.after]
        return out


@dataclass(frozen=True)
class Cassette:
    """The sessions of a recording, in the order their clients connected."""

    sessions: tuple[Session, ...]
    source: str = "<transcript>"

    def commands(self) -> dict[str, set[str]]:
        """Every command recorded, with the argument names it was sent with."""
        out: dict[str, set[str]] = {}
        for session in self.sessions:
            for exchange in session.exchanges:
                out.setdefault(exchange.command, set()).update(exchange.arguments)
        return out

    def profile(self, base: ProfileSpec | None = None) -> ProfileSpec:
        """``base`` (default: the one matching the greeting) that also accepts every
        recorded command and argument, so a replay's protocol lets them through."""
        if base is None:
            greeting = next((s.greeting for s in self.sessions if s.greeting), None)
            base = profile_for(greeting)
        commands = dict(base.commands)
        for name, used in self.commands().items():
            spec = commands.get(name)
            if spec is None:
                spec = CommandSpec(name, Object(f"q_obj_{name}-arg", ()), allow_oob=True)
            missing = sorted(used - {f.name for f in spec.arguments.fields})
            if missing:
                fields = (*spec.arguments.fields, *(Field(n, ANY, optional=True) for n in missing))
                spec = replace(spec, arguments=replace(spec.arguments, fields=fields))
            commands[name] = spec
        return replace(base, commands=commands)


def profile_for(greeting: Mapping[str, Any] | None) -> ProfileSpec:
    """The newest profile not newer than the QEMU that sent ``greeting``."""
    version = _version(greeting)
    if version is None:
        return PROFILES[DEFAULT_PROFILE]
    fitting = [p for p in PROFILES.values() if p.version <= version]
    if not fitting:
        return min(PROFILES.values(), key=lambda p: p.version)
    return max(fitting, key=lambda p: p.version)


def _version(greeting: Mapping[str, Any] | None) -> tuple[int, int, int] | None:
    try:
        qemu = greeting["QMP"]["version"]["qemu"]  # type: ignore[index]
        return (int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"]))
    except (KeyError, TypeError, ValueError):
        return None


def read_cassette(transcript: Transcript, *, source: str = "<transcript>") -> Cassette:
    """The sessions a transcript recorded, one per client, in the order they connected."""
    clients: dict[int, _SessionReader] = {}
    for entry in transcript:
        reader = clients.get(entry.client)
        if reader is None:
            reader = clients[entry.client] = _SessionReader(entry.client)
        if entry.direction is Direction.IN:
            reader.received(entry.raw, entry.time)
        else:
            reader.sent(entry.raw, entry.time)
    return Cassette(tuple(reader.session() for reader in clients.values()), source)


# --- reading one client's traffic ------------------------------------------------------


@dataclass
class _Item:
    """One item the client sent (a request or input QEMU rejected) awaiting its reply."""

    message: Any
    time: float
    request: bool  # a command for the replay to answer (not negotiation, not junk)
    oob: bool = False
    reply: Mapping[str, Any] | None = None
    events: list[RecordedEvent] = field(default_factory=list)
    after: list[RecordedEvent] = field(default_factory=list)
    closed: bool = False


@dataclass
class _SessionReader:
    client: int
    start: float | None = None
    greeting: Mapping[str, Any] | None = None
    negotiation: Mapping[str, Any] | None = None
    negotiated: bool = False
    negotiated_at: float | None = None
    oob: bool = False
    closed: bool = False
    client_closed: bool = False
    items: list[_Item] = field(default_factory=list)
    opening: list[RecordedEvent] = field(default_factory=list)
    _in: JsonStreamer = field(default_factory=JsonStreamer)
    _out: JsonStreamer = field(default_factory=JsonStreamer)
    _pending: deque[_Item] = field(default_factory=deque)
    _pending_oob: dict[str, _Item] = field(default_factory=dict)

    def received(self, raw: bytes, time: float) -> None:
        if self.start is None:
            self.start = time
        if not raw:
            self.client_closed = True
        for value in self._in.feed(raw) if raw else ():
            item = self._classify(value, time)
            self.items.append(item)
            if item.oob:
                self._pending_oob[_key(item.message.get("id"))] = item
            else:
                self._pending.append(item)

    def _classify(self, value: Any, time: float) -> _Item:
        if isinstance(value, ParseError) or not isinstance(value, dict):
            return _Item(value, time, request=False)
        if not set(value) <= _ENVELOPE or not isinstance(value.get("arguments", {}), dict):
            return _Item(value, time, request=False)
        oob_key = self.oob and isinstance(value.get("exec-oob"), str)
        command = value.get("exec-oob") if oob_key else value.get("execute")
        if not isinstance(command, str) or ("execute" in value and "exec-oob" in value):
            return _Item(value, time, request=False)
        if command == _NEGOTIATE and not self.negotiated:
            # Assume it succeeds (the reply tells): what follows is then in command mode.
            self.negotiation = value
            enable = value.get("arguments", {}).get("enable", [])
            self.oob = isinstance(enable, list) and "oob" in enable
            self.negotiated = True
            return _Item(value, time, request=False)
        return _Item(value, time, request=self.negotiated, oob=bool(oob_key))

    def sent(self, raw: bytes, time: float) -> None:
        if not raw:
            if not self.client_closed:  # QEMU closed first: it exited
                self._closed()
            return
        for value in self._out.feed(raw):
            if isinstance(value, ParseError) or not isinstance(value, dict):
                continue
            if self.greeting is None and "QMP" in value and not self.items:
                self.greeting = value
                self.start = time
            elif "event" in value:
                self._event(value, time)
            elif "return" in value or "error" in value:
                self._reply(value, time)

    def _reply(self, message: dict[str, Any], time: float) -> None:
        item = self._pending_oob.pop(_key(message.get("id")), None) if "id" in message else None
        if item is None and self._pending:
            item = self._pending.popleft()
        if item is not None:
            item.reply = message
            if item.request and item.message.get("execute") == "quit" and "return" in message:
                self._closed()  # QEMU exits after this reply, whoever closes first
        elif not self.negotiated or not self.items:
            return
        if self.negotiation is not None and item is not None and item.message is self.negotiation:
            if "error" in message:  # refused: the client is still negotiating
                self.negotiated = False
                self.negotiation = None
                self.oob = False
            else:
                self.negotiated_at = time

    def _closed(self) -> None:
        self.closed = True
        last = self._last_answered()
        if last is not None:
            last.closed = True

    def _event(self, message: dict[str, Any], time: float) -> None:
        # The first request still waiting for its reply, and arrived: this is its event.
        waiting = next((i for i in self._pending if i.request), None)
        if waiting is not None and waiting.time <= time:
            waiting.events.append(RecordedEvent(message, time - waiting.time))
            return
        answered = self._last_answered(requests_only=True)
        if answered is None:
            start = self.negotiated_at if self.negotiated_at is not None else time
            self.opening.append(RecordedEvent(message, max(0.0, time - start)))
        else:
            answered.after.append(RecordedEvent(message, max(0.0, time - answered.time)))

    def _last_answered(self, *, requests_only: bool = False) -> _Item | None:
        for item in reversed(self.items):
            if item.reply is not None and (item.request or not requests_only):
                return item
        return None

    def session(self) -> Session:
        exchanges: list[Exchange] = []
        for item in self.items:
            if not item.request:
                continue
            message = item.message
            command = message.get("exec-oob" if item.oob else "execute")
            exchanges.append(
                Exchange(
                    index=len(exchanges),
                    request=message,
                    command=command,
                    arguments=message.get("arguments", {}),
                    oob=item.oob,
                    time=item.time,
                    reply=item.reply,
                    events=tuple(item.events),
                    after=tuple(item.after),
                    closed=item.closed,
                )
            )
        start = self.start if self.start is not None else 0.0
        return Session(
            self.client,
            self.greeting,
            start,
            tuple(self.opening),
            tuple(exchanges),
            self.negotiation,
            self.closed,
        )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def load_cassette(path: str | os.PathLike[str]) -> Cassette:
    """The cassette a transcript file holds (:class:`CassetteError` names a bad line)."""
    name = os.fspath(path)
    try:
        transcript = Transcript.read(name)
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{name}: not a transcript (not UTF-8 text: {exc.reason})") from None
    except ValueError as exc:
        raise CassetteError(str(exc)) from None
    return read_cassette(transcript, source=name)
