"""The display servers: VNC and SPICE clients arriving, authenticating and leaving."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .component import Component, Unmet, on_cause, on_command
from .values import Event, Outcome


@dataclass(frozen=True)
class VncConnect:
    """A VNC client called ``client`` (any stable label) opened a connection.

    ``host``/``service``/``family`` are its address (default: loopback, a random port).
    """

    client: str
    host: str | None = None
    service: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class VncInitialize:
    """The VNC client ``client`` passed authentication; its session is active.

    ``x509_dname``/``sasl_username`` identify it when the server's auth uses TLS/SASL.
    """

    client: str
    x509_dname: str | None = None
    sasl_username: str | None = None


@dataclass(frozen=True)
class VncDisconnect:
    """The VNC client ``client`` went away."""

    client: str


@dataclass(frozen=True)
class SpiceConnect:
    """A SPICE channel of client ``client`` connected (address: as for :class:`VncConnect`)."""

    client: str
    channel_type: int = 1
    channel_id: int = 0
    host: str | None = None
    port: str | None = None
    family: str | None = None


@dataclass(frozen=True)
class SpiceInitialize:
    """A SPICE channel of ``client`` completed its handshake (``tls``: default the server's)."""

    client: str
    channel_type: int = 1
    channel_id: int = 0
    tls: bool | None = None


@dataclass(frozen=True)
class SpiceDisconnect:
    """A SPICE channel of client ``client`` went away."""

    client: str
    channel_type: int = 1
    channel_id: int = 0


DisplayCause = (
    VncConnect | VncInitialize | VncDisconnect | SpiceConnect | SpiceInitialize | SpiceDisconnect
)
"""A cause that moves one display client (a VNC client, a SPICE channel) along its life."""


class ClientState(enum.Enum):
    """Where a display client (a VNC client, a SPICE channel) is; not connected: ``None``."""

    CONNECTED = "connected"
    INITIALIZED = "initialized"


class DisplayMove(enum.Enum):
    """What happens to a display client: each has a cause and an event (``*_CONNECTED``,
    ``*_INITIALIZED``, ``*_DISCONNECTED``)."""

    CONNECT = "CONNECTED"
    INITIALIZE = "INITIALIZED"
    DISCONNECT = "DISCONNECTED"


class DisplayRefusal(enum.Enum):
    """Why a display client cannot make a move."""

    ALREADY_CONNECTED = "is already connected"
    NOT_CONNECTED = "is not connected"
    ALREADY_INITIALIZED = "is already initialized"


def display_rule(move: DisplayMove, now: ClientState | None) -> DisplayRefusal | None:
    """Why a client that is ``now`` (``None``: not connected) cannot make ``move``;
    ``None`` when it can.  The display's causal rules, said once: the machine asks
    them of its causes, the conformance checker of the events it reads."""
    if move is DisplayMove.CONNECT:
        return None if now is None else DisplayRefusal.ALREADY_CONNECTED
    if now is None:
        return DisplayRefusal.NOT_CONNECTED
    if move is DisplayMove.INITIALIZE and now is ClientState.INITIALIZED:
        return DisplayRefusal.ALREADY_INITIALIZED
    return None


def display_move(cause: DisplayCause) -> DisplayMove:
    """The move ``cause`` makes."""
    if isinstance(cause, VncConnect | SpiceConnect):
        return DisplayMove.CONNECT
    if isinstance(cause, VncInitialize | SpiceInitialize):
        return DisplayMove.INITIALIZE
    return DisplayMove.DISCONNECT


def display_refusal(cause: DisplayCause, now: ClientState | None) -> str | None:
    """Why ``cause`` cannot happen to a client that is ``now``, in words; ``None`` when
    it can (:func:`display_rule`)."""
    refusal = display_rule(display_move(cause), now)
    if refusal is None:
        return None
    if isinstance(cause, VncConnect | VncInitialize | VncDisconnect):
        label, first = f"VNC client {cause.client!r}", "vnc-connect"
    else:
        label = f"SPICE channel {cause.channel_type}/{cause.channel_id} of {cause.client!r}"
        first = "spice-connect"
    text = f"{label} {refusal.value}"
    return f"{text}: it must connect ({first}) first" if refusal is refusal.NOT_CONNECTED else text


@dataclass(frozen=True)
class VncConfig:
    """A VNC server: ``-vnc host:display`` and its authentication."""

    host: str = "127.0.0.1"
    port: int = 5900
    family: str = "ipv4"
    auth: str = "none"
    websocket: bool = False


@dataclass(frozen=True)
class SpiceConfig:
    """A SPICE server: ``-spice port=…,addr=…``."""

    host: str = "127.0.0.1"
    port: int = 5930
    family: str = "ipv4"
    auth: str = "spice"
    tls: bool = False
    compiled_version: str = "0.15.1"


@dataclass
class _VncClient:
    host: str
    service: str
    family: str
    initialized: bool = False
    x509_dname: str | None = None
    sasl_username: str | None = None


@dataclass
class _SpiceChannel:
    host: str
    port: str
    family: str
    connection_id: int
    initialized: bool = False
    tls: bool = False


class Display(Component):
    """VNC and SPICE: the clients of each server, their events and ``query-vnc``/``query-spice``."""

    # clients come and go by causes alone: no command connects or drops one
    moved_by_causes_only = True

    def reset(self) -> None:
        self._vnc: dict[str, _VncClient] = {}
        self._spice: dict[tuple[str, int, int], _SpiceChannel] = {}
        self._spice_ids: dict[str, int] = {}

    def cause_unmet(self, cause: Any) -> Unmet | None:
        if isinstance(cause, VncConnect | VncInitialize | VncDisconnect):
            if self.host.vm.vnc is None:
                return Unmet("the VM has no VNC server: add vm.vnc")
        elif self.host.vm.spice is None:
            return Unmet("the VM has no SPICE server: add vm.spice")
        return None

    def cause_error(self, cause: Any) -> str | None:
        if isinstance(cause, VncConnect | VncInitialize | VncDisconnect):
            found: _VncClient | _SpiceChannel | None = self._vnc.get(cause.client)
        else:
            found = self._spice.get((cause.client, cause.channel_type, cause.channel_id))
        now = (
            None
            if found is None
            else ClientState.INITIALIZED
            if found.initialized
            else ClientState.CONNECTED
        )
        return display_refusal(cause, now)

    def _vnc_data(self, client: _VncClient, *, auth_ids: bool) -> dict[str, Any]:
        vnc = self.host.vm.vnc
        assert vnc is not None
        ws = self.host.profile.run_states  # the websocket member came with QEMU 2.3
        server: dict[str, Any] = {"host": vnc.host, "service": str(vnc.port), "family": vnc.family}
        if ws:
            server["websocket"] = vnc.websocket
        server["auth"] = vnc.auth
        info: dict[str, Any] = {
            "host": client.host,
            "service": client.service,
            "family": client.family,
        }
        if ws:
            info["websocket"] = vnc.websocket
        if auth_ids and client.x509_dname is not None:
            info["x509_dname"] = client.x509_dname
        if auth_ids and client.sasl_username is not None:
            info["sasl_username"] = client.sasl_username
        return {"server": server, "client": info}

    def _source_port(self, host: str) -> str:
        """The port a new connection from ``host`` comes from: a random one of Linux's
        ephemeral range, or the next one free when a client connected from that host
        holds it (one host's OS never gives two live connections the same port)."""
        used = {c.service for c in self._vnc.values() if c.host == host}
        used |= {ch.port for ch in self._spice.values() if ch.host == host}
        port = self.host.rng.randint(_EPHEMERAL[0], _EPHEMERAL[1])
        for _ in range(_EPHEMERAL[1] - _EPHEMERAL[0] + 1):
            if str(port) not in used:
                break
            port = _EPHEMERAL[0] if port == _EPHEMERAL[1] else port + 1
        return str(port)

    @on_cause(VncConnect)
    def _on_VncConnect(self, c: VncConnect) -> list[Event]:
        vnc = self.host.vm.vnc
        assert vnc is not None
        host = c.host or _loopback(vnc.family)
        client = _VncClient(
            host=host, service=c.service or self._source_port(host), family=c.family or vnc.family
        )
        self._vnc[c.client] = client
        return [self.host.event("VNC_CONNECTED", self._vnc_data(client, auth_ids=False))]

    @on_cause(VncInitialize)
    def _on_VncInitialize(self, c: VncInitialize) -> list[Event]:
        client = self._vnc[c.client]
        client.initialized = True
        client.x509_dname = c.x509_dname
        client.sasl_username = c.sasl_username
        return [self.host.event("VNC_INITIALIZED", self._vnc_data(client, auth_ids=True))]

    @on_cause(VncDisconnect)
    def _on_VncDisconnect(self, c: VncDisconnect) -> list[Event]:
        client = self._vnc.pop(c.client)
        return [self.host.event("VNC_DISCONNECTED", self._vnc_data(client, auth_ids=True))]

    def _spice_server(self, *, auth: bool) -> dict[str, Any]:
        spice = self.host.vm.spice
        assert spice is not None
        server: dict[str, Any] = {
            "host": spice.host,
            "port": str(spice.port),
            "family": spice.family,
        }
        if auth:
            server["auth"] = spice.auth
        return server

    @staticmethod
    def _spice_basic(ch: _SpiceChannel) -> dict[str, Any]:
        return {"host": ch.host, "port": ch.port, "family": ch.family}

    def _spice_channel_info(self, ch: _SpiceChannel, key: tuple[str, int, int]) -> dict[str, Any]:
        info = self._spice_basic(ch)
        info["connection-id"] = ch.connection_id
        info["channel-type"] = key[1]
        info["channel-id"] = key[2]
        info["tls"] = ch.tls
        return info

    @on_cause(SpiceConnect)
    def _on_SpiceConnect(self, c: SpiceConnect) -> list[Event]:
        spice = self.host.vm.spice
        assert spice is not None
        if c.client not in self._spice_ids:
            # spice-server's id is a random 32-bit value that QEMU 7.2 reports signed
            self._spice_ids[c.client] = self.host.rng.randint(-(2**31), 2**31 - 1)
        # all channels of one client come from one host, each on its own port
        same = next((ch for k, ch in self._spice.items() if k[0] == c.client), None)
        host = c.host or (same.host if same else _loopback(spice.family))
        ch = _SpiceChannel(
            host=host,
            port=c.port or self._source_port(host),
            family=c.family or (same.family if same else spice.family),
            connection_id=self._spice_ids[c.client],
        )
        self._spice[(c.client, c.channel_type, c.channel_id)] = ch
        data = {"server": self._spice_server(auth=False), "client": self._spice_basic(ch)}
        return [self.host.event("SPICE_CONNECTED", data)]

    @on_cause(SpiceInitialize)
    def _on_SpiceInitialize(self, c: SpiceInitialize) -> list[Event]:
        spice = self.host.vm.spice
        assert spice is not None
        key = (c.client, c.channel_type, c.channel_id)
        ch = self._spice[key]
        ch.initialized = True
        ch.tls = spice.tls if c.tls is None else c.tls
        data = {
            "server": self._spice_server(auth=True),
            "client": self._spice_channel_info(ch, key),
        }
        return [self.host.event("SPICE_INITIALIZED", data)]

    @on_cause(SpiceDisconnect)
    def _on_SpiceDisconnect(self, c: SpiceDisconnect) -> list[Event]:
        ch = self._spice.pop((c.client, c.channel_type, c.channel_id))
        if not any(k[0] == c.client for k in self._spice):
            del self._spice_ids[c.client]
        data = {"server": self._spice_server(auth=False), "client": self._spice_basic(ch)}
        return [self.host.event("SPICE_DISCONNECTED", data)]

    @on_command("query-vnc")
    def _cmd_query_vnc(self, _args: Mapping[str, Any]) -> Outcome:
        vnc = self.host.vm.vnc
        if vnc is None:
            return Outcome({"enabled": False})
        clients = [self._vnc_data(c, auth_ids=True)["client"] for c in self._vnc.values()]
        return Outcome(
            {
                "enabled": True,
                "host": vnc.host,
                "family": vnc.family,
                "service": str(vnc.port),
                "auth": vnc.auth,
                "clients": clients,
            }
        )

    @on_command("query-spice")
    def _cmd_query_spice(self, _args: Mapping[str, Any]) -> Outcome:
        spice = self.host.vm.spice
        if spice is None:
            if not self.host.profile.run_states:
                return Outcome({"enabled": False})
            return Outcome({"enabled": False, "migrated": False, "mouse-mode": "client"})
        channels = [
            self._spice_channel_info(ch, key) for key, ch in self._spice.items() if ch.initialized
        ]
        reply: dict[str, Any] = {"enabled": True}
        if self.host.profile.run_states:
            reply["migrated"] = False
        reply |= {"host": spice.host, "port": spice.port}
        reply["auth"] = spice.auth
        reply["compiled-version"] = spice.compiled_version
        if self.host.profile.run_states:
            reply["mouse-mode"] = "server"
        reply["channels"] = channels
        return Outcome(reply)


_EPHEMERAL = (32768, 60999)
"""Linux's default ``ip_local_port_range``."""


def _loopback(family: str) -> str:
    return "::1" if family == "ipv6" else "127.0.0.1"
