"""The encoder's fast path (json.dumps for plain values) writes exactly what the
general writer writes, for any value: QEMU's bytes either way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.qmp import json_writer

_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)
_plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(), _ascii)
_odd_scalars = st.one_of(
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["", 'a"b\\c', "\x7f", "\x1f", "é", "\U0001f600", "\ud800", "/"]),
)


def _nested(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> Any:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=25,
    )


_values = _nested(_plain_scalars, _ascii) | _nested(
    _plain_scalars | _odd_scalars, _ascii | st.text(max_size=5)
)


def _general(value: Any, monkeypatch: pytest.MonkeyPatch) -> bytes:
    with monkeypatch.context() as patch:
        patch.setattr(json_writer, "_plain", lambda value, depth: json_writer._NOT_PLAIN)
        return json_writer.encode(value)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(value=_values)
def test_fast_and_general_writers_agree(value: Any) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert json_writer.encode(value) == _general(value, monkeypatch)


def test_deep_values_take_the_general_writer() -> None:
    deep: Any = 0
    for _ in range(1024):
        deep = [deep]
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert json_writer.encode(deep) == _general(deep, monkeypatch)
    assert json_writer.encode(deep).startswith(b"[" * 1024 + b"0")
