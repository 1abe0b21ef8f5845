"""A SPICE channel against a real QEMU 7.2 and against the machine: same events, same replies.

The test speaks just enough of the SPICE link protocol to open a main channel:
the link message, then the (empty) ticket encrypted with RSA-OAEP under the
server's public key, which QEMU's ``disable-ticketing=on`` accepts.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
from contextlib import closing
from typing import Any

import pytest
from qemu_harness import SAFETY_TIMEOUT, mask, qemu_on_free_port
from test_diff_machine import RealMonitor, SimMonitor, assert_same

from qmpsim.vm.machine import SpiceConfig, SpiceConnect, SpiceDisconnect, SpiceInitialize, VmConfig

pytestmark = pytest.mark.qemu


def _der(data: bytes, i: int) -> tuple[bytes, int]:
    """One DER element at ``i``: its contents and the offset after it."""
    length = data[i + 1]
    i += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[i : i + count], "big")
        i += count
    return data[i : i + length], i + length


def _rsa_public_key(spki: bytes) -> tuple[int, int]:
    info, _ = _der(spki, 0)
    _, after_algorithm = _der(info, 0)
    bits, _ = _der(info, after_algorithm)
    key, _ = _der(bits[1:], 0)  # skip the BIT STRING's unused-bits byte
    modulus, after = _der(key, 0)
    exponent, _ = _der(key, after)
    return int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big")


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha1(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _oaep_encrypt(modulus: int, exponent: int, message: bytes) -> bytes:
    k = (modulus.bit_length() + 7) // 8
    label = hashlib.sha1(b"").digest()
    block = label + b"\0" * (k - len(message) - 2 * len(label) - 2) + b"\x01" + message
    seed = os.urandom(len(label))
    masked = bytes(a ^ b for a, b in zip(block, _mgf1(seed, len(block)), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, _mgf1(masked, len(label)), strict=True))
    encoded = int.from_bytes(b"\0" + masked_seed + masked, "big")
    return pow(encoded, exponent, modulus).to_bytes(k, "big")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the SPICE server closed the link"
        data += chunk
    return data


def _spice_main_channel(port: int) -> socket.socket:
    """Open and authenticate a SPICE main channel (type 1, id 0)."""
    link = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)
    sock = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
    sock.sendall(b"REDQ" + struct.pack("<III", 2, 2, len(link)) + link)
    magic, _major, _minor, size = struct.unpack("<4sIII", _recv_exactly(sock, 16))
    assert magic == b"REDQ"
    reply = _recv_exactly(sock, size)
    assert reply[:4] == b"\0\0\0\0"
    modulus, exponent = _rsa_public_key(reply[4 : 4 + 162])
    sock.sendall(_oaep_encrypt(modulus, exponent, b"\0"))  # empty password, NUL-terminated
    assert _recv_exactly(sock, 4) == b"\0\0\0\0"  # SPICE_LINK_ERR_OK
    return sock


def _wait_events(qemu: RealMonitor, name: str, count: int) -> None:
    for _ in range(500):  # QEMU notices a closed socket on its own time
        if sum(m.get("event") == name for m in qemu.messages) >= count:
            return
        qemu.execute("query-spice")
    pytest.fail(f"QEMU never sent {count} {name}")


_PORT = re.compile(rb'"port": "\d+"')
_CONNECTION = re.compile(rb'"connection-id": -?\d+')


def _event_bytes(lines: list[bytes]) -> list[bytes]:
    masked = (_PORT.sub(b'"port": "P"', mask(line)) for line in lines if b'"event"' in line)
    return [_CONNECTION.sub(b'"connection-id": 0', line) for line in masked]


def _masked_spice(message: dict[str, Any]) -> dict[str, Any]:
    def client(info: dict[str, Any]) -> dict[str, Any]:
        out = {**info, "port": "PORT"}
        if "connection-id" in out:
            out["connection-id"] = 0
        return out

    out = dict(message)
    if isinstance(out.get("data"), dict):
        out["data"] = {**out["data"], "client": client(out["data"]["client"])}
    ret = out.get("return")
    if isinstance(ret, dict) and "channels" in ret:
        out["return"] = {**ret, "channels": [client(c) for c in ret["channels"]]}
    return out


def _spice(port: int) -> list[str]:
    return ["-M", "pc", "-S", "-spice", f"port={port},addr=127.0.0.1,disable-ticketing=on"]


def test_spice_channel_connects_initializes_and_leaves() -> None:
    with qemu_on_free_port(_spice) as (path, port), closing(RealMonitor(path)) as qemu:
        qemu.execute("query-spice")
        channel = _spice_main_channel(port)
        _wait_events(qemu, "SPICE_INITIALIZED", 1)
        qemu.execute("query-spice")
        channel.close()
        _wait_events(qemu, "SPICE_DISCONNECTED", 1)
        lurker = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
        _wait_events(qemu, "SPICE_CONNECTED", 2)
        lurker.close()
        _wait_events(qemu, "SPICE_DISCONNECTED", 2)
        qemu.execute("query-spice")
    real_events = [_masked_spice(m) for m in qemu.messages if "event" in m]
    real_replies = [_masked_spice(m) for m in qemu.messages if "event" not in m]

    sim = SimMonitor(VmConfig(spice=SpiceConfig(port=port, auth="none")))
    sim.execute("query-spice")
    sim.cause(SpiceConnect("viewer"))
    sim.cause(SpiceInitialize("viewer"))
    sim.execute("query-spice")
    sim.cause(SpiceDisconnect("viewer"))
    sim.cause(SpiceConnect("lurker"))
    sim.cause(SpiceDisconnect("lurker"))
    sim.execute("query-spice")
    sim_events = [_masked_spice(m) for m in sim.messages if "event" in m]
    sim_replies = [_masked_spice(m) for m in sim.messages if "event" not in m]

    assert [m["event"] for m in real_events] == [
        "SPICE_CONNECTED",
        "SPICE_INITIALIZED",
        "SPICE_DISCONNECTED",
        "SPICE_CONNECTED",
        "SPICE_DISCONNECTED",
    ]
    assert_same(real_events, sim_events)
    assert _event_bytes(sim.raw) == _event_bytes(qemu.raw)
    # the first reply, the one with the channel up, and the last one
    with_channel = [r for r in real_replies if r["return"]["channels"]]
    assert_same([real_replies[0], with_channel[0], real_replies[-1]], sim_replies)
