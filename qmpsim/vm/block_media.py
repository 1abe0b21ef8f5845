"""CD-ROM trays and removable media: opening and closing trays, ejecting and changing media.

``eject``, ``blockdev-open-tray``/``blockdev-close-tray``, ``blockdev-remove-medium``,
``blockdev-insert-medium`` and ``blockdev-change-medium`` move a drive's tray with
``DEVICE_TRAY_MOVED`` and swap the node it reads.  A tray the guest locked opens
only when the guest agrees (:mod:`qmpsim.vm.guest` is asked, unless ``force``);
someone at the VM can move a tray too (:class:`TrayMoved`).  Texts of refusals are
QEMU's (``tests/test_diff_block_trays.py`` compares them with QEMU 7.2 and 10.0).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .block_core import BlockCore, Refused, refusals
from .component import on_cause, on_command
from .guest import Guest
from .images import ImageConfig
from .nodes import Backend, Node
from .values import Event, Outcome


@dataclass(frozen=True)
class TrayMoved:
    """Someone at the VM (the guest, or a hand on the drive) opened or closed a CD-ROM tray."""

    device: str
    open: bool = True


class Trays(BlockCore):
    """The block graph's removable media: trays, ejecting, inserting and changing media."""

    def _tray_event(self, backend: Backend, open_: bool) -> Event:
        backend.tray_open = open_
        return self.host.event(
            "DEVICE_TRAY_MOVED",
            {"device": backend.config.wire_name, "id": backend.qdev_id, "tray-open": open_},
        )

    def _open_tray(self, backend: Backend, args: Mapping[str, Any], force: bool) -> str | None:
        """``do_open_tray``: ``None`` once open, else why not: ``locked`` (the guest was
        asked to open it), ``no-tray``; a device without removable media is refused."""
        label = str(args["id"] if args.get("id") is not None else args.get("device"))
        if not backend.removable:
            raise Refused(f"Device '{label}' is not removable")
        if backend.tray_open:
            return None
        if backend.locked and not force:
            opens = functools.partial(self._guest_opens, backend)  # no closure: picklable
            self.host.part(Guest).tray_eject_request(label, opens)
            return "locked"
        backend.locked = False
        self._events.append(self._tray_event(backend, True))
        return None

    def _guest_opens(self, backend: Backend) -> list[Event]:
        if backend.tray_open:
            return []
        backend.locked = False
        return [self._tray_event(backend, True)]

    @staticmethod
    def _label(args: Mapping[str, Any]) -> str:
        return str(args["device"] if args.get("device") is not None else args.get("id"))

    @on_command("blockdev-open-tray")
    @refusals
    def blockdev_open_tray(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        self._open_tray(backend, args, bool(args.get("force", False)))  # locked: the guest decides
        return Outcome({}, tuple(self.pending_events()))

    @on_command("blockdev-close-tray")
    @refusals
    def blockdev_close_tray(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        self._close_tray(backend, args)
        return Outcome({}, tuple(self.pending_events()))

    def _close_tray(self, backend: Backend, args: Mapping[str, Any]) -> None:
        if not backend.removable:
            raise Refused(f"Device '{self._label(args)}' is not removable")
        if backend.tray_open:
            self._events.append(self._tray_event(backend, False))
            # a guest that locks trays locks the new medium in
            backend.locked = backend.root is not None and self.host.part(Guest).locks_trays

    def _remove_medium(self, backend: Backend, args: Mapping[str, Any]) -> None:
        if not backend.removable:
            raise Refused(f"Device '{self._label(args)}' is not removable")
        if not backend.tray_open:
            raise Refused(f"Tray of device '{self._label(args)}' is not open")
        if backend.root is not None:
            root, backend.root = backend.root, None
            if not root.monitor:
                self.graph.drop(root)

    def _insert_medium(self, backend: Backend, node: Node) -> None:
        if not backend.removable:
            raise Refused("Device is not removable")
        if not backend.tray_open:
            raise Refused("Tray of the device is not open")
        if backend.root is not None:
            raise Refused("There already is a medium in the device")
        backend.root = node

    @on_command("eject")
    @refusals
    def eject(self, args: Mapping[str, Any]) -> Outcome:
        self._eject(self._by_device_or_id(args), args)
        return Outcome({}, tuple(self.pending_events()))

    def _eject(self, backend: Backend, args: Mapping[str, Any]) -> None:
        """Open the tray and take the medium out, as ``eject`` and a medium change do;
        a tray the guest locked is refused (the guest was asked to open it)."""
        if self._open_tray(backend, args, bool(args.get("force", False))) == "locked":
            label = str(args["id"] if args.get("id") is not None else args.get("device"))
            raise Refused(
                f"Device '{label}' is locked and force was not specified, "
                "wait for tray to open and try again"
            )
        self._remove_medium(backend, args)

    @on_command("blockdev-remove-medium")
    @refusals
    def blockdev_remove_medium(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        self._remove_medium(backend, args)
        return Outcome({})

    @on_command("blockdev-insert-medium")
    @refusals
    def blockdev_insert_medium(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        name = str(args.get("node-name"))
        node = self.graph.find(name)
        if node is None:
            raise Refused(f"Node '{name}' not found")
        if self.graph.backend_of(node) is not None:
            raise Refused(f"Node '{name}' is already in use")
        self._insert_medium(backend, node)
        return Outcome({})

    @on_command("blockdev-change-medium")
    @refusals
    def blockdev_change_medium(self, args: Mapping[str, Any]) -> Outcome:
        backend = self._by_device_or_id(args)
        mode = args.get("read-only-mode", "retain")
        read_only = {"read-only": True, "read-write": False}.get(
            str(mode),
            backend.root.read_only if backend.root is not None else backend.config.media == "cdrom",
        )
        filename = str(args["filename"])
        fmt = args.get("format")
        known = self.images.get(filename)
        if fmt is None:
            fmt = known.format if known is not None else "raw"
        image = known if known is not None and known.format == fmt else ImageConfig(filename, fmt)
        medium = self.graph.open_image(image, self.images, read_only=read_only)
        try:
            self._eject(backend, args)
            self._insert_medium(backend, medium)
        except Refused:
            self.graph.drop(medium)  # the new medium's last reference goes
            raise
        self._close_tray(backend, args)
        return Outcome({}, tuple(self.pending_events()))

    @on_cause(TrayMoved)
    def tray_moved(self, c: TrayMoved) -> list[Event]:
        backend = self.backend(c.device)
        if backend.tray_open == c.open:
            return []
        if c.open:
            backend.locked = False
        return [self._tray_event(backend, c.open)]
