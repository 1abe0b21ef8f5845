"""docs/strategies.md: its example finds the planted bug, and shrinks to what the page shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "strategies.md"


def blocks(language: str, containing: str = "") -> list[str]:
    found = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)
    return [block for block in found if containing in block]


def test_the_example_finds_the_bug_and_shrinks_it() -> None:
    (code,) = blocks("python", "check_tracker")
    namespace: dict[str, Any] = {"__name__": "strategies_doc_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    failing: list[list[dict[str, Any]]] = []
    check_tracker = namespace["check_tracker"]

    def recording(stream: list[dict[str, Any]]) -> None:
        try:
            check_tracker(stream)
        except AssertionError:
            failing.append(stream)
            raise

    namespace["check_tracker"] = recording
    with pytest.raises(AssertionError):
        namespace["test_tracker_follows_disk_pauses"]()
    # Hypothesis replays the shrunk example last
    shrunk = failing[-1]
    (shown,) = blocks("text")
    assert shrunk == [json.loads(line) for line in shown.splitlines()]
    assert [e["event"] for e in shrunk] == ["BLOCK_IO_ERROR", "STOP"]


def test_a_correct_tracker_passes() -> None:
    (code,) = blocks("python", "check_tracker")
    fixed = code.replace(
        "            self.paused_by_disk = False  # the bug: this STOP is the disk error's own\n",
        "",
    )
    assert fixed != code
    namespace: dict[str, Any] = {"__name__": "strategies_doc_fixed"}
    exec(compile(fixed, str(DOC), "exec"), namespace)
    namespace["test_tracker_follows_disk_pauses"]()


def test_the_request_fuzzing_example_runs() -> None:
    (code,) = blocks("python", "requests(")
    encoded: list[str] = []

    def my_client_encode(command: str, arguments: dict[str, Any]) -> str:
        message: dict[str, Any] = {"execute": command}
        if arguments or command in {"block_resize", "eject"}:
            message["arguments"] = arguments
        encoded.append(json.dumps(message))
        return encoded[-1]

    namespace: dict[str, Any] = {"json": json, "my_client_encode": my_client_encode}
    exec(compile(code, str(DOC), "exec"), namespace)
    test = namespace["test_encoder_keeps_broken_requests"]
    with pytest.raises(AssertionError):
        test()  # an encoder that sends an empty object where none was given is caught
    assert encoded
