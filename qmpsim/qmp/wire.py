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
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

MAX_TOKEN_SIZE: Final = 64 << 20
MAX_TOKEN_COUNT: Final = 2 << 20
MAX_NESTING: Final = 1 << 10
_PARSE_ERROR_MAX: Final = 1023  # QEMU formats parser messages into a 1024-byte buffer

_PREFIX: Final = "JSON parse error, "


@dataclass(frozen=True)
class ParseError:
    """A parse error, with QEMU's text (for instance ``JSON parse error, stray 'x'``)."""

    message: str


class _S(enum.IntEnum):
    """Lexer states (QEMU's ``json_lexer_state``; interpolation is never enabled)."""

    START = 0
    RECOVERY = 1
    DQ = 2
    DQ_ESC = 3
    SQ = 4
    SQ_ESC = 5
    ZERO = 6
    DIGITS = 7
    SIGN = 8
    MANTISSA = 9
    MANTISSA_DIGITS = 10
    EXP_E = 11
    EXP_SIGN = 12
    EXP_DIGITS = 13
    KEYWORD = 14


# Token types, plain ints because the streamer handles them on a hot path.
_LCURLY: Final = 1
_RCURLY: Final = 2
_LSQUARE: Final = 3
_RSQUARE: Final = 4
_COLON: Final = 5
_COMMA: Final = 6
_INTEGER: Final = 7
_FLOAT: Final = 8
_KEYWORD: Final = 9
_STRING: Final = 10
_OVERSIZE: Final = 11  # QEMU hands the streamer a lexer state here; it is always rejected
_BRACKET_DELTA: Final = {_LCURLY: (1, 0), _RCURLY: (-1, 0), _LSQUARE: (0, 1), _RSQUARE: (0, -1)}


_Token = tuple[int, bytes]

_STRUCTURAL: Final = {
    ord("{"): _LCURLY,
    ord("}"): _RCURLY,
    ord("["): _LSQUARE,
    ord("]"): _RSQUARE,
    ord(":"): _COLON,
    ord(","): _COMMA,
}
_WS: Final = frozenset(b" \t\r\n")
_DIGIT: Final = frozenset(b"0123456789")
_LOWER: Final = frozenset(range(ord("a"), ord("z") + 1))

# Runs that keep the lexer in the same state, matched in one go for speed.
_RUNS: Final = {
    _S.DQ: re.compile(rb"[\x20\x21\x23-\x5b\x5d-\xfd]+"),
    _S.SQ: re.compile(rb"[\x20-\x26\x28-\x5b\x5d-\xfd]+"),
    _S.DIGITS: re.compile(rb"[0-9]+"),
    _S.MANTISSA_DIGITS: re.compile(rb"[0-9]+"),
    _S.EXP_DIGITS: re.compile(rb"[0-9]+"),
    _S.KEYWORD: re.compile(rb"[a-z]+"),
}
# Recovery skips everything but structural characters, control characters other
# than tab, and the impossible UTF-8 bytes 0xFE/0xFF.
_RECOVERY_SKIP: Final = re.compile(rb"[\x09\x20-\x2b\x2d-\x39\x3b-\x5a\x5c\x5e-\x7a\x7c\x7e-\xfd]+")
_WS_RUN: Final = re.compile(rb"[ \t\r\n]+")
# Fast path from the start state: one whole common token whose end the lexer
# would find at the same place (numbers and keywords only when the byte that
# ends them is already here).  Anything else goes through the state machine.
_FAST_TOKEN: Final = re.compile(
    rb"[ \t\r\n]*(?:"
    rb"([{}\[\],:])"
    rb'|("(?:[\x20\x21\x23-\x5b\x5d-\xfd]|\\[\x20-\xfd])*"'
    rb"|'(?:[\x20-\x26\x28-\x5b\x5d-\xfd]|\\[\x20-\xfd])*')"
    rb"|(-?(?:0|[1-9][0-9]*)(?=[ \t\r\n,:\]}]))"
    rb"|(-?(?:0\.[0-9]+(?:[eE][+-]?[0-9]+)?|[1-9][0-9]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    rb"(?=[ \t\r\n,:\]}]))"
    rb"|([a-z]+)(?=[^a-z])"
    rb")"
)
_FAST_KINDS: Final = (_STRING, _INTEGER, _FLOAT, _KEYWORD)


class JsonStreamer:
    """Split a byte stream into JSON values exactly as QEMU 7.2's monitor does."""

    def __init__(self) -> None:
        self._state = _S.START
        self._token = bytearray()
        self._tokens: list[_Token] = []
        self._token_size = 0
        self._braces = 0
        self._brackets = 0
        self._out: list[Any | ParseError] = []

    @property
    def buffered(self) -> int:
        """Bytes held for the value in progress (useful for a per-connection bound)."""
        return self._token_size + len(self._token)

    def reset(self) -> None:
        """Forget any partial input."""
        self._state = _S.START
        self._token.clear()
        self._tokens = []
        self._token_size = 0
        self._braces = 0
        self._brackets = 0
        self._out = []

    def feed(self, data: bytes) -> list[Any | ParseError]:
        """Consume ``data``; return the values and errors it completed, in order."""
        self._feed(bytes(data))
        out, self._out = self._out, []
        return out

    def flush(self) -> list[Any | ParseError]:
        """End of input: finish a pending token and parse what is left, as QEMU does on EOF."""
        terminal = {
            _S.ZERO: _INTEGER,
            _S.DIGITS: _INTEGER,
            _S.MANTISSA_DIGITS: _FLOAT,
            _S.EXP_DIGITS: _FLOAT,
            _S.KEYWORD: _KEYWORD,
        }
        state = self._state
        if state in terminal:
            self._process(terminal[state], bytes(self._token))
        elif state not in (_S.START, _S.RECOVERY):
            self._process_error(bytes(self._token))
        self._token.clear()
        self._state = _S.START
        if self._tokens:
            self._emit_parse()
        out, self._out = self._out, []
        return out

    # -- lexer -------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        token = self._token
        while pos < n:
            state = self._state
            if state is _S.START:
                m = _FAST_TOKEN.match(data, pos)
                if m:
                    group = m.lastindex or 0
                    text = m.group(group)
                    if len(text) <= MAX_TOKEN_SIZE:
                        pos = m.end()
                        if group == 1:
                            self._process(_STRUCTURAL[text[0]], text)
                        else:
                            self._process(_FAST_KINDS[group - 2], text)
                        continue
                m = _WS_RUN.match(data, pos)
                if m:
                    pos = m.end()
                    continue
                ch = data[pos]
                pos += 1
                kind = _STRUCTURAL.get(ch)
                if kind is not None:
                    self._process(kind, bytes((ch,)))
                    continue
                token.append(ch)
                if ch == 0x22:
                    self._state = _S.DQ
                elif ch == 0x27:
                    self._state = _S.SQ
                elif ch == 0x30:
                    self._state = _S.ZERO
                elif 0x31 <= ch <= 0x39:
                    self._state = _S.DIGITS
                elif ch == 0x2D:
                    self._state = _S.SIGN
                elif ch in _LOWER:
                    self._state = _S.KEYWORD
                else:
                    self._lex_error()
                continue
            if state is _S.RECOVERY:
                m = _RECOVERY_SKIP.match(data, pos)
                if m:
                    pos = m.end()
                if pos < n:
                    self._state = _S.START
                continue
            run = _RUNS.get(state)
            if run is not None:
                m = run.match(data, pos)
                if m:
                    room = MAX_TOKEN_SIZE + 1 - len(token)
                    end = min(m.end(), pos + room)
                    token += data[pos:end]
                    pos = end
                    if len(token) > MAX_TOKEN_SIZE:
                        self._oversize()
                    continue
            ch = data[pos]
            consumed = self._step(state, ch)
            if consumed:
                pos += 1
                if len(token) > MAX_TOKEN_SIZE:
                    self._oversize()

    def _step(self, state: _S, ch: int) -> bool:
        """One transition that is not a run; return whether ``ch`` was consumed."""
        token = self._token
        nxt: _S | None = None
        terminal: int | None = None
        if state is _S.DQ or state is _S.SQ:
            quote = 0x22 if state is _S.DQ else 0x27
            if ch == quote:
                token.append(ch)
                self._emit_token(_STRING)
                return True
            if ch == 0x5C:
                nxt = _S.DQ_ESC if state is _S.DQ else _S.SQ_ESC
        elif state is _S.DQ_ESC or state is _S.SQ_ESC:
            if 0x20 <= ch <= 0xFD:
                nxt = _S.DQ if state is _S.DQ_ESC else _S.SQ
        elif state is _S.ZERO:
            if ch == 0x2E:
                nxt = _S.MANTISSA
            elif ch not in _DIGIT:
                terminal = _INTEGER
        elif state is _S.DIGITS:
            if ch in b"eE":
                nxt = _S.EXP_E
            elif ch == 0x2E:
                nxt = _S.MANTISSA
            else:
                terminal = _INTEGER
        elif state is _S.SIGN:
            if ch == 0x30:
                nxt = _S.ZERO
            elif ch in _DIGIT:
                nxt = _S.DIGITS
        elif state is _S.MANTISSA:
            if ch in _DIGIT:
                nxt = _S.MANTISSA_DIGITS
        elif state is _S.MANTISSA_DIGITS:
            if ch in b"eE":
                nxt = _S.EXP_E
            else:
                terminal = _FLOAT
        elif state is _S.EXP_E:
            if ch in b"+-":
                nxt = _S.EXP_SIGN
            elif ch in _DIGIT:
                nxt = _S.EXP_DIGITS
        elif state is _S.EXP_SIGN:
            if ch in _DIGIT:
                nxt = _S.EXP_DIGITS
        elif state is _S.EXP_DIGITS:
            terminal = _FLOAT
        elif state is _S.KEYWORD:
            terminal = _KEYWORD
        if terminal is not None:
            self._emit_token(terminal)
            return False
        token.append(ch)
        if nxt is None:
            self._lex_error()
        else:
            self._state = nxt
        return True

    def _emit_token(self, kind: int) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.START
        self._process(kind, text)

    def _lex_error(self) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.RECOVERY
        self._process_error(text)

    def _oversize(self) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.START
        self._process(_OVERSIZE, text)

    # -- streamer ------------------------------------------------------------

    def _process_error(self, text: bytes) -> None:
        stray = _lenient_decode(text.split(b"\x00", 1)[0])
        self._emit(ParseError(f"{_PREFIX}stray '{stray}'"))

    def _process(self, kind: int, text: bytes) -> None:
        delta = _BRACKET_DELTA.get(kind)
        if delta is not None:
            self._braces += delta[0]
            self._brackets += delta[1]
        if self._token_size + len(text) + 1 > MAX_TOKEN_SIZE:
            self._emit(ParseError("JSON token size limit exceeded"))
            return
        if len(self._tokens) + 1 > MAX_TOKEN_COUNT:
            self._emit(ParseError("JSON token count limit exceeded"))
            return
        if self._brackets + self._braces > MAX_NESTING:
            self._emit(ParseError("JSON nesting depth limit exceeded"))
            return
        self._tokens.append((kind, text))
        self._token_size += len(text)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 and self._brackets >= 0:
            return
        self._emit_parse()

    def _emit_parse(self) -> None:
        tokens = self._tokens
        self._tokens = []
        try:
            value: Any | ParseError = _parse(tokens)
        except _Fail as fail:
            value = ParseError(_PREFIX + fail.message)
        self._emit(value)

    def _emit(self, item: Any | ParseError) -> None:
        self._braces = 0
        self._brackets = 0
        self._tokens = []
        self._token_size = 0
        self._out.append(item)


# -- parser ------------------------------------------------------------------


class _Fail(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message[:_PARSE_ERROR_MAX]


_EOI: Final = "premature EOI"
_EXPECTING: Final = "expecting value"


def _parse(tokens: list[_Token]) -> Any:
    """Parse one value from ``tokens`` (QEMU's recursive descent, made iterative)."""
    n = len(tokens)
    i = 0
    # Each frame: [container, pending key or None]; dict frames hold a key slot.
    stack: list[list[Any]] = []
    while True:
        # parse_value
        if i >= n:
            raise _Fail(_EOI)
        kind, text = tokens[i]
        value: Any
        if kind in (_LCURLY, _LSQUARE):
            i += 1
            if i >= n:
                raise _Fail(_EOI)
            close = _RCURLY if kind == _LCURLY else _RSQUARE
            if tokens[i][0] == close:
                i += 1
                value = {} if kind == _LCURLY else []
            else:
                stack.append([{} if kind == _LCURLY else [], None, False])
                continue
        elif kind == _STRING:
            i += 1
            value = _parse_string(text)
        elif kind == _INTEGER:
            i += 1
            value = _parse_integer(text)
        elif kind == _FLOAT:
            i += 1
            value = float(text)
        elif kind == _KEYWORD:
            i += 1
            value = _KEYWORDS.get(text, _NOKEY)
            if value is _NOKEY:
                raise _Fail(f"invalid keyword '{text.decode('ascii')}'")
        else:
            raise _Fail(_EXPECTING)
        # A value is complete: hand it to the enclosing containers.
        while True:
            if not stack:
                return value
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, list):
                container.append(value)
                if i >= n:
                    raise _Fail(_EOI)
                kind = tokens[i][0]
                i += 1
                if kind == _RSQUARE:
                    stack.pop()
                    value = container
                    continue
                if kind != _COMMA:
                    raise _Fail("expected separator in list")
                break
            if not frame[2]:  # the value was a key
                if not isinstance(value, str):
                    raise _Fail("key is not a string in object")
                if i >= n:
                    raise _Fail(_EOI)
                kind = tokens[i][0]
                i += 1
                if kind != _COLON:
                    raise _Fail("missing : in object pair")
                frame[1] = value
                frame[2] = True
                break
            key = frame[1]
            if key in container:
                raise _Fail("duplicate key")
            container[key] = value
            frame[2] = False
            if i >= n:
                raise _Fail(_EOI)
            kind = tokens[i][0]
            i += 1
            if kind == _RCURLY:
                stack.pop()
                value = container
                continue
            if kind != _COMMA:
                raise _Fail("expected separator in dict")
            break


_NOKEY: Final = object()
_KEYWORDS: Final[dict[bytes, Any]] = {b"true": True, b"false": False, b"null": None}
_INT64_MIN: Final = -(1 << 63)
_UINT64_MAX: Final = (1 << 64) - 1


def _parse_integer(text: bytes) -> int | float:
    value = int(text)
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    return float(text)


_ESCAPES: Final = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def _hex4(body: bytes, at: int) -> int:
    chunk = body[at : at + 4]
    if len(chunk) < 4 or any(c not in _HEX for c in chunk):
        return -1
    return int(chunk, 16)


def _parse_string(token: bytes) -> str:
    """Decode a string token (with its quotes) as QEMU's ``parse_string`` does."""
    body = token[1:-1]
    if b"\\" not in body:
        return _strict_decode(body)
    parts: list[str] = []
    pos = 0
    n = len(body)
    while pos < n:
        bs = body.find(b"\\", pos)
        if bs < 0:
            parts.append(_strict_decode(body[pos:]))
            break
        if bs > pos:
            parts.append(_strict_decode(body[pos:bs]))
        esc = body[bs + 1]
        simple = _ESCAPES.get(esc)
        if simple is not None:
            parts.append(simple)
            pos = bs + 2
            continue
        if esc != ord("u"):
            raise _Fail("invalid escape sequence in string")
        cp = _hex4(body, bs + 2)
        end = bs + 6
        if 0xD800 <= cp <= 0xDBFF and body[end : end + 2] == b"\\u":
            trailing = _hex4(body, end + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF)
                end += 6
            else:
                cp = -1
        if not _valid_codepoint(cp):
            # QEMU prints the escape from the original token, quote included when reached.
            shown = token[1 + bs : 1 + end].decode("ascii", "replace")
            raise _Fail(f"{shown} is not a valid Unicode character")
        parts.append(chr(cp))
        pos = end
    return "".join(parts)


def _valid_codepoint(cp: int) -> bool:
    if cp < 0 or cp > 0x10FFFF:
        return False
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return False
    return not 0xD800 <= cp <= 0xDFFF


_NONCHARACTERS: Final = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(17))
    + "]"
)


def _strict_decode(raw: bytes) -> str:
    """QEMU's modified UTF-8 validation of string contents (``\\xC0\\x80`` is NUL)."""
    if raw.isascii():
        return raw.decode("ascii")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not _NONCHARACTERS.search(text):
            return text
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        cp, pos = _mod_utf8_codepoint(raw, pos)
        if cp < 0:
            raise _Fail("invalid UTF-8 sequence in string")
        out.append(chr(cp))
    return "".join(out)


_MIN_CP: Final = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def _mod_utf8_codepoint(raw: bytes, pos: int) -> tuple[int, int]:
    """One code point from ``raw`` at ``pos`` as QEMU's ``mod_utf8_codepoint``; -1 if invalid."""
    byte = raw[pos]
    pos += 1
    if byte < 0x80:
        return byte, pos
    if byte >= 0xFE or not byte & 0x40:
        return -1, pos
    length = 0
    mask = 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for _ in range(1, length):
        nxt = raw[pos] if pos < len(raw) else 0
        if nxt & 0xC0 != 0x80:
            return -1, pos
        pos += 1
        cp = cp << 6 | (nxt & 0x3F)
    if cp > 0x10FFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return -1, pos
    if 0xD800 <= cp <= 0xDFFF:
        return -1, pos
    if cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2):
        return -1, pos
    return cp, pos


def _lenient_decode(raw: bytes) -> str:
    """Bytes as QEMU's writer shows them: each invalid sequence becomes U+FFFD."""
    if raw.isascii():
        return raw.decode("ascii")
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        cp, pos = _mod_utf8_codepoint(raw, pos)
        out.append("\ufffd" if cp < 0 else chr(cp))
    return "".join(out)


# -- writer ------------------------------------------------------------------

_BUCKETS: Final = 512


def _tdb_hash(name: bytes) -> int:
    value = (0x238F13AF * len(name)) & 0xFFFFFFFF
    for i, byte in enumerate(name):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


@lru_cache(maxsize=4096)
def _bucket(key: str) -> int:
    raw = key.encode("utf-8", "surrogatepass").replace(b"\x00", b"\xc0\x80")
    return _tdb_hash(raw) % _BUCKETS


def qdict_order(keys: Sequence[str]) -> list[str]:
    """``keys`` (in insertion order) in the order QEMU's QDict iterates them."""
    indexed = sorted(enumerate(keys), key=lambda item: (_bucket(item[1]), -item[0]))
    return [key for _, key in indexed]


_SHORT: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT["\t"] = "\\t"
_NEEDS_ESCAPE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if not _valid_codepoint(cp) and cp != 0:
        cp = 0xFFFD
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}"
    return f"\\u{cp:04X}"


def _quote(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


_NOT_PLAIN: Final[Any] = object()
_PLAIN_DEPTH: Final = 64


def _printable(text: str) -> bool:
    # For ASCII, isprintable() is exactly [\x20-\x7e], and cheaper than a regex.
    return text.isascii() and text.isprintable()


@lru_cache(maxsize=1024)
def _ordered(keys: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The keys in QDict order, or None unless they are all printable ASCII strings."""
    if not all(isinstance(key, str) and _printable(key) for key in keys):
        return None
    return tuple(qdict_order(keys))


_INT_MIN: Final = -(1 << 63)
_INT_END: Final = 1 << 64


def _plain(value: Any, depth: int) -> Any:
    """``value`` with objects rebuilt in QDict order, or _NOT_PLAIN when json.dumps
    would not write it as QEMU does (floats, escapes, other types, deep nesting)."""
    kind = type(value)
    # Exact types first: this runs for every member of every event.
    if kind is str:
        return value if value.isascii() and value.isprintable() else _NOT_PLAIN
    if kind is bool or value is None:
        return value
    if kind is int or (kind is not float and isinstance(value, int)):
        # Beyond this range QEMU's parser reads a number back as a float, so such a
        # value could not double as the message parsed (see encode_message).
        return value if _INT_MIN <= value < _INT_END else _NOT_PLAIN
    if isinstance(value, str):
        return value if _printable(value) else _NOT_PLAIN
    if depth >= _PLAIN_DEPTH:
        return _NOT_PLAIN
    if kind is dict or isinstance(value, Mapping):
        order = _ordered(tuple(value))
        if order is None:
            return _NOT_PLAIN
        out = {}
        for key in order:
            item = value[key]
            kind = type(item)
            # The common members inline: a call per member costs more than the check.
            if kind is str:
                if not (item.isascii() and item.isprintable()):
                    return _NOT_PLAIN
            elif kind is int:
                if not _INT_MIN <= item < _INT_END:
                    return _NOT_PLAIN
            elif kind is not bool and item is not None:
                item = _plain(item, depth + 1)
                if item is _NOT_PLAIN:
                    return _NOT_PLAIN
            out[key] = item
        return out
    if kind is list or kind is tuple or isinstance(value, list | tuple):
        items = []
        for element in value:
            item = _plain(element, depth + 1)
            if item is _NOT_PLAIN:
                return _NOT_PLAIN
            items.append(item)
        return items
    return _NOT_PLAIN


class _Raw(str):
    """Literal output text on the writer's work stack."""


def _write(value: Any, out: list[str]) -> None:
    # Iterative, so that values nested 1024 deep are written like any other.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item)
        elif isinstance(item, str):
            out.append(_quote(item))
        elif item is None:
            out.append("null")
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif isinstance(item, int):
            out.append(str(item))
        elif isinstance(item, float):
            out.append(f"{item:.17g}")
        elif isinstance(item, Mapping):
            if not item:
                out.append("{}")
                continue
            for key in item:
                if not isinstance(key, str):
                    raise TypeError(f"object keys must be str, not {type(key).__name__}")
            out.append("{")
            work: list[Any] = []
            for index, key in enumerate(qdict_order(list(item))):
                work.append(_Raw((", " if index else "") + _quote(key) + ": "))
                work.append(item[key])
            work.append(_Raw("}"))
            stack.extend(reversed(work))
        elif isinstance(item, (list, tuple)):
            out.append("[")
            work = []
            for index, element in enumerate(item):
                if index:
                    work.append(_Raw(", "))
                work.append(element)
            work.append(_Raw("]"))
            stack.extend(reversed(work))
        else:
            raise TypeError(f"cannot encode {type(item).__name__} as QMP JSON")


def encode(value: Any) -> bytes:
    """One message exactly as QEMU 7.2 writes it, ending in ``\\r\\n``."""
    plain = _plain(value, 0)
    if plain is not _NOT_PLAIN:
        # The common case, at C speed: for printable ASCII, integers, booleans and
        # null, json.dumps writes byte for byte what QEMU writes, once the objects'
        # members are in QDict order.
        return (json.dumps(plain) + "\r\n").encode("ascii")
    out: list[str] = []
    _write(value, out)
    out.append("\r\n")
    return "".join(out).encode("ascii")


@lru_cache(maxsize=4096)
def _json_str(text: str) -> str | None:
    return json.dumps(text) if _printable(text) else None


@lru_cache(maxsize=1024)
def _template(keys: tuple[Any, ...]) -> tuple[tuple[str, ...], str] | None:
    """An object's keys in QDict order and its text with a ``%s`` for each value."""
    order = _ordered(keys)
    if order is None:
        return None
    members = ", ".join(json.dumps(key).replace("%", "%%") + ": %s" for key in order)
    return order, "{" + members + "}"


_FLAT_TYPES: Final = frozenset((str, int, bool, type(None)))
_FLAT_MAX: Final = 4096
# Objects whose members are all scalars, by (keys, values, exact types) -> their text
# and value in QDict order.  The types are part of the key because True == 1.
_flat_cache: dict[tuple[Any, ...], tuple[str, dict[str, Any]] | None] = {}


def _flat(value: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """An object of scalars written as encode() writes it, and parsed back; else None."""
    values = tuple(value.values())
    types = tuple(map(type, values))
    if not _FLAT_TYPES.issuperset(types):
        return None
    if types.count(int) == len(types):
        # Counters and timestamps change with every message: not worth caching.
        keys = tuple(value)
        template = _template(keys)
        if template is None or (values and not _INT_MIN <= min(values) <= max(values) < _INT_END):
            return None
        order, text = template
        if order == keys:
            return text % values, dict(value)
        plain = {key: value[key] for key in order}
        return text % tuple(plain.values()), plain
    key = (tuple(value), values, types)
    try:
        hit = _flat_cache[key]
    except KeyError:
        ordered = _plain(value, 1)
        hit = None if ordered is _NOT_PLAIN else (json.dumps(ordered), ordered)
        if len(_flat_cache) >= _FLAT_MAX:
            _flat_cache.clear()
        _flat_cache[key] = hit
    return None if hit is None else (hit[0], dict(hit[1]))


def _object(message: Any) -> tuple[str, dict[str, Any]] | None:
    """An object of scalars and objects of scalars, as text and parsed; None: the long way."""
    if type(message) is not dict:
        return None
    template = _template(tuple(message))
    if template is None:
        return None
    order, text = template
    parts: list[str] = []
    parsed: dict[str, Any] = {}
    for key in order:
        item = message[key]
        kind = type(item)
        if kind is dict:
            flat = _flat(item)
            if flat is None:
                return None
            part, item = flat
        elif kind is str:
            quoted = _json_str(item)
            if quoted is None:
                return None
            part = quoted
        elif kind is int:
            if not _INT_MIN <= item < _INT_END:
                return None
            part = str(item)
        elif kind is bool or item is None:
            part = "true" if item is True else "false" if item is False else "null"
        else:
            return None
        parts.append(part)
        parsed[key] = item
    return text % tuple(parts), parsed


def _event_layout(keys: tuple[str, ...]) -> tuple[tuple[str, ...] | None, tuple[str, ...], str]:
    """An event message's member order (None: as inserted), its timestamp's, and its text
    with placeholders."""
    stamp = _ordered(("seconds", "microseconds"))
    order = _ordered(keys)
    assert stamp is not None and order is not None
    value = {
        "timestamp": "{" + ", ".join(f'"{k}": %({k})d' for k in stamp) + "}",
        "event": "%(event)s",
        "data": "%(data)s",
    }
    text = "{" + ", ".join(f'"{k}": {value[k]}' for k in order) + "}\r\n"
    return (None if order == keys else order), stamp, text


_EVENT_LAYOUTS: Final = {
    keys: _event_layout(keys) for keys in (("timestamp", "event", "data"), ("timestamp", "event"))
}


def _event(message: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """A message as Event.to_json() builds it, written from a fixed template; else None."""
    if type(message) is not dict:
        return None
    layout = _EVENT_LAYOUTS.get(tuple(message))
    if layout is None:
        return None
    order, stamp_order, template = layout
    stamp = message["timestamp"]
    if type(stamp) is not dict or tuple(stamp) != ("seconds", "microseconds"):
        return None
    seconds = stamp["seconds"]
    micro = stamp["microseconds"]
    name = message["event"]
    if not (
        type(seconds) is int
        and type(micro) is int
        and _INT_MIN <= seconds < _INT_END
        and _INT_MIN <= micro < _INT_END
        and type(name) is str
    ):
        return None
    quoted = _json_str(name)
    if quoted is None:
        return None
    parsed: dict[str, Any] = {"timestamp": {k: stamp[k] for k in stamp_order}, "event": name}
    fill = {"seconds": seconds, "microseconds": micro, "event": quoted}
    if "data" in message:
        data = _flat(message["data"]) if type(message["data"]) is dict else None
        if data is None:
            data = _object(message["data"])
            if data is None:
                return None
        fill["data"], parsed["data"] = data
    text = (template % fill).encode("ascii")
    return text, parsed if order is None else {k: parsed[k] for k in order}


def _encode_flat(message: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """An event-like message (scalars and objects of scalars), or None to take the long way."""
    fast = _event(message)
    if fast is not None:
        return fast
    flat = _object(message)
    return None if flat is None else ((flat[0] + "\r\n").encode("ascii"), flat[1])


def encode_message(message: Mapping[str, Any]) -> tuple[bytes, dict[str, Any] | None]:
    """``encode(message)``, and the message as QEMU's parser reads those bytes back.

    The second item is ``None`` unless the message is plain (printable ASCII strings,
    integers QEMU keeps as integers, booleans, null), the case where the value
    rebuilt in QDict order is exactly what the bytes parse to.
    """
    flat = _encode_flat(message)
    if flat is not None:
        return flat
    plain = _plain(message, 0)
    if plain is _NOT_PLAIN or not isinstance(plain, dict):
        return encode(message), None
    return (json.dumps(plain) + "\r\n").encode("ascii"), plain


def qdict_insertion(value: Any) -> Any:
    """Rebuild the objects in ``value`` so that :func:`encode` keeps their current member order.

    QEMU writes members that share a hash bucket in reverse insertion order, so a
    value parsed from QEMU's output must be re-inserted that way to be written
    back identically (QEMU itself would swap such members when echoing them).
    """
    if isinstance(value, Mapping):
        groups: dict[int, list[str]] = {}
        for key in value:
            groups.setdefault(_bucket(key), []).append(key)
        ordered = [key for bucket in sorted(groups) for key in reversed(groups[bucket])]
        return {key: qdict_insertion(value[key]) for key in ordered}
    if isinstance(value, list):
        return [qdict_insertion(item) for item in value]
    return value
