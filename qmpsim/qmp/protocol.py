"""The sans-I/O server side of one QMP connection.

Shaped like h11: bytes go in through :meth:`ServerConnection.receive_data`, and
:meth:`ServerConnection.next_event` turns them into typed events, one at a time:
a :class:`Request` for the machine to run, a :class:`Reply` the protocol produced
on its own (parse errors, invalid requests, argument errors, unknown commands),
:class:`Negotiated` for a successful ``qmp_capabilities``, or :data:`NEED_DATA`.
The caller answers in order: :meth:`~ServerConnection.send_return` and
:meth:`~ServerConnection.send_error` for a request,
:meth:`~ServerConnection.send_negotiated` for the negotiation, whose reply turns
events on (:attr:`~ServerConnection.events_allowed`, the one place that rule is
decided).  There is no I/O and no clock here: the connection is a state machine
driven by one transition table, :data:`TRANSITIONS`.

Every text and every check order below is QEMU 7.2's (``monitor/qmp.c``,
``qapi/qmp-dispatch.c``, ``qapi/qobject-input-visitor.c``), measured against a
real QEMU by ``tests/test_diff_protocol.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from qmpsim.errors import QmpSimError
from qmpsim.qmp.profiles import CommandSpec, ProfileSpec
from qmpsim.qmp.schema import problems, qemu_error
from qmpsim.qmp.wire import JsonStreamer, ParseError, encode, qdict_order

__all__ = [
    "NEED_DATA",
    "NO_ID",
    "TRANSITIONS",
    "ConnectionState",
    "NeedData",
    "Negotiated",
    "ProtocolError",
    "ProtocolEvent",
    "Reply",
    "Request",
    "ServerConnection",
    "Trigger",
]


class _NoId:
    """The type of :data:`NO_ID`."""

    _instance: _NoId | None = None

    def __new__(cls) -> _NoId:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_ID"

    def __reduce__(self) -> str:
        return "NO_ID"


NO_ID: Final = _NoId()
"""Sentinel for a request that carried no ``id`` member."""


class ProtocolError(QmpSimError):
    """The caller used a :class:`ServerConnection` out of order (a local bug, not bad input)."""


class ConnectionState(enum.Enum):
    """Where one QMP connection is."""

    GREETING = "greeting"
    """Connected; the greeting has not been sent yet."""
    NEGOTIATION = "negotiation"
    """Greeting sent; events are held back until the negotiation's reply is sent."""
    COMMAND = "command"
    """The reply to ``qmp_capabilities`` is out: events are delivered."""
    CLOSED = "closed"
    """The peer closed its side, or the server closed the connection."""


class Trigger(enum.Enum):
    """What moves a connection from one state to the next."""

    SEND_GREETING = "send-greeting"
    NEGOTIATED = "negotiated"
    """The reply to ``qmp_capabilities`` was sent (:meth:`ServerConnection.send_negotiated`)."""
    CLOSE = "close"


_S = ConnectionState
_T = Trigger

TRANSITIONS: Final[Mapping[tuple[ConnectionState, Trigger], ConnectionState]] = {
    (_S.GREETING, _T.SEND_GREETING): _S.NEGOTIATION,
    (_S.NEGOTIATION, _T.NEGOTIATED): _S.COMMAND,
    (_S.GREETING, _T.CLOSE): _S.CLOSED,
    (_S.NEGOTIATION, _T.CLOSE): _S.CLOSED,
    (_S.COMMAND, _T.CLOSE): _S.CLOSED,
    (_S.CLOSED, _T.CLOSE): _S.CLOSED,
    # Requests received before the peer closed are still answered (a half-closed
    # peer may be waiting for them), so negotiation can complete after the close.
    (_S.CLOSED, _T.NEGOTIATED): _S.CLOSED,
}
"""The whole life cycle of a connection; any pair not listed is a :class:`ProtocolError`."""


@dataclass(frozen=True)
class Request:
    """A valid command for the machine to run; answer it with ``send_return``/``send_error``."""

    command: str
    arguments: dict[str, Any]
    id: Any
    """``NO_ID`` when absent; otherwise any JSON value, echoed verbatim."""
    oob: bool
    """Sent with ``exec-oob``."""


@dataclass(frozen=True)
class Reply:
    """A reply the protocol produced on its own: write ``data`` as it is, in order."""

    data: bytes


@dataclass(frozen=True)
class Negotiated:
    """``qmp_capabilities`` succeeded: answer it in order with ``send_negotiated``."""

    id: Any
    """``NO_ID`` when absent; otherwise any JSON value, echoed verbatim."""
    oob: bool
    """Whether the client enabled the ``oob`` capability."""


class NeedData:
    """The type of :data:`NEED_DATA`."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
"""What :meth:`ServerConnection.next_event` returns when no complete request is buffered."""

ProtocolEvent = Request | Reply | Negotiated
"""What :meth:`ServerConnection.next_event` returns besides :data:`NEED_DATA`."""


# --- argument checking ----------------------------------------------------------------
# The walk itself is schema.problems (QEMU's QObject input visitor, in its order);
# QEMU stops at the first problem and answers its text as a GenericError.


def _argument_error(spec: CommandSpec, arguments: Mapping[str, Any]) -> str | None:
    for problem in problems(spec.arguments, arguments):
        return qemu_error(problem)
    return None


# --- the connection ---------------------------------------------------------------

_NEGOTIATE: Final = "qmp_capabilities"


class ServerConnection:
    """The server side of one QMP connection, as a pure state machine."""

    def __init__(self, profile: ProfileSpec, *, greeting: Mapping[str, Any] | None = None) -> None:
        self._profile = profile
        self._greeting: Mapping[str, Any] = profile.greeting() if greeting is None else greeting
        self._offered = frozenset(_offered_capabilities(self._greeting))
        self._state = ConnectionState.GREETING
        self._oob = False
        # Requests are read ahead of the replies written: what the next request may be
        # (qmp_capabilities alone, or any command) is decided as it is read, while
        # events wait for the negotiation's reply (the state, COMMAND).
        self._accepts_commands = False
        self._negotiated = False
        self._streamer = JsonStreamer()
        # Values read and not yet dispatched, from _taken on: a list and an index,
        # not a deque, whose first block alone is ~0.7 KB (a fleet holds thousands
        # of connections).
        self._pending: list[Any] = []
        self._taken = 0

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState`."""
        return self._state

    @property
    def negotiated(self) -> bool:
        """Whether the reply to ``qmp_capabilities`` was sent (it stays so after a close)."""
        return self._negotiated

    @property
    def events_allowed(self) -> bool:
        """Whether events go to this peer: after the negotiation's reply, until a close."""
        return self._state is ConnectionState.COMMAND

    @property
    def oob_enabled(self) -> bool:
        """Whether the client negotiated the ``oob`` capability."""
        return self._oob

    @property
    def buffered_input(self) -> int:
        """Bytes held for a request that has not been completed yet."""
        return self._streamer.buffered

    @property
    def profile(self) -> ProfileSpec:
        """The protocol profile this connection speaks."""
        return self._profile

    def _fire(self, trigger: Trigger) -> None:
        try:
            self._state = TRANSITIONS[self._state, trigger]
        except KeyError:
            raise ProtocolError(f"cannot {trigger.value} in state {self._state.value}") from None

    # -- input ---------------------------------------------------------------

    def greeting(self) -> bytes:
        """The first bytes to send; moves the connection into negotiation."""
        self._fire(Trigger.SEND_GREETING)
        return encode(self._greeting)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""
        if self._state is ConnectionState.CLOSED:
            # The server may close while the peer is still writing: nobody is left
            # to answer, so late bytes are dropped rather than treated as a bug.
            return
        if not data:
            self._fire(Trigger.CLOSE)
            return
        self._pending += self._streamer.feed(data)

    def close(self) -> None:
        """The server closes the connection (after ``quit``, for instance)."""
        self._fire(Trigger.CLOSE)

    def next_event(self) -> ProtocolEvent | NeedData:
        """The next event from what was received, or :data:`NEED_DATA`."""
        if self._state is ConnectionState.GREETING:
            raise ProtocolError("send the greeting before reading requests")
        if self._taken == len(self._pending):
            if self._taken:
                self._pending.clear()
                self._taken = 0
            return NEED_DATA
        item = self._pending[self._taken]
        self._taken += 1
        return self._dispatch(item)

    def next_request(self) -> Request | bytes | None:
        """:meth:`next_event` in the older shape: a request, bytes to write as is, or ``None``.

        A negotiation is answered at once (:meth:`send_negotiated`), as it was read.
        """
        event = self.next_event()
        if isinstance(event, NeedData):
            return None
        if isinstance(event, Reply):
            return event.data
        if isinstance(event, Negotiated):
            return self.send_negotiated(event)
        return event

    # -- output --------------------------------------------------------------

    def send_return(self, request: Request, value: Any) -> bytes:
        """The success reply to ``request``."""
        return encode(_with_id({"return": value}, request.id))

    def send_error(self, request: Request, error_class: str, desc: str) -> bytes:
        """The error reply to ``request``."""
        return encode(_error(error_class, desc, request.id))

    def send_negotiated(self, negotiated: Negotiated) -> bytes:
        """The reply to ``qmp_capabilities``; from now on events are delivered."""
        self._fire(Trigger.NEGOTIATED)
        self._negotiated = True
        return encode(_with_id({"return": {}}, negotiated.id))

    def send_event(self, event: Mapping[str, Any]) -> bytes:
        """The event's bytes, or ``b""`` while events cannot be delivered (not negotiated)."""
        if not self.events_allowed:
            return b""
        return encode(dict(event))

    # -- dispatch (qmp_dispatch) -----------------------------------------------

    def _dispatch(self, item: Any) -> ProtocolEvent:
        if isinstance(item, ParseError):
            return Reply(encode(_error("GenericError", item.message, NO_ID)))
        if not isinstance(item, dict):
            return Reply(encode(_error("GenericError", "QMP input must be a JSON object", NO_ID)))
        req_id = item.get("id", NO_ID)
        negotiating = not self._accepts_commands
        try:
            command, oob = self._check_obj(item)
            spec = self._find(command, negotiating)
            if oob and not spec.allow_oob:
                raise _Refusal("GenericError", f"The command {command} does not support OOB")
            arguments: dict[str, Any] = item.get("arguments", {})
            error = _argument_error(spec, arguments)
            if error is not None:
                raise _Refusal("GenericError", error)
            if command == _NEGOTIATE:
                return self._negotiate(arguments, req_id, negotiating)
        except _Refusal as refusal:
            return Reply(encode(_error(refusal.error_class, refusal.desc, req_id)))
        return Request(command, dict(arguments), req_id, oob)

    def _check_obj(self, request: Mapping[str, Any]) -> tuple[str, bool]:
        exec_key: str | None = None
        for key in qdict_order(list(request)):
            value = request[key]
            if key == "execute" or (key == "exec-oob" and self._oob):
                if not isinstance(value, str):
                    raise _Refusal("GenericError", f"QMP input member '{key}' must be a string")
                if exec_key is not None:
                    raise _Refusal(
                        "GenericError", f"QMP input member '{key}' clashes with '{exec_key}'"
                    )
                exec_key = key
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise _Refusal("GenericError", "QMP input member 'arguments' must be an object")
            elif key != "id":
                raise _Refusal("GenericError", f"QMP input member '{key}' is unexpected")
        if exec_key is None:
            raise _Refusal("GenericError", "QMP input lacks member 'execute'")
        command: str = request[exec_key]
        return command, exec_key == "exec-oob"

    def _find(self, command: str, negotiating: bool) -> CommandSpec:
        spec = self._profile.commands.get(command)
        if negotiating and command != _NEGOTIATE:
            spec = None
        if spec is None:
            if negotiating:
                raise _Refusal(
                    "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"
                )
            raise _Refusal("CommandNotFound", f"The command {command} has not been found")
        return spec

    def _negotiate(
        self, arguments: Mapping[str, Any], req_id: Any, negotiating: bool
    ) -> Negotiated:
        if not negotiating:
            raise _Refusal(
                "CommandNotFound", "Capabilities negotiation is already complete, command ignored"
            )
        enable: list[str] = arguments.get("enable", [])
        unavailable = [cap for cap in enable if cap not in self._offered]
        if unavailable:
            raise _Refusal("GenericError", f"Capability {', '.join(unavailable)} not available")
        self._oob = "oob" in enable
        self._accepts_commands = True
        return Negotiated(req_id, self._oob)


class _Refusal(Exception):
    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc


def _with_id(message: dict[str, Any], req_id: Any) -> dict[str, Any]:
    if req_id is not NO_ID:
        message["id"] = req_id
    return message


def _error(error_class: str, desc: str, req_id: Any) -> dict[str, Any]:
    return _with_id({"error": {"class": error_class, "desc": desc}}, req_id)


def _offered_capabilities(greeting: Mapping[str, Any]) -> list[str]:
    qmp = greeting.get("QMP")
    caps = qmp.get("capabilities") if isinstance(qmp, Mapping) else None
    if not isinstance(caps, list):
        return []
    return [cap for cap in caps if isinstance(cap, str)]
