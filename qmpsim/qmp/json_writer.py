"""QEMU 7.2's JSON writer: a message exactly as QEMU writes it (``encode``), members
in QDict order (:mod:`qmpsim.qmp.qdict`), and, for the events a simulator fans out,
the bytes together with the value QEMU's parser reads back (``encode_message``),
taken from templates so that nothing is lexed twice."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from qmpsim.qmp.json_utf8 import valid_codepoint
from qmpsim.qmp.qdict import qdict_order

__all__ = ["encode", "encode_message"]


_SHORT: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT["\t"] = "\\t"
_NEEDS_ESCAPE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if not valid_codepoint(cp) and cp != 0:
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
