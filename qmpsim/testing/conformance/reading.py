"""Reading a log: JSON lines, transcript records, bare events, or ``qemu.qmp``'s
``<--``/``-->`` debug log, into the records the checker judges."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .core import Violation, _Record

_LOG_RECORD = re.compile(r"(<--|-->) ?(?=[{\[])")


def _read(lines: Iterable[str]) -> Iterator[_Record | Violation]:
    decoder = json.JSONDecoder()
    lines = list(lines)
    # in a qemu.qmp debug log, lines that carry no message are the log's own
    log = any(_LOG_RECORD.search(text) for text in lines)
    i = 0
    while i < len(lines):
        number, text = i + 1, lines[i]
        i += 1
        stripped = text.strip()
        if not stripped:
            continue
        try:
            value = json.loads(stripped)
        except ValueError:
            pass
        else:
            yield from _classify(number, value)
            continue
        match = _LOG_RECORD.search(text)
        if match is None:
            if not log:
                yield Violation(number, "json", f"not JSON: {_clip(stripped)}")
            continue
        outgoing = match.group(1) == "<--"
        buffer = text[match.end() :]
        while True:
            try:
                value, _ = decoder.raw_decode(buffer.strip())
            except ValueError:
                # the record goes on over the next lines, until the next record
                if i == len(lines) or _LOG_RECORD.search(lines[i]):
                    yield Violation(number, "json", "log record ends before its JSON value")
                    break
                buffer += "\n" + lines[i]
                i += 1
                continue
            yield from _classify(number, value, default_outgoing=outgoing, stream="log")
            break


def _classify(
    line: int, value: Any, *, default_outgoing: bool = True, stream: str = ""
) -> Iterator[_Record | Violation]:
    if not isinstance(value, dict):
        yield Violation(line, "message", f"a QMP message is a JSON object, not {_clip(value)}")
        return
    if "dir" in value and "json" in value:
        direction = value.get("dir")
        messages = value.get("json")
        if direction not in ("in", "out") or not isinstance(messages, list):
            yield Violation(line, "message", "malformed transcript record")
            return
        client = value.get("client")
        for message in messages:
            if direction == "out":
                yield from _classify(line, message, stream=f"client {client}")
        return
    if "direction" in value and "message" in value:
        direction = str(value["direction"]).lower()
        outgoing = direction in ("out", "recv", "received", "server", "<--", "s2c")
        yield from _classify_message(line, value["message"], outgoing, stream)
        return
    yield from _classify_message(line, value, default_outgoing, stream)


def _classify_message(
    line: int, message: Any, outgoing: bool, stream: str
) -> Iterator[_Record | Violation]:
    if not isinstance(message, dict):
        yield Violation(line, "message", f"a QMP message is a JSON object, not {_clip(message)}")
        return
    known = ("event", "return", "error", "QMP", "execute", "exec-oob")
    if not any(key in message for key in known):
        yield Violation(
            line, "message", f"neither an event, a reply nor a command: {_clip(message)}"
        )
        return
    if "execute" in message or "exec-oob" in message:
        outgoing = False
    yield _Record(line, stream, message, outgoing)


def _clip(value: Any, width: int = 80) -> str:
    """``value`` as quoted in a message: :func:`_printable`, at most ``width`` characters."""
    text = value if isinstance(value, str) else json.dumps(value)
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = _shown(char)
        if used + len(piece) > width:
            while pieces and used + 3 > width:
                used -= len(pieces.pop())
            return "".join(pieces) + "..."
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


def _printable(text: str) -> str:
    """``text`` on one line, with what a terminal would act on escaped.

    Control characters, line separators and escape sequences are shown as in
    Python (``\\x1b``, ``\\u2028``): a log quoted back cannot garble a terminal.
    """
    return text if text.isprintable() else "".join(map(_shown, text))


def _shown(char: str) -> str:
    return char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
