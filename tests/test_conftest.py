"""The suite's own fixtures (tests/conftest.py) do what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def test_a_changed_fd_limit_is_put_back_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        test_limits="""
        import resource

        SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)

        def test_changes_it():
            resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT - 1, HARD))  # always allowed

        def test_runs_under_the_real_limit():
            assert resource.getrlimit(resource.RLIMIT_NOFILE) == (SOFT, HARD)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly").assert_outcomes(passed=2)
