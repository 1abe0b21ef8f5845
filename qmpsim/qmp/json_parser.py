"""QEMU 7.2's JSON parser (``json-parser.c``): one value from the tokens the streamer
gathered, with QEMU's error texts, integers beyond 64 bits read as floats, and
strings decoded as QEMU's modified UTF-8 (:mod:`qmpsim.qmp.json_utf8`)."""

from __future__ import annotations

import re
from typing import Any, Final

from qmpsim.qmp.json_utf8 import mod_utf8_codepoint, valid_codepoint

__all__ = ["PARSE_ERROR_MAX", "ParseFailure", "Token", "parse"]

PARSE_ERROR_MAX: Final = 1023  # QEMU formats parser messages into a 1024-byte buffer

# Token types, plain ints because the streamer handles them on a hot path.
LCURLY: Final = 1
RCURLY: Final = 2
LSQUARE: Final = 3
RSQUARE: Final = 4
COLON: Final = 5
COMMA: Final = 6
INTEGER: Final = 7
FLOAT: Final = 8
KEYWORD: Final = 9
STRING: Final = 10
OVERSIZE: Final = 11  # QEMU hands the streamer a lexer state here; it is always rejected

Token = tuple[int, bytes]
"""A token: its kind and its text."""


class ParseFailure(Exception):
    """The tokens are no value: QEMU's message (cut as QEMU cuts it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message[:PARSE_ERROR_MAX]


_EOI: Final = "premature EOI"
_EXPECTING: Final = "expecting value"


def parse(tokens: list[Token]) -> Any:
    """Parse one value from ``tokens`` (QEMU's recursive descent, made iterative)."""
    n = len(tokens)
    i = 0
    # Each frame: [container, pending key or None]; dict frames hold a key slot.
    stack: list[list[Any]] = []
    while True:
        # parse_value
        if i >= n:
            raise ParseFailure(_EOI)
        kind, text = tokens[i]
        value: Any
        if kind in (LCURLY, LSQUARE):
            i += 1
            if i >= n:
                raise ParseFailure(_EOI)
            close = RCURLY if kind == LCURLY else RSQUARE
            if tokens[i][0] == close:
                i += 1
                value = {} if kind == LCURLY else []
            else:
                stack.append([{} if kind == LCURLY else [], None, False])
                continue
        elif kind == STRING:
            i += 1
            value = _parse_string(text)
        elif kind == INTEGER:
            i += 1
            value = _parse_integer(text)
        elif kind == FLOAT:
            i += 1
            value = float(text)
        elif kind == KEYWORD:
            i += 1
            value = _KEYWORDS.get(text, _NOKEY)
            if value is _NOKEY:
                raise ParseFailure(f"invalid keyword '{text.decode('ascii')}'")
        else:
            raise ParseFailure(_EXPECTING)
        # A value is complete: hand it to the enclosing containers.
        while True:
            if not stack:
                return value
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, list):
                container.append(value)
                if i >= n:
                    raise ParseFailure(_EOI)
                kind = tokens[i][0]
                i += 1
                if kind == RSQUARE:
                    stack.pop()
                    value = container
                    continue
                if kind != COMMA:
                    raise ParseFailure("expected separator in list")
                break
            if not frame[2]:  # the value was a key
                if not isinstance(value, str):
                    raise ParseFailure("key is not a string in object")
                if i >= n:
                    raise ParseFailure(_EOI)
                kind = tokens[i][0]
                i += 1
                if kind != COLON:
                    raise ParseFailure("missing : in object pair")
                frame[1] = value
                frame[2] = True
                break
            key = frame[1]
            if key in container:
                raise ParseFailure("duplicate key")
            container[key] = value
            frame[2] = False
            if i >= n:
                raise ParseFailure(_EOI)
            kind = tokens[i][0]
            i += 1
            if kind == RCURLY:
                stack.pop()
                value = container
                continue
            if kind != COMMA:
                raise ParseFailure("expected separator in dict")
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
            raise ParseFailure("invalid escape sequence in string")
        cp = _hex4(body, bs + 2)
        end = bs + 6
        if 0xD800 <= cp <= 0xDBFF and body[end : end + 2] == b"\\u":
            trailing = _hex4(body, end + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF)
                end += 6
            else:
                cp = -1
        if not valid_codepoint(cp):
            # QEMU prints the escape from the original token, quote included when reached.
            shown = token[1 + bs : 1 + end].decode("ascii", "replace")
            raise ParseFailure(f"{shown} is not a valid Unicode character")
        parts.append(chr(cp))
        pos = end
    return "".join(parts)


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
        cp, pos = mod_utf8_codepoint(raw, pos)
        if cp < 0:
            raise ParseFailure("invalid UTF-8 sequence in string")
        out.append(chr(cp))
    return "".join(out)
