"""QEMU 7.2's JSON lexer and streamer (``json-lexer.c``, ``json-streamer.c``).

:class:`JsonStreamer` splits a byte stream into top-level values, or parse errors,
exactly as QEMU's monitor does: no newline framing, single-quoted strings, the
64 MiB / 2 Mi tokens / 1024 nesting limits, and lexical error recovery.  Each
value's tokens go to the parser (:mod:`qmpsim.qmp.json_parser`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Final

from qmpsim.qmp.json_parser import (
    COLON,
    COMMA,
    FLOAT,
    INTEGER,
    KEYWORD,
    LCURLY,
    LSQUARE,
    OVERSIZE,
    RCURLY,
    RSQUARE,
    STRING,
    ParseFailure,
    Token,
    parse,
)
from qmpsim.qmp.json_utf8 import lenient_decode

__all__ = ["MAX_NESTING", "MAX_TOKEN_COUNT", "MAX_TOKEN_SIZE", "JsonStreamer", "ParseError"]

MAX_TOKEN_SIZE: Final = 64 << 20
MAX_TOKEN_COUNT: Final = 2 << 20
MAX_NESTING: Final = 1 << 10

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


_BRACKET_DELTA: Final = {LCURLY: (1, 0), RCURLY: (-1, 0), LSQUARE: (0, 1), RSQUARE: (0, -1)}


_STRUCTURAL: Final = {
    ord("{"): LCURLY,
    ord("}"): RCURLY,
    ord("["): LSQUARE,
    ord("]"): RSQUARE,
    ord(":"): COLON,
    ord(","): COMMA,
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
_FAST_KINDS: Final = (STRING, INTEGER, FLOAT, KEYWORD)


class JsonStreamer:
    """Split a byte stream into JSON values exactly as QEMU 7.2's monitor does."""

    def __init__(self) -> None:
        self._state = _S.START
        self._token = bytearray()
        self._tokens: list[Token] = []
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
            _S.ZERO: INTEGER,
            _S.DIGITS: INTEGER,
            _S.MANTISSA_DIGITS: FLOAT,
            _S.EXP_DIGITS: FLOAT,
            _S.KEYWORD: KEYWORD,
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
                self._emit_token(STRING)
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
                terminal = INTEGER
        elif state is _S.DIGITS:
            if ch in b"eE":
                nxt = _S.EXP_E
            elif ch == 0x2E:
                nxt = _S.MANTISSA
            else:
                terminal = INTEGER
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
                terminal = FLOAT
        elif state is _S.EXP_E:
            if ch in b"+-":
                nxt = _S.EXP_SIGN
            elif ch in _DIGIT:
                nxt = _S.EXP_DIGITS
        elif state is _S.EXP_SIGN:
            if ch in _DIGIT:
                nxt = _S.EXP_DIGITS
        elif state is _S.EXP_DIGITS:
            terminal = FLOAT
        elif state is _S.KEYWORD:
            terminal = KEYWORD
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
        self._process(OVERSIZE, text)

    # -- streamer ------------------------------------------------------------

    def _process_error(self, text: bytes) -> None:
        stray = lenient_decode(text.split(b"\x00", 1)[0])
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
            value: Any | ParseError = parse(tokens)
        except ParseFailure as fail:
            value = ParseError(_PREFIX + fail.message)
        self._emit(value)

    def _emit(self, item: Any | ParseError) -> None:
        self._braces = 0
        self._brackets = 0
        self._tokens = []
        self._token_size = 0
        self._out.append(item)
