"""Migration URIs as QEMU reads them: ``tcp:``, ``unix:``, ``exec:``, ``fd:``, ``file:``,
``rdma:``, ``vsock:`` and 8.2's ``channels`` argument, and the texts each version
refuses a bad one with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PARSE_BEFORE_SETUP = (8, 2, 0)
"""From QEMU 8.2 (``migrate_uri_parse``) a malformed URI is refused before ``setup``."""


@dataclass(frozen=True)
class Bad:
    """A URI QEMU refuses: its text; ``early``: refused before ``setup`` from 8.2;
    ``describe``: ``query-migrate`` shows the text as ``error-desc``."""

    text: str
    early: bool = True
    describe: bool = True


def socket_address(transport: str, address: str) -> dict[str, Any] | None:
    """``query-migrate``'s ``socket-address`` entry for a listening address."""
    if transport == "unix":
        return {"path": address, "type": "unix"}
    if transport == "tcp":
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        entry: dict[str, Any] = {"port": port}
        if ":" in host:
            entry["ipv6"] = True
        elif host.replace(".", "").isdigit():
            entry["ipv4"] = True
        return {**entry, "host": host, "type": "inet"}
    return None


def parse(
    uri: str, version: tuple[int, int, int], *, incoming: bool = False
) -> tuple[str, str] | Bad:
    """``(transport, address)`` of a migration URI, or why the QEMU of ``version``
    refuses it (``incoming``: as ``migrate-incoming`` does)."""
    modern = version >= PARSE_BEFORE_SETUP or incoming
    scheme, sep, address = uri.partition(":")
    if not sep:
        scheme, address = uri, ""
    if scheme in ("tcp", "vsock"):
        _, colon, port = address.rpartition(":")
        if not colon or not port:
            return Bad(f"error parsing address '{address}'")
        return scheme, address
    if scheme == "unix":
        if not address:
            return Bad("invalid Unix socket address")
        return scheme, address
    if scheme == "exec":
        return scheme, address
    if scheme == "fd":
        if modern and not address:
            return Bad("invalid file descriptor address")
        return scheme, address  # a name in getfd's table (vm.fds), or a number
    if scheme == "file" and modern:
        if not address:
            return Bad("Could not create '': No such file or directory", early=False)
        return scheme, address
    if scheme == "rdma":
        if ":" not in address:
            return Bad(f"RDMA ERROR: bad RDMA migration address '{address}'", early=False)
        return Bad("RDMA ERROR: could not create CM channel", early=False)
    if modern:
        return Bad(f"unknown migration protocol: {uri}")
    return Bad("Parameter 'uri' expects a valid migration protocol", describe=False)


def channel_uri(channels: list[Mapping[str, Any]]) -> str:
    """The URI a ``channels`` argument (QEMU 8.2+) names, for the main channel."""
    for channel in channels:
        if channel.get("channel-type") != "main":
            continue
        addr = channel.get("addr", {})
        transport = addr.get("transport")
        if transport == "socket":
            kind = addr.get("type")
            if kind == "inet":
                return f"tcp:{addr.get('host')}:{addr.get('port')}"
            if kind == "unix":
                return f"unix:{addr.get('path')}"
            if kind == "fd":
                return f"fd:{addr.get('str')}"
            return f"vsock:{addr.get('cid')}:{addr.get('port')}"
        if transport == "exec":
            return "exec:" + " ".join(addr.get("args", []))
        if transport == "file":
            return f"file:{addr.get('filename')}"
    return ""
