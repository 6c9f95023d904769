"""The chaos suite's short mode as a test: every fault once, under load.

Part of the suite CI runs (about 2.5 minutes); alone: ``pytest -m chaos
tests/integration/test_chaos.py``, and ``pytest -m 'not chaos'`` leaves it out.

``scripts/chaos.py --short`` starts a Kafka broker and a Redis of its own (other ports,
a folder of its own), so it never touches the stack the other tests share; the session
starts it in the background while the unit tests run (``chaos_run.py``). This
test runs the command and asserts its accounting scenario by scenario, from the figures
the command wrote: so a failure names the scenario and the invariant, not just an exit
code. Deadlines are the suite's own and generous; nothing here is timed.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from eddy.services.config.settings import PROJECT_ROOT
from tests import session_state
from tests.integration import chaos_run

pytestmark = pytest.mark.chaos

# The suite's pure modules (accounting, corpus, plan, report) carry doctests; pytest
# collects doctests only under streams/ and services/, so they are run here.
PURE_MODULES = ("chaos/plan.py", "chaos/corpus.py", "chaos/ledger.py", "chaos/report.py")
EXPECTED = {
    "kill-features",
    "kill-learner",
    "kill-predictor",
    "kill-retrainer",
    "kafka-restart",
    "redis-loss",
    "malformed-flood",
    "slow-retrain",
}


def test_the_accounting_doctests_pass() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "doctest", *PURE_MODULES],
        cwd=PROJECT_ROOT / "scripts",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def chaos() -> tuple[dict[str, Any], str]:
    report, output, code = chaos_run.session_run(session_state.folder()).result()
    assert report, f"the suite wrote no figures (exit {code}):\n{output}"
    assert (code == 0) == report["passed"], output
    return report, output


def _scenarios(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["scenario"]: s for s in report["scenarios"]}


def test_every_fault_was_played(chaos: tuple[dict[str, Any], str]) -> None:
    report, output = chaos
    assert set(_scenarios(report)) == EXPECTED | {"all"}, output


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_events_are_applied_or_dead_lettered_never_lost_or_counted_twice(
    chaos: tuple[dict[str, Any], str], scenario: str
) -> None:
    report, output = chaos
    s = _scenarios(report)[scenario]
    assert s["events_in"] > 0, output
    assert s["events_in"] == s["applied"] + s["dead_lettered"], output
    assert s["lost"] == 0, output
    assert s["double_counted"] == 0, output
    assert s["state_mismatches"] == 0, output


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_examples_are_learned_once_and_requests_answered_alike(
    chaos: tuple[dict[str, Any], str], scenario: str
) -> None:
    report, output = chaos
    s = _scenarios(report)[scenario]
    assert s["examples_learned"] == s["examples_expected"] > 0, output
    assert s["answered"] == s["requests_in"] > 0, output
    assert s["repeated_answers"] <= s["repeat_bound"], output
    assert s["differing_repeats"] == 0, output


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_registry_versions_have_causes_of_their_own(
    chaos: tuple[dict[str, Any], str], scenario: str
) -> None:
    report, output = chaos
    s = _scenarios(report)[scenario]
    assert s["duplicate_versions"] == 0, output
    assert all(count == 1 for count in s["alert_retrains"]), output


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_processing_resumes_by_itself(chaos: tuple[dict[str, Any], str], scenario: str) -> None:
    report, output = chaos
    s = _scenarios(report)[scenario]
    assert s["recovered_s"] is not None, output
    assert s["problems"] == [], output


def test_the_flood_is_dead_lettered_without_a_crash(chaos: tuple[dict[str, Any], str]) -> None:
    report, output = chaos
    flood = _scenarios(report)["malformed-flood"]
    assert flood["dead_lettered"] > 0, output
    assert flood["unplanned_restarts"] == 0, output


def test_the_whole_run_learned_nothing_twice_and_ended_caught_up(
    chaos: tuple[dict[str, Any], str],
) -> None:
    report, output = chaos
    total = _scenarios(report)["all"]
    assert total["notes"]["learned_twice"] == 0, output
    assert total["lag"] == 0, output
    assert report["passed"], output
