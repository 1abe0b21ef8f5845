"""Several VMs per test, the session server, and failures that explain themselves."""

from __future__ import annotations

import pytest

# Shared with pytester's inline runs rather than imported afresh by each of them.

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


def run(pytester: pytest.Pytester, body: str, *options: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=CLIENT + body)
    return pytester.runpytest("-p", "no:cacheprovider", *options)


def test_several_vms_in_one_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

def test_two_vms(make_qmp_server):
    from qmpsim.scenario.loader import loads_scenario

    built = make_qmp_server(loads_scenario("clock: startup\\nsteps: [{emit: POWERDOWN}]"))
    built.wait_scenario()
    built.assert_event_sent("POWERDOWN", count=0)  # no client yet: QEMU drops it
    web = make_qmp_server(vm={"name": "web"})
    db = make_qmp_server("watchdog-pause", name="db", strict=True)
    old = make_qmp_server(profile="qemu-0.14")
    assert len({web.path, db.path, old.path}) == 3
    assert session(web.path, "query-name")[1] == {"return": {"name": "web"}}
    assert "status" not in session(old.path, "query-status")[1]["return"]
    session(db.path, "cont")
    db.wait_scenario()
    web.assert_command_sent("query-name", count=1)
    db.assert_command_sent("cont")
""",
    )
    result.assert_outcomes(passed=1)


def test_each_server_of_the_factory_is_checked(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

def test_second_is_strict(make_qmp_server):
    lax = make_qmp_server()
    picky = make_qmp_server(name="picky", strict=True)
    session(lax.path, "stop")
    session(picky.path, "stop")

def test_bad_options(make_qmp_server):
    make_qmp_server(scenaro="tour")
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*qmpsim strict mode: the client did not do what the test expects*",
            "*unknown argument 'scenaro' (did you mean 'scenario'?)*",
        ]
    )


def test_the_session_server_is_reset_between_tests(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

paths = []

def test_first(qmp_session_server):
    paths.append(qmp_session_server.path)
    session(qmp_session_server.path, "stop")
    assert qmp_session_server.status == "paused"
    qmp_session_server.expect("stop")
    qmp_session_server.run_scenario("watchdog-pause")

def test_second(qmp_session_server):
    assert qmp_session_server.path == paths[0]  # the same server
    assert qmp_session_server.status == "running"  # a fresh VM
    assert len(qmp_session_server.transcript) == 0
    assert session(qmp_session_server.path, "query-status")[1]["return"]["running"]

def test_third_fails_its_own_expectation(qmp_session_server):
    qmp_session_server.expect("cont")
""",
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*cont (expect()): expected at least once, sent 0 times*"])


def test_a_failing_test_shows_its_transcript(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

def test_fails(qmp_server):
    session(qmp_server.path, "stop")
    assert False, "the agent misbehaved"

@pytest.mark.trio
async def test_trio_fails(trio_qmp_server):
    trio_qmp_server.emit("POWERDOWN")
    assert False

def test_passes(qmp_server):
    session(qmp_server.path, "stop")
""",
    )
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*- qmpsim transcript: qmp_server -*",
            '+0.000s client 1 <- {"QMP": {"version": {"qemu": *',
            '+*s client 1 -> {"execute": "qmp_capabilities"}',
            '+*s client 1 <- {"return": {}}',
            '+*s client 1 -> {"execute": "stop"}',
            '+*s client 1 <- {"timestamp": *, "event": "STOP"}',
            '+*s client 1 <- {"return": {}}',
            "*- qmpsim transcript: trio_qmp_server -*",
            "(nothing was sent or received)",
        ]
    )
    assert result.stdout.str().count("- qmpsim transcript: ") == 2


def test_traffic_goes_through_logging(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import logging

def test_caplog(qmp_server, caplog):
    caplog.set_level(logging.DEBUG, logger="qmpsim.traffic")
    session(qmp_server.path, "query-status")
    messages = [r.getMessage() for r in caplog.records if r.name == "qmpsim.traffic"]
    assert 'client 1 -> {"execute": "query-status"}' in messages
""",
    )
    result.assert_outcomes(passed=1)
    pytester.makepyfile(
        test_live=CLIENT
        + """
def test_live(qmp_server):
    session(qmp_server.path, "stop")
"""
    )
    # In a process of its own: a `qmpsim` command run in this one configures the
    # `qmpsim` logger for a terminal, as the command line does.
    live = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--log-cli-level=DEBUG", "test_live.py"
    )
    live.assert_outcomes(passed=1)
    live.stdout.fnmatch_lines(['*DEBUG*qmpsim.traffic*client 1 -> {"execute": "stop"}*'])


def test_exited_call_and_drawn_scenarios(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest
from hypothesis import HealthCheck, given, settings
from qmpsim.testing.strategies import scenarios

def test_exited(qmp_server):
    assert not qmp_server.exited
    session(qmp_server.path, "quit")
    qmp_server.wait_exited()
    assert qmp_server.exited

def test_call_passes_its_arguments(qmp_server):
    assert qmp_server.call(len, [1, 2]) == 2
    qmp_server.call(qmp_server.sim.override_reply, "query-name", {"name": "x"})
    assert session(qmp_server.path, "query-name")[1] == {"return": {"name": "x"}}

@pytest.mark.trio
async def test_trio_call(trio_qmp_server):
    assert trio_qmp_server.call(len, "abc") == 3
    assert not trio_qmp_server.exited

@settings(max_examples=3, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_a_drawn_scenario_plays(qmp_server, scenario):
    qmp_server.reset()
    qmp_server.run_scenario(scenario)
    assert scenario.to_yaml().startswith("name:")

@pytest.mark.qmpsim(timeout=0.01)
def test_marker_timeout(qmp_server):
    with pytest.raises(TimeoutError, match="within 0.01s"):
        qmp_server.wait_for_command("cont")
""",
    )
    result.assert_outcomes(passed=5)
