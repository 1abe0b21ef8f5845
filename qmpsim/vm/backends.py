"""Host-side backends: network backends (``netdev_add``/``netdev_del``) and character
devices (``chardev-add``/``chardev-remove``, ``query-chardev``).

Devices take them by id (``netdev=``, ``chardev=``): :class:`Backends` says whether
one exists and whether a device already holds it.  ``query-chardev`` lists the
VM's own character devices (``VmConfig.chardevs``: the monitors of its command
line) and the added ones in the order QEMU's ``/chardevs`` container gives
(:mod:`~qmpsim.vm.ghash`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .component import Component, on_command
from .ghash import HashOrder
from .values import CommandError, Outcome

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")
# QEMU 7.2's and 10.0's NetClientDriver values that netdev_add takes
NETDEV_TYPES = frozenset(
    ("user", "tap", "l2tpv3", "socket", "stream", "dgram", "vde", "bridge", "hubport",
     "netmap", "vhost-user", "vhost-vdpa", "af-xdp", "vmnet-host", "vmnet-shared",
     "vmnet-bridged", "passt")
)  # fmt: skip


@dataclass
class _Chardev:
    label: str
    filename: str
    frontend_open: bool
    user: str | None = None  # the device holding it


class Backends(Component):
    """The VM's network backends and character devices."""

    def reset(self) -> None:
        self._netdevs: dict[str, str | None] = {}  # id -> the device holding it
        self._chardevs: dict[str, _Chardev] = {}
        self._order = HashOrder()
        for c in self.host.vm.chardevs:
            self._chardevs[c.label] = _Chardev(c.label, c.filename, c.frontend_open)
            self._order.add(c.label)

    # --- what devices ask -------------------------------------------------------------

    def refusal(self, kind: str, name: str, driver: str) -> str | None:
        """Why a ``driver`` device cannot take backend ``name`` (``netdev`` or
        ``chardev``), in QEMU's words; ``None``: it can."""
        if kind == "netdev":
            holder = self._netdevs.get(name, "")
        else:
            chardev = self._chardevs.get(name)
            holder = "" if chardev is None else chardev.user
        if holder == "":
            return f"Property '{driver}.{kind}' can't find value '{name}'"
        if holder is None:
            return None
        text = f"Property '{driver}.{kind}' can't take value '{name}'"
        if kind == "netdev":
            return f"{text}, it's in use"
        # qemu_chr_fe_init's own error: QEMU 10.0 words it anew (the change lies after
        # 7.2; 8.0 is assumed)
        if self.host.profile.version >= (8,):
            return f"{text}: chardev '{name}' is already in use"
        return f"{text}: Device '{name}' is in use"

    def take(self, kind: str, name: str, device: str) -> None:
        """Give backend ``name`` to ``device`` (after :meth:`refusal` said it may)."""
        if kind == "netdev":
            self._netdevs[name] = device
        else:
            self._chardevs[name].user = device

    def release(self, device: str) -> None:
        """A device left: the backends it held are free again."""
        for name, holder in self._netdevs.items():
            if holder == device:
                self._netdevs[name] = None
        for chardev in self._chardevs.values():
            if chardev.user == device:
                chardev.user = None

    # --- netdevs ------------------------------------------------------------------------

    @on_command("netdev_add")
    def netdev_add(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args.get("id"))
        if str(args.get("type")) not in NETDEV_TYPES:
            return _error(f"Parameter 'type' does not accept value '{args.get('type')}'")
        if not _ID.match(name):
            return _error("Parameter 'id' expects an identifier")
        if name in self._netdevs:
            return _error(f"Duplicate ID '{name}'")
        self._netdevs[name] = None
        return Outcome({})

    @on_command("netdev_del")
    def netdev_del(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args.get("id"))
        if name not in self._netdevs:
            return Outcome(CommandError("DeviceNotFound", f"Device '{name}' not found"))
        del self._netdevs[name]  # a NIC that held it loses its peer; QEMU allows that
        return Outcome({})

    def netdevs(self) -> list[str]:
        """The network backends' ids."""
        return list(self._netdevs)

    # --- chardevs -----------------------------------------------------------------------

    @on_command("chardev-add")
    def chardev_add(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args.get("id"))
        if name in self._chardevs:
            return _error(f"Chardev with id '{name}' already exists")
        backend = args.get("backend") or {}
        kind = str(backend.get("type"))
        data = backend.get("data") or {}
        reply: dict[str, Any] = {}
        if kind == "socket":
            filename = _socket_filename(data)
        elif kind == "pty":
            path = f"/dev/pts/{len(self._chardevs) + self.host.rng.randint(1, 20)}"
            filename = f"pty:{path}"
            reply["pty"] = path
        elif kind == "memory":
            filename = "ringbuf"
        else:
            filename = kind
        self._chardevs[name] = _Chardev(name, filename, False)
        self._order.add(name)
        return Outcome(reply)

    @on_command("chardev-remove")
    def chardev_remove(self, args: Mapping[str, Any]) -> Outcome:
        name = str(args.get("id"))
        chardev = self._chardevs.get(name)
        if chardev is None:
            return _error(f"Chardev '{name}' not found")
        if chardev.user is not None:
            return _error(f"Chardev '{name}' is busy")
        del self._chardevs[name]
        self._order.remove(name)
        return Outcome({})

    @on_command("query-chardev")
    def query_chardev(self, _args: Mapping[str, Any]) -> Outcome:
        # qmp_query_chardev prepends each child of /chardevs as it walks the table
        out = []
        for name in reversed(self._order.keys()):
            c = self._chardevs[name]
            out.append({"label": c.label, "filename": c.filename, "frontend-open": c.frontend_open})
        return Outcome(out)


def _socket_filename(data: Mapping[str, Any]) -> str:
    addr = data.get("addr") or {}
    where = addr.get("data") or {}
    if addr.get("type") == "unix":
        text = f"unix:{where.get('path')}"
    else:
        text = f"tcp:{where.get('host')}:{where.get('port')}"
    server = data.get("server", False)
    if server:
        text += ",server=on"
    # a listening socket waits for its client; a client one is connected once added
    return f"disconnected:{text}" if server else text


def _error(desc: str) -> Outcome:
    return Outcome(CommandError("GenericError", desc))
