"""Record what a real QEMU answers to every argument-less query, for the profile compiler.

    python tools/record_qmp.py QEMU_BINARY DIR

writes ``DIR/caps_<version>_x86_64+qmpsim.replies.xz``.

Two sessions, in the format of ../shared/qemu-qmp/replies (README there): an idle
``-machine none`` and a ``-machine pc -m 128 -name vm0 -S`` VM, each asked
``qmp_capabilities``, ``query-version``, ``query-kvm``, then every ``query-*`` and
``x-query-*`` command that ``query-commands`` lists and that needs no argument;
then ``qom-list-types``, which loads QEMU's modules, and the queries whose answer
that changes (``AFTER_MODULES``) once more.  A third session, a ``-machine pc`` with
one device of each type qmpsim models (``DEVICES``, each with its type as its id),
asks ``qom-list`` of each device and of a virtio device's ``virtio-backend``: a
device's property list depends on its type alone.
The monitor's socket path, the only host-dependent text besides thread ids, is
written as ``/tmp/qmp-capture/qmp.sock`` (as in Debian's recordings).
``tools/compile_profiles.py`` reads ``recordings/*.replies.xz`` beside the shared
ones: their replies complete the profile of the same QEMU version.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PC = ("-machine", "pc", "-m", "128", "-name", "vm0", "-S", "-nodefaults", "-display", "none")
# the device types qmpsim models (qmpsim.vm.device_types), each on the bus -M pc gives it
DEVICES = (
    "virtio-net-pci",
    "e1000",
    "virtio-serial-pci",
    "virtio-rng-pci",
    "virtio-balloon-pci",
    "piix3-usb-uhci",
    "usb-kbd",
    "usb-mouse",
    "usb-tablet",
    "virtserialport",
    "virtconsole",
    "isa-serial",
)
VIRTIO = ("virtio-net-pci", "virtio-serial-pci", "virtio-rng-pci", "virtio-balloon-pci")
DEVICE_SESSION = (*PC, *(a for d in DEVICES for a in ("-device", f"{d},id={d}")))
SESSIONS = (("-machine", "none", "-nodefaults", "-display", "none"), PC, DEVICE_SESSION)
SOCKET = "/tmp/qmp-capture/qmp.sock"
# Queries whose answer grows when QEMU loads its modules (a display module adds its
# option group); tools/compile_profiles.py keeps both answers.
AFTER_MODULES = ("query-command-line-options",)


def session(binary: str, args: tuple[str, ...]) -> list[Any]:
    """One QEMU run: the greeting, then each request followed by its reply."""
    with tempfile.TemporaryDirectory(prefix="qmp-record-") as tmp:
        path = os.path.join(tmp, "qmp.sock")
        proc = subprocess.Popen(
            [binary, *args, "-qmp", f"unix:{path},server=on,wait=off"],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                for _ in range(400):  # the socket file appears before QEMU listens
                    try:
                        sock.connect(path)
                        break
                    except (FileNotFoundError, ConnectionRefusedError):
                        time.sleep(0.025)
                lines = sock.makefile("rb")
                out: list[Any] = [json.loads(lines.readline())]
                ids = iter(range(1, 10_000))

                def ask(
                    command: str, arguments: dict[str, Any] | None = None, *, keep: bool = True
                ) -> Any:
                    request: dict[str, Any] = {"execute": command, "id": f"libvirt-{next(ids)}"}
                    if arguments is not None:
                        request["arguments"] = arguments
                    sock.sendall(json.dumps(request).encode())
                    while True:
                        reply = json.loads(lines.readline())
                        if "event" not in reply:
                            break
                    if keep:
                        out.extend((request, reply))
                    return reply

                ask("qmp_capabilities")
                ask("query-version")
                ask("query-kvm")
                if args == DEVICE_SESSION:
                    for device in DEVICES:
                        where = f"/machine/peripheral/{device}"
                        ask("qom-list", {"path": where})
                        if device in VIRTIO:
                            ask("qom-list", {"path": f"{where}/virtio-backend"})
                else:
                    ask_queries(ask)
                sock.sendall(b'{"execute": "quit"}')
        finally:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        text = json.dumps(out)
        return [json.loads(text.replace(path, SOCKET))]


def ask_queries(ask: Callable[..., Any]) -> None:
    """Every argument-less query, then ``qom-list-types`` and the queries it changes."""
    # the schema itself comes from the main recording
    schema = {e["name"]: e for e in ask("query-qmp-schema", keep=False)["return"]}
    for entry in ask("query-commands")["return"]:
        name = entry["name"]
        if not name.startswith(("query-", "x-query-")) or name == "query-qmp-schema":
            continue
        arguments = schema.get(schema.get(name, {}).get("arg-type", ""), {})
        if any("default" not in m for m in arguments.get("members", ())):
            continue
        ask(name)
    # Some answers change once QEMU has loaded its modules, which qom-list-types does
    # (libvirt's probe asks it first): ask them again.
    ask("qom-list-types")
    for name in AFTER_MODULES:
        ask(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", help="a qemu-system-x86_64")
    parser.add_argument("dir", type=Path, help="where to write the recording")
    args = parser.parse_args(argv)
    documents: list[Any] = []
    for args_of_session in SESSIONS:
        (messages,) = session(args.binary, args_of_session)
        documents.extend(messages)
    qemu = documents[0]["QMP"]["version"]["qemu"]
    version = f"{qemu['major']}.{qemu['minor']}.{qemu['micro']}"
    out = args.dir / f"caps_{version}_x86_64+qmpsim.replies.xz"
    text = "\n\n".join(json.dumps(doc, indent=2) for doc in documents) + "\n"
    args.dir.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(text.encode("utf-8"), preset=9))
    print(f"{out}: {len(documents)} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
