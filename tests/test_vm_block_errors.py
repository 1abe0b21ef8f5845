"""QEMU's block error policies and actions (qmpsim.vm.block_errors)."""

from __future__ import annotations

import json

from qmpsim.vm.block_errors import DISK_POLICIES, ErrorAction, OnError, error_action


def test_a_policy_gives_the_action_qemu_takes() -> None:
    for policy in (OnError.ENOSPC, OnError.AUTO):  # auto: block_job_error_action()'s twin
        assert error_action(policy, nospace=True) == ErrorAction.STOP
        assert error_action(policy, nospace=False) == ErrorAction.REPORT
    for policy, action in (("stop", "stop"), ("report", "report"), ("ignore", "ignore")):
        assert error_action(policy, nospace=True) == action


def test_the_sets_keep_qemus_spelling() -> None:
    assert json.dumps(list(DISK_POLICIES)) == '["report", "ignore", "stop", "enospc"]'
    assert [a.value for a in ErrorAction] == ["ignore", "report", "stop"]
