"""QEMU-compatible JSON streaming (placeholder: newline-free raw_decode; to be replaced).

API contract:
- ``JsonStreamer().feed(data: bytes) -> list[Any | ParseError]``: every complete
  top-level JSON value (or parse error) found so far, in order.
- ``encode(value) -> bytes``: one message exactly as QEMU writes it, ending in ``\\r\\n``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParseError:
    """A parse error, with QEMU's text (for instance ``JSON parse error, stray 'x'``)."""

    message: str


class JsonStreamer:
    """Split a byte stream into JSON values."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any | ParseError]:
        self._buf += data.decode("utf-8", "replace")
        out: list[Any | ParseError] = []
        while True:
            stripped = self._buf.lstrip()
            if not stripped:
                self._buf = ""
                return out
            try:
                value, end = self._decoder.raw_decode(stripped)
            except json.JSONDecodeError:
                self._buf = stripped
                return out
            out.append(value)
            self._buf = stripped[end:]


def encode(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=True) + "\r\n").encode("ascii")
