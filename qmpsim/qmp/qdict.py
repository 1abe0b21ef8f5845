"""The order QEMU's QDict iterates an object's members in, which is the order its JSON
writer writes them: by bucket of a 512-slot hash table (the TDB hash of the key),
and within a bucket the newest member first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

__all__ = ["bucket", "qdict_insertion", "qdict_order"]

_BUCKETS: Final = 512


def _tdb_hash(name: bytes) -> int:
    value = (0x238F13AF * len(name)) & 0xFFFFFFFF
    for i, byte in enumerate(name):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


@lru_cache(maxsize=4096)
def bucket(key: str) -> int:
    raw = key.encode("utf-8", "surrogatepass").replace(b"\x00", b"\xc0\x80")
    return _tdb_hash(raw) % _BUCKETS


def qdict_order(keys: Sequence[str]) -> list[str]:
    """``keys`` (in insertion order) in the order QEMU's QDict iterates them."""
    indexed = sorted(enumerate(keys), key=lambda item: (bucket(item[1]), -item[0]))
    return [key for _, key in indexed]


def qdict_insertion(value: Any) -> Any:
    """Rebuild the objects in ``value`` so that :func:`encode` keeps their current member order.

    QEMU writes members that share a hash bucket in reverse insertion order, so a
    value parsed from QEMU's output must be re-inserted that way to be written
    back identically (QEMU itself would swap such members when echoing them).
    """
    if isinstance(value, Mapping):
        groups: dict[int, list[str]] = {}
        for key in value:
            groups.setdefault(bucket(key), []).append(key)
        ordered = [key for bucket in sorted(groups) for key in reversed(groups[bucket])]
        return {key: qdict_insertion(value[key]) for key in ordered}
    if isinstance(value, list):
        return [qdict_insertion(item) for item in value]
    return value
