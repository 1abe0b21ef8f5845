"""What a user of the plugin sees: strict-mode reports, marker mistakes, server-side errors."""

from __future__ import annotations

import pytest

# Imported here so that pytester's inline runs share these modules instead of
# importing fresh copies, whose classes would not match the ones already loaded.

pytest_plugins = ["pytester"]

CLIENT = '''
import json, socket

def session(path, *commands):
    """Negotiate, send each command, return the replies (events skipped)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        with sock.makefile("rwb") as f:
            f.readline()
            replies = []
            for command in ("qmp_capabilities", *commands):
                f.write(json.dumps({"execute": command}).encode())
                f.flush()
                while "event" in (message := json.loads(f.readline())):
                    pass
                replies.append(message)
            return replies
'''


def run(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=CLIENT + body)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_strict_mode_reports_unexpected_commands_and_unmet_expectations(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(scenario="disk-read-error-stop", strict=True)
def test_resume_after_io_error(qmp_server):
    session(qmp_server.path, "query-status", "system_reset", "query-block")
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_resume_after_io_error _*",
            "qmpsim strict mode: the client did not do what scenario 'disk-read-error-stop'"
            " (*scenarios/disk-read-error-stop.yaml) expects",
            "unexpected commands:",
            '  {"execute": "system_reset"}  (+*s)',
            "unmet expectations:",
            "  until cont (*disk-read-error-stop.yaml:18): the timeline never reached it",
            "  until cont (*disk-read-error-stop.yaml:22): the timeline never reached it",
            "commands expected: cont, qmp_capabilities (and query-*)",
            "commands sent, in order: qmp_capabilities, query-status, system_reset, query-block",
            "FAILED test_user.py::test_resume_after_io_error - Failed: qmpsim strict mode*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_allow_decides_what_strict_mode_tolerates(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(strict=True, allow=[])
def test_nothing_tolerated(qmp_server):
    session(qmp_server.path, "query-status")

@pytest.mark.qmpsim(strict=True, allow=["system_*"])
def test_patterns(qmp_server):
    session(qmp_server.path, "system_reset", "system_powerdown", "query-status")
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_nothing_tolerated _*",
            "unexpected commands:",
            '  {"execute": "query-status"}  (+*s)',
            "commands expected: qmp_capabilities",
            "*_ test_patterns _*",
            "unexpected commands:",
            '  {"execute": "query-status"}  (+*s)',
            "commands expected: qmp_capabilities (and system_*)",
        ]
    )


def test_marker_expectations_are_checked_without_strict_mode(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(expect=["stop", {"command": "cont", "count": 1}])
def test_missing(qmp_server):
    session(qmp_server.path, "stop", "query-status")

@pytest.mark.qmpsim(expect=["stop", "cont"], in_order=True)
def test_out_of_order(qmp_server):
    session(qmp_server.path, "cont", "stop")

@pytest.mark.qmpsim(expect=["stop", "cont"], in_order=True)
def test_in_order(qmp_server):
    session(qmp_server.path, "cont", "stop", "query-status", "cont")
    qmp_server.assert_command_sequence("stop", "cont")
""",
    )
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_missing _*",
            "qmpsim expectations: the client did not do what the test expects",
            "unmet expectations:",
            "  cont (marker): expected exactly 1 time, sent 0 times",
            "*_ test_out_of_order _*",
            "  in order (marker): expected the commands stop, cont in this order: no cont after"
            " stop; sent, in order: qmp_capabilities, cont, stop",
        ]
    )


def test_assert_command_sequence_says_what_is_missing(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

def test_sequence(qmp_server):
    session(qmp_server.path, "stop", "cont")
    qmp_server.assert_command_sequence("cont", ("stop", {}))
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: expected the commands cont, stop in this order: no stop after"
            " cont; sent, in order: qmp_capabilities, stop, cont",
        ]
    )


def test_strict_mode_passes_when_the_client_does_what_is_expected(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(vm={"disks": [{"name": "vda", "on_read_error": "stop"}]}, strict=True)
def test_resumes(qmp_server):
    qmp_server.expect("cont", count=1)
    qmp_server.allow("query-status")
    qmp_server.cause("disk-error", device="vda")
    replies = session(qmp_server.path, "query-status", "cont")
    assert replies[1]["return"]["status"] == "io-error"
    assert qmp_server.status == "running"
""",
    )
    result.assert_outcomes(passed=1)


def test_strict_mode_counts_expected_commands(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(strict=True)
def test_twice(qmp_server):
    qmp_server.expect("stop", count=1)
    qmp_server.expect("cont")
    session(qmp_server.path, "stop", "stop")
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "qmpsim strict mode: the client did not do what the test expects",
            "unmet expectations:",
            "  stop (expect()): expected exactly 1 time, sent 2 times",
            "  cont (expect()): expected at least once, sent 0 times",
        ]
    )


def test_a_failing_test_is_not_buried_under_a_strict_report(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(strict=True)
def test_fails(qmp_server):
    session(qmp_server.path, "query-status")
    assert False, "the test's own failure"
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the test's own failure*"])
    result.stdout.no_fnmatch_line("*strict mode*")


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("scenario='nope'", "cannot load the scenario: nope: no such file or shipped scenario*"),
        ("scenaro='tour'", "unknown argument 'scenaro' (did you mean 'scenario'?)*"),
        ("strict='yes'", "strict must be True or False, not 'yes'"),
        ("speed=0", "speed must be a positive number, not 0"),
        ("scenario='tour', vm={}", "give vm= or scenario=, not both*"),
        ("vm={'disks': [{'nmae': 'vda'}]}", "unknown key 'nmae' * (at vm.disks[[]0].nmae)"),
        ("profile='qemu-9'", "unknown value 'qemu-9' * (at profile)"),
    ],
)
def test_marker_mistakes_are_setup_errors_with_a_clear_message(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    result = run(
        pytester,
        f"""
import pytest

@pytest.mark.qmpsim({marker})
def test_configured(qmp_server):
    pass
""",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"@pytest.mark.qmpsim: {message}"])


def test_an_error_inside_the_server_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
def test_callback_breaks(qmp_server):
    def broken(request):
        raise ValueError("the callback broke")

    qmp_server.call(qmp_server.sim.on_command, "stop", broken)
    session(qmp_server.path, "stop")
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E * ValueError: the callback broke"])


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.qmpsim(scenario=None, *strict=False*"])


def test_strict_mode_reports_scripted_replies_left_unused(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        flaky="""
clock: startup
steps:
  - reply: query-status
    error: {class: GenericError, desc: "monitor busy"}
    times: 2
  - on: cont
    steps:
      - emit: POWERDOWN
""",
    )
    result = run(
        pytester,
        """
import pytest

@pytest.mark.qmpsim(scenario="flaky.yaml", strict=True)
def test_retries(qmp_server):
    qmp_server.wait_scenario()
    replies = session(qmp_server.path, "query-status", "cont")
    assert replies[1]["error"]["desc"] == "monitor busy"
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "qmpsim strict mode: the client did not do what scenario 'flaky' (flaky.yaml) expects",
            "unmet expectations:",
            "  reply to query-status (flaky.yaml:3): 2 times scripted, the client sent it 1 time",
            "commands expected: cont, qmp_capabilities, query-status (and query-*)",
        ]
    )
    result.stdout.no_fnmatch_line("unexpected commands:")


def test_a_scenario_file_is_found_beside_the_test(pytester: pytest.Pytester) -> None:
    pytester.mkdir("suite")
    (pytester.path / "suite" / "powerdown.yaml").write_text(
        "clock: startup\nsteps:\n  - emit: POWERDOWN\n"
    )
    (pytester.path / "suite" / "test_beside.py").write_text(
        CLIENT
        + """
import pytest

@pytest.mark.qmpsim(scenario="powerdown.yaml")
def test_marker(qmp_server):
    qmp_server.wait_scenario()
    qmp_server.assert_event_sent("POWERDOWN", count=0)  # before any client came

def test_run_scenario(qmp_server):
    qmp_server.run_scenario("powerdown.yaml")
    qmp_server.wait_scenario()
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "suite")
    result.assert_outcomes(passed=2)
