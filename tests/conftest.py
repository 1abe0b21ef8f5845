from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest
from qemu_harness import REFEREES, Referee, require_qemu


@pytest.fixture(autouse=True)
def _restore_fd_limit() -> Iterator[None]:
    """Put RLIMIT_NOFILE back after each test: a fleet (or a test) raises the soft
    limit, and later tests must run under the limit the machine really gives."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    if resource.getrlimit(resource.RLIMIT_NOFILE) != limits:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


@pytest.fixture(params=REFEREES, ids=str)
def referee(request: pytest.FixtureRequest) -> Referee:
    """Each real QEMU in turn (installed, or the test fails under CI=true)."""
    chosen: Referee = request.param
    require_qemu(chosen)
    return chosen


@pytest.fixture(params=REFEREES, ids=str)
def real_qemu(request: pytest.FixtureRequest) -> Referee:
    """Each real QEMU in turn, for tests whose expectation needs no qmpsim profile."""
    chosen: Referee = request.param
    require_qemu(chosen)
    return chosen
