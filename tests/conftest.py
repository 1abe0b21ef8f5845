from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_fd_limit() -> Iterator[None]:
    """Put RLIMIT_NOFILE back after each test: a fleet (or a test) raises the soft
    limit, and later tests must run under the limit the machine really gives."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    if resource.getrlimit(resource.RLIMIT_NOFILE) != limits:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
