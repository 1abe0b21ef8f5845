"""The order QEMU lists a QOM object's children in: GLib's hash table, replayed.

QEMU keeps an object's properties in a ``GHashTable`` keyed by name, and
``qom-list`` walks it, prepending each property to its reply: the reply is the
table's slot order, reversed, after the object's own properties come its
class's (``type``).  :class:`HashOrder` places keys as GLib 2.74 does
(``g_str_hash``, the index ``hash * 11 % prime``, quadratic probing, tombstones
on removal, resizing at the same fill levels), so a simulated container lists
its children in the order the real one does.
"""

from __future__ import annotations

_PRIME_MOD = (1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749)
_MIN_SHIFT = 3
_UNUSED, _TOMBSTONE = 0, 1


def str_hash(key: str) -> int:
    """``g_str_hash``: djb2 over the key's bytes as signed chars, in 32 bits."""
    value = 5381
    for byte in key.encode():
        value = (value * 33 + (byte - 256 if byte > 127 else byte)) & 0xFFFFFFFF
    return value


class HashOrder:
    """The slot layout of a ``GHashTable`` of strings: insert, remove, iterate."""

    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self._keys: list[str | None] = [None] * self._size
        self._hashes = [_UNUSED] * self._size
        self._nodes = 0
        self._occupied = 0

    def _set_shift(self, shift: int) -> None:
        self._shift = shift
        self._size = 1 << shift
        self._mod = _PRIME_MOD[shift]
        self._mask = self._size - 1

    def _lookup(self, key: str, value: int) -> int:
        index = (value * 11) % self._mod
        step = 0
        tombstone = -1
        while self._hashes[index] != _UNUSED:
            if self._hashes[index] == value and self._keys[index] == key:
                return index
            if self._hashes[index] == _TOMBSTONE and tombstone < 0:
                tombstone = index
            step += 1
            index = (index + step) & self._mask
        return tombstone if tombstone >= 0 else index

    @staticmethod
    def _hash(key: str) -> int:
        value = str_hash(key)
        return value if value >= 2 else 2  # 0 and 1 mark unused and removed slots

    def add(self, key: str) -> None:
        """Insert ``key`` (a no-op when present)."""
        value = self._hash(key)
        index = self._lookup(key, value)
        if self._hashes[index] >= 2:
            return
        if self._hashes[index] == _UNUSED:
            self._occupied += 1
        self._keys[index] = key
        self._hashes[index] = value
        self._nodes += 1
        self._maybe_resize()

    def remove(self, key: str) -> None:
        """Remove ``key`` (a no-op when absent)."""
        value = self._hash(key)
        index = self._lookup(key, value)
        if self._hashes[index] < 2:
            return
        self._keys[index] = None
        self._hashes[index] = _TOMBSTONE
        self._nodes -= 1
        self._maybe_resize()

    def _maybe_resize(self) -> None:
        size, occupied = self._size, self._occupied
        if (size > self._nodes * 4 and size > 1 << _MIN_SHIFT) or size <= occupied + occupied // 16:
            self._resize()

    def _resize(self) -> None:
        # GLib rehashes in place; for the tables QEMU's containers hold that gives the
        # layout of inserting the live keys again in slot order.
        live = self.keys()
        target = int(self._nodes * 1.333)
        shift = 0
        while target:
            target >>= 1
            shift += 1
        self._set_shift(max(shift, _MIN_SHIFT))
        self._keys = [None] * self._size
        self._hashes = [_UNUSED] * self._size
        for key in live:
            index = self._lookup(key, self._hash(key))
            self._keys[index] = key
            self._hashes[index] = self._hash(key)
        self._occupied = self._nodes

    def keys(self) -> list[str]:
        """The keys in slot order (``g_hash_table_iter``'s order)."""
        return [k for k, v in zip(self._keys, self._hashes, strict=True) if v >= 2 and k]
