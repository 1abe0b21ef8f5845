"""QEMU-compatible JSON streaming: QEMU 7.2's lexer, streamer, parser and writer.

- ``JsonStreamer().feed(data: bytes) -> list[Any | ParseError]``: every complete
  top-level JSON value (or parse error) found so far, in order, split and
  resynchronised exactly as QEMU's ``json-lexer.c``/``json-streamer.c``/``json-parser.c``
  do it (no newline framing, single-quoted strings, 64 MiB / 2 Mi tokens / 1024
  nesting limits, lexical error recovery).  ``flush()`` ends the input,
  ``reset()`` forgets it, ``buffered`` tells how many bytes a partial value holds.
  A top-level scalar is a value here; rejecting it is the protocol's business.
- ``encode(value) -> bytes``: one message exactly as QEMU's JSON writer writes it,
  ending in ``\\r\\n``, with object members in QEMU's QDict iteration order
  (``qdict_order``); build dicts in QEMU's insertion order.  ``qdict_insertion``
  re-inserts a value parsed from QEMU's output so that it is written back as it was.

This module is the one place the rest of qmpsim imports them from; they live in
:mod:`qmpsim.qmp.json_lexer` (lexer, streamer, limits, error recovery),
:mod:`qmpsim.qmp.json_parser` (tokens to a value), :mod:`qmpsim.qmp.json_utf8`
(QEMU's modified UTF-8), :mod:`qmpsim.qmp.json_writer` (the writer and its fast
paths) and :mod:`qmpsim.qmp.qdict` (QDict member order).
"""

from __future__ import annotations

from qmpsim.qmp.json_lexer import (
    MAX_NESTING,
    MAX_TOKEN_COUNT,
    MAX_TOKEN_SIZE,
    JsonStreamer,
    ParseError,
)
from qmpsim.qmp.json_writer import encode, encode_message
from qmpsim.qmp.qdict import qdict_insertion, qdict_order

__all__ = [
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "JsonStreamer",
    "ParseError",
    "encode",
    "encode_message",
    "qdict_insertion",
    "qdict_order",
]
