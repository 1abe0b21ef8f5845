"""Remote displays: VNC and SPICE sessions"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmpsim.vm import display
from qmpsim.vm.display import ClientState, DisplayMove, DisplayRefusal

from .core import _Core, _on_event, _Peer, _Sessions


class _DisplayRules(_Core):
    """The rules over VNC and SPICE sessions."""

    @_on_event("VNC_CONNECTED")
    def _on_vnc_connected(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._connected(line, self.vnc, "VNC", _peer(data, "service"))

    @_on_event("VNC_INITIALIZED")
    def _on_vnc_initialized(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._initialized(line, self.vnc, "VNC", _peer(data, "service"))

    @_on_event("VNC_DISCONNECTED")
    def _on_vnc_disconnected(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._disconnected(line, self.vnc, "VNC", _peer(data, "service"))

    @_on_event("SPICE_CONNECTED")
    def _on_spice_connected(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        self._connected(line, self.spice, "SPICE", _peer(data, "port"))

    @_on_event("SPICE_INITIALIZED")
    def _on_spice_initialized(self, line: int, data: Mapping[str, Any], _stamp: int | None) -> None:
        key = _peer(data, "port")
        client = data.get("client")
        if isinstance(client, dict):
            channel = tuple(client.get(k) for k in ("connection-id", "channel-type", "channel-id"))
            holder = self.spice_channels.get(channel)
            if holder is not None and holder != key and holder in self.spice:
                self._report(
                    line,
                    "spice-session",
                    f"SPICE channel {channel[1]}/{channel[2]} of connection {channel[0]} is "
                    f"already up on {_who(holder)}",
                )
            self.spice_channels[channel] = key
        self._initialized(line, self.spice, "SPICE", key)

    @_on_event("SPICE_DISCONNECTED")
    def _on_spice_disconnected(
        self, line: int, data: Mapping[str, Any], _stamp: int | None
    ) -> None:
        self._disconnected(line, self.spice, "SPICE", _peer(data, "port"))

    # Sessions are keyed by the client's address; clients on a Unix socket all
    # share one empty address, so each key holds a list of sessions.

    def _connected(self, line: int, table: _Sessions, kind: str, key: _Peer) -> None:
        sessions = table.setdefault(key, [])
        # clients on a Unix socket cannot be told apart: another may connect
        if _is_inet(key):
            self._check(line, kind, key, DisplayMove.CONNECT, _state(sessions))
        sessions.append(False)

    def _initialized(self, line: int, table: _Sessions, kind: str, key: _Peer) -> None:
        sessions = table.setdefault(key, [])
        # of several sessions on one address, the first one not yet initialized moves
        now = ClientState.CONNECTED if not all(sessions) else _state(sessions)
        self._check(line, kind, key, DisplayMove.INITIALIZE, now)
        if False in sessions:
            sessions[sessions.index(False)] = True
        elif not sessions:
            sessions.append(True)

    def _disconnected(self, line: int, table: _Sessions, kind: str, key: _Peer) -> None:
        sessions = table.get(key, [])
        if self._check(line, kind, key, DisplayMove.DISCONNECT, _state(sessions)):
            return
        sessions.pop()
        if not sessions:
            del table[key]

    def _check(
        self, line: int, kind: str, key: _Peer, move: DisplayMove, now: ClientState | None
    ) -> bool:
        """Report ``move`` when the display's rules refuse it; whether they did."""
        refusal = display.display_rule(move, now)  # the machine's rule, read at each use
        if refusal is DisplayRefusal.NOT_CONNECTED:
            self._report(
                line, _rule(kind), f"{kind}_{move.value} for {_who(key)}, which is not connected"
            )
        elif refusal is not None:
            self._report(line, _rule(kind), f"{kind} client {_who(key)} {refusal.value}")
        return refusal is not None


def _state(sessions: list[bool]) -> ClientState | None:
    """Where the latest session on an address is (``None``: there is none)."""
    if not sessions:
        return None
    return ClientState.INITIALIZED if sessions[-1] else ClientState.CONNECTED


def _rule(kind: str) -> str:
    return f"{kind.lower()}-session"


def _is_inet(key: _Peer) -> bool:
    return key[0] in ("ipv4", "ipv6")


def _peer(data: Mapping[str, Any], port_key: str) -> _Peer:
    client = data.get("client")
    if not isinstance(client, dict):
        return ("?", "?", "?")
    return (
        str(client.get("family", "?")),
        str(client.get("host", "?")),
        str(client.get(port_key, "?")),
    )


def _who(key: _Peer) -> str:
    family, host, port = key
    if family == "unix":
        return "on a Unix socket"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
