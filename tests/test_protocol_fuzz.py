"""Property: no input makes the protocol raise, hang or answer with anything but QMP lines."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qmpsim.qmp.profiles import QEMU_7_2
from qmpsim.qmp.protocol import Request, ServerConnection

_FRAGMENTS = st.sampled_from(
    [
        b'{"execute": "qmp_capabilities"}',
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
        b'{"execute": "query-status", "id": 1}',
        b'{"exec-oob": "stop", "id": [1]}',
        b'{"execute": "stop", "arguments": {"x": null}}',
        b"{'execute': 'cont'}",
        b'{"id": {}}',
        b"null",
        b"[1, 2",
        b"}",
        b"\xff",
        b"\n",
        b'"\\u0000"',
    ]
)
_CHUNKS = st.lists(st.one_of(_FRAGMENTS, st.binary(min_size=1, max_size=12)), max_size=12)


def _drain(conn: ServerConnection) -> list[bytes | Request]:
    out: list[bytes | Request] = []
    while (item := conn.next_request()) is not None:
        out.append(item)
    return out


@settings(derandomize=True, max_examples=300, deadline=None)
@given(chunks=_CHUNKS, split=st.integers(min_value=1, max_value=7))
def test_any_bytes_get_well_formed_answers(chunks: list[bytes], split: int) -> None:
    conn = ServerConnection(QEMU_7_2)
    conn.greeting()
    data = b"".join(chunks)
    items: list[bytes | Request] = []
    for start in range(0, len(data), split):
        conn.receive_data(data[start : start + split])
        items.extend(_drain(conn))
    for item in items:
        if isinstance(item, Request):
            item = conn.send_return(item, {})
        assert item.endswith(b"\r\n")
        assert item.count(b"\r\n") == 1
        reply: Any = json.loads(item)
        assert set(reply) <= {"return", "error", "id"}


@settings(derandomize=True, max_examples=100, deadline=None)
@given(chunks=_CHUNKS)
def test_split_points_do_not_change_answers(chunks: list[bytes]) -> None:
    whole = ServerConnection(QEMU_7_2)
    whole.greeting()
    whole.receive_data(b"".join(chunks))
    pieces = ServerConnection(QEMU_7_2)
    pieces.greeting()
    for chunk in chunks:
        pieces.receive_data(chunk)
    assert _drain(whole) == _drain(pieces)
