"""The two fixture façades, ``qmp_server`` (sync) and ``trio_qmp_server`` (trio), agree.

Both are thin faces of one fixture core; this keeps them from drifting apart: the
same methods with the same parameters, the waits awaited on the trio side, and the
differences that belong to one side only named here with their reason.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from qmpsim.testing.pytest_plugin import QmpServer, TrioQmpServer

# What one façade has and the other has not, and why.
ONLY_SYNC = {
    "path": "the sync server listens on a socket; the trio one hands out in-memory streams",
    "address": "as path",
    "sim": "the trio server sets it on the instance (the test's own trio run owns it)",
    "wait_exited": "in trio, await server.sim.wait_exited() directly",
    "disconnect": "in trio, close the stream that open_stream() gave",
}
ONLY_TRIO = {
    "open_stream": "a client's end of an in-memory connection, for code in the same trio run",
}
# The sync waits take a timeout; in trio the caller's cancel scope bounds them.
SYNC_ONLY_PARAMETERS = {"timeout"}


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_the_facades_have_the_same_names_but_the_listed_ones() -> None:
    sync, trio_ = _public(QmpServer), _public(TrioQmpServer)
    assert sync - trio_ == set(ONLY_SYNC)
    assert trio_ - sync == set(ONLY_TRIO)


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(fn)
    return [
        (p.name, p.kind, p.default)
        for p in signature.parameters.values()
        if p.name not in SYNC_ONLY_PARAMETERS
    ]


@pytest.mark.parametrize("name", sorted(_public(QmpServer) & _public(TrioQmpServer)))
def test_a_shared_name_takes_the_same_arguments(name: str) -> None:
    sync, trio_ = (
        inspect.getattr_static(QmpServer, name),
        inspect.getattr_static(TrioQmpServer, name),
    )
    assert isinstance(sync, property) == isinstance(trio_, property), name
    if isinstance(sync, property):
        return
    assert _parameters(sync) == _parameters(trio_), name
    # a wait blocks on the sync side and is awaited on the trio side
    assert not inspect.iscoroutinefunction(sync)
    awaited = name.startswith("wait_") or name == "run_scenario"
    assert inspect.iscoroutinefunction(trio_) == awaited, name


def test_the_sync_fixture_offers_what_the_background_simulator_does() -> None:
    # Two threads that serve a simulator: BackgroundSimulator for any code, the sync
    # fixture's own (its calls also work from a trio thread, and failures reach the
    # test).  Whoever knows one knows the other: address, sim and call mean the same.
    from qmpsim.runtime.background import BackgroundSimulator

    assert _public(BackgroundSimulator) - _public(QmpServer) == {"run"}  # the waits, named
    for name in ("call",):
        assert _parameters(getattr(BackgroundSimulator, name)) == _parameters(
            getattr(QmpServer, name)
        )
