"""Differential tests: the same bytes go to a real QEMU and to qmpsim's server.

Every case is one test id, run against each real QEMU and qmpsim with that QEMU's
profile.  Both sides see the greeting, the case's chunks and then the harness's
sync sequence; the replies must be identical after ``qemu_harness.mask``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from qemu_harness import Referee, mask, qemu_session_paced, simulator_session

NEG = b'{"execute": "qmp_capabilities"}'
NEG_OOB = b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'


@dataclass(frozen=True)
class Case:
    """One session: chunks written one by one, then (with ``sync``) the sync sequence."""

    id: str
    chunks: tuple[bytes, ...]
    sync: bool = True
    paced: tuple[int, ...] | None = None
    """Reply lines (greeting included) to wait for after each chunk."""
    unordered: bool = False
    """Compare lines as a multiset: QEMU races the reply against a main-loop event."""


def _case(
    case_id: str,
    *chunks: bytes,
    sync: bool = True,
    paced: tuple[int, ...] | None = None,
    unordered: bool = False,
) -> Case:
    return Case(case_id, chunks, sync, paced, unordered)


def _after_neg(case_id: str, *chunks: bytes) -> Case:
    return _case(case_id, NEG, *chunks)


def _oob(case_id: str, request: bytes) -> Case:
    return _case(case_id, NEG_OOB, request, paced=(2, 3))


_IDS: tuple[tuple[str, bytes], ...] = (
    ("string", b'"cookie#1"'),
    ("empty-string", b'""'),
    ("int", b"2"),
    ("negative-int", b"-17"),
    ("zero", b"0"),
    ("float", b"1.5"),
    ("true", b"true"),
    ("false", b"false"),
    ("null", b"null"),
    ("array", b'[1, "two", null]'),
    ("object", b'{"a": 1, "b": [true]}'),
    ("empty-object", b"{}"),
    ("nested", b'{"x": {"y": {"z": []}}}'),
    ("int64-max", b"9223372036854775807"),
    ("uint64-max", b"18446744073709551615"),
    ("beyond-uint64", b"36893488147419103232"),
    ("exponent", b"1e3"),
    ("negative-zero", b"-0.0"),
    ("escapes", b'"tab\\there \\"q\\" \\u00e9"'),
)

CASES: tuple[Case, ...] = (
    # --- greeting and commands refused before negotiation
    _case("greeting-only"),
    _case("pre-query-version", b'{"execute": "query-version"}'),
    _case("pre-query-status-with-id", b'{"execute": "query-status", "id": 42}'),
    _case("pre-unknown-command", b'{"execute": "no-such-cmd"}'),
    _case("pre-stop-with-bad-arguments", b'{"execute": "stop", "arguments": {"x": 1}}'),
    # --- malformed input before negotiation (qmp-test.c test_malformed)
    _case("pre-syntax-error", b"{]\n", b'{"execute": "no-such-cmd"}'),
    _case("pre-not-an-object", b"null"),
    _case("pre-array", b'["execute", "qmp_capabilities"]'),
    _case("pre-no-execute", b"{}"),
    _case("pre-execute-not-string", b'{"execute": true}'),
    _case("pre-arguments-not-object", b'{"execute": "no-such-cmd", "arguments": []}'),
    _case("pre-extra-key", b'{"execute": "no-such-cmd", "extra": true}'),
    _case("pre-exec-oob", b'{"exec-oob": "query-status", "id": 1}'),
    # --- capabilities negotiation
    _case("negotiate", NEG),
    _case("negotiate-with-id", b'{"execute": "qmp_capabilities", "id": "neg"}'),
    _case(
        "negotiate-explicit-empty-arguments", b'{"execute": "qmp_capabilities", "arguments": {}}'
    ),
    _case(
        "negotiate-enable-empty", b'{"execute": "qmp_capabilities", "arguments": {"enable": []}}'
    ),
    _case("negotiate-oob", NEG_OOB),
    _case(
        "negotiate-oob-twice-in-list",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "oob"]}}',
    ),
    _case(
        "negotiate-unknown-capability",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["cap-does-not-exist"]}}',
        NEG_OOB,
    ),
    _case(
        "negotiate-enable-not-array",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}',
    ),
    _case(
        "negotiate-enable-null", b'{"execute": "qmp_capabilities", "arguments": {"enable": null}}'
    ),
    _case(
        "negotiate-enable-element-not-string",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}',
    ),
    _case("negotiate-arguments-null", b'{"execute": "qmp_capabilities", "arguments": null}'),
    _case(
        "negotiate-unexpected-argument",
        b'{"execute": "qmp_capabilities", "arguments": {"oob": true}, "id": 3}',
    ),
    _case(
        "negotiate-two-unexpected",
        b'{"execute": "qmp_capabilities", "arguments": {"b": 1, "a": 2}}',
    ),
    _case(
        "negotiate-unexpected-beside-enable",
        b'{"execute": "qmp_capabilities", '
        b'"arguments": {"zeta": 1, "enable": ["oob"], "alpha": 2, "mid": 3}}',
    ),
    _case(
        "negotiate-bad-enable-and-unexpected",
        b'{"execute": "qmp_capabilities", "arguments": {"x": 1, "enable": [true]}}',
    ),
    _case("negotiate-twice", NEG, NEG),
    _case("negotiate-twice-oob", NEG, NEG_OOB),
    _case(
        "negotiate-twice-bad-arguments",
        NEG,
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}, "id": 9}',
    ),
    # --- command mode
    _after_neg("query-version", b'{"execute": "query-version", "id": 1}'),
    _after_neg("query-status", b'{"execute": "query-status"}'),
    _after_neg("query-status-empty-arguments", b'{"execute": "query-status", "arguments": {}}'),
    _after_neg("query-commands", b'{"execute": "query-commands", "id": "qc"}'),
    _after_neg(
        "stop-cont",
        b'{"execute": "stop", "id": 1}',
        b'{"execute": "query-status", "id": 2}',
        b'{"execute": "cont", "id": 3}',
    ),
    _after_neg("stop-twice", b'{"execute": "stop"}', b'{"execute": "stop"}'),
    _after_neg("cont-while-running", b'{"execute": "cont"}'),
    _after_neg("system-reset", b'{"execute": "system_reset", "id": "r"}'),
    _after_neg("unknown-command", b'{"execute": "no-such-cmd"}'),
    _after_neg("unknown-command-with-id", b'{"execute": "human-monitor-command", "id": 2}'),
    _after_neg("unexpected-argument", b'{"execute": "query-status", "arguments": {"x": 1}}'),
    _after_neg(
        "unexpected-argument-with-id",
        b'{"execute": "stop", "arguments": {"verbose": true}, "id": [1]}',
    ),
    # --- malformed input in command mode
    _after_neg("syntax-error-recovers", b"{]\n", b'{"execute": "no-such-cmd"}'),
    _after_neg("lexical-impossible-byte", b"{\xff", b'{"execute": "no-such-cmd"}'),
    _after_neg("lexical-control-char", b"{\x01", b'{"execute": "no-such-cmd"}'),
    _after_neg("lexical-bad-byte-in-string", b"{'bad \xff", b'{"execute": "no-such-cmd"}'),
    _after_neg(
        "lexical-newline-in-string",
        b"{'execute': 'nonexistent', 'id':'\n",
        b'{"execute": "no-such-cmd"}',
    ),
    _after_neg("lexical-interpolation", b"%p", b'{"execute": "no-such-cmd"}'),
    _after_neg("not-an-object", b"null"),
    _after_neg("string-value", b'"query-status"'),
    _after_neg("number-value", b"42"),
    _after_neg("no-execute", b"{}"),
    _after_neg("no-execute-with-id", b'{"id": 5, "arguments": {}}'),
    _after_neg("execute-not-string", b'{"execute": true}'),
    _after_neg("execute-not-string-with-id", b'{"execute": ["stop"], "id": "bad"}'),
    _after_neg("arguments-not-object", b'{"execute": "stop", "arguments": [], "id": 4}'),
    _after_neg("arguments-string", b'{"execute": "stop", "arguments": "x"}'),
    _after_neg("extra-key", b'{"execute": "no-such-cmd", "extra": true}'),
    _after_neg("extra-key-and-bad-execute", b'{"execute": 1, "extra": true, "id": 1}'),
    _after_neg("several-faults", b'{"arguments": 1, "execute": 2, "zzz": 3, "id": 1}'),
    _after_neg("exec-oob-not-negotiated", b'{"exec-oob": "query-status", "id": 1}'),
    _after_neg(
        "exec-oob-beside-execute-not-negotiated", b'{"execute": "stop", "exec-oob": "cont"}'
    ),
    _after_neg("control-member", b'{"execute": "stop", "control": {"run-oob": true}}'),
    _after_neg("single-quotes", b"{'execute': 'query-status', 'id': 'sq'}"),
    # --- ids of every JSON type
    *(
        _after_neg(f"id-{name}", b'{"execute": "query-status", "id": ' + value + b"}")
        for name, value in _IDS
    ),
    _after_neg("id-first", b'{"id": 1, "execute": "query-status"}'),
    _after_neg("id-on-error", b'{"execute": "no-such-cmd", "id": {"k": "v"}}'),
    _after_neg("id-unicode", b'{"execute": "query-status", "id": "caf\xc3\xa9 \\u2603"}'),
    # --- out-of-band execution
    _oob("oob-in-band-still-works", b'{"execute": "query-status", "id": 1}'),
    _oob("oob-command-without-oob-support", b'{"exec-oob": "stop", "id": "o1"}'),
    _oob("oob-unknown-command", b'{"exec-oob": "no-such-cmd", "id": "o2"}'),
    _oob("oob-not-a-string", b'{"exec-oob": 7, "id": "o3"}'),
    _oob("oob-with-execute", b'{"execute": "query-status", "exec-oob": "stop", "id": "o4"}'),
    _oob("oob-without-id", b'{"exec-oob": "query-status"}'),
    # --- framing: pipelined, split, blank lines
    _case(
        "pipelined",
        NEG + b'{"execute": "query-status", "id": 1}{"execute": "stop", "id": 2}'
        b'{"execute": "cont", "id": 3}',
    ),
    _case("pipelined-newlines", NEG + b"\n" + b'{"execute": "query-version"}\n' * 3),
    _case(
        "pipelined-across-negotiation",
        b'{"execute": "query-status", "id": 1}' + NEG + b'{"execute": "query-status", "id": 2}',
    ),
    _case("split-request", b'{"execute": "qmp_', b'capabilities", "id"', b": 1}"),
    _case("byte-by-byte", *(bytes([b]) for b in NEG)),
    _case("blank-lines", b"\n\n", NEG, b"\r\n\r\n", b'{"execute": "query-status"}', b"\n"),
    _case("whitespace-inside", b' {\n"execute" :\t"qmp_capabilities"\r\n}  '),
    # --- quit ends the session
    _after_neg("quit", b'{"execute": "quit", "id": "bye"}'),
)

_QUIT = ("quit",)


def _normalise(data: bytes, *, unordered: bool) -> bytes:
    data = mask(data)
    if unordered:
        data = b"".join(sorted(data.splitlines(keepends=True)))
    return data


def _steps(case: Case) -> list[tuple[bytes, int]]:
    return list(zip(case.chunks, case.paced or (0,) * len(case.chunks), strict=True))


def _effective(case: Case) -> Case:
    if case.id in _QUIT:
        # QEMU exits after quit, so no sync; its SHUTDOWN event races the reply.
        return Case(case.id, case.chunks, sync=False, paced=case.paced, unordered=True)
    return case


def test_case_count() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.qemu
@pytest.mark.parametrize("case", [_effective(c) for c in CASES], ids=lambda c: c.id)
def test_same_bytes_as_qemu(case: Case, referee: Referee) -> None:
    real = qemu_session_paced(_steps(case), sync=case.sync, referee=referee)
    simulated = simulator_session(_steps(case), sync=case.sync, profile=referee.profile)
    assert _normalise(simulated, unordered=case.unordered) == _normalise(
        real, unordered=case.unordered
    )
