"""QEMU's modified UTF-8: which code points are valid, decoding them as its parser and
writer do (``\\xC0\\x80`` is NUL; noncharacters and surrogates are invalid)."""

from __future__ import annotations

from typing import Final

__all__ = ["lenient_decode", "mod_utf8_codepoint", "valid_codepoint"]


def valid_codepoint(cp: int) -> bool:
    if cp < 0 or cp > 0x10FFFF:
        return False
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return False
    return not 0xD800 <= cp <= 0xDFFF


_MIN_CP: Final = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def mod_utf8_codepoint(raw: bytes, pos: int) -> tuple[int, int]:
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


def lenient_decode(raw: bytes) -> str:
    """Bytes as QEMU's writer shows them: each invalid sequence becomes U+FFFD."""
    if raw.isascii():
        return raw.decode("ascii")
    out: list[str] = []
    pos = 0
    while pos < len(raw):
        cp, pos = mod_utf8_codepoint(raw, pos)
        out.append("\ufffd" if cp < 0 else chr(cp))
    return "".join(out)
