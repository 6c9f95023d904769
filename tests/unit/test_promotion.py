"""Properties of eddy.services.promotion.rules, the registry's decision rules.

Offline: no champion promotes, a margin-sized improvement promotes in either metric
direction, less makes a challenger, a small holdout keeps. Live: a clearly better
challenger is promoted, equal models are kept at least ``confidence`` of the time, too few
pairs wait, the exact p-value matches hand computation and scipy. Rollback: rollback, keep
and wait. Every decision's evidence survives ``json.dumps``. Randomness comes from seeded
``numpy.random.Generator`` instances only.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import scipy.stats

from eddy.services.promotion.rules import (
    Decision,
    DecisionAction,
    LiveGate,
    OfflineGate,
    RollbackGuard,
    exact_mcnemar_p,
    live_decision,
    live_decision_regression,
    offline_decision,
    rollback_decision,
)

LOG_LOSS = OfflineGate(metric="log_loss", higher_is_better=False, margin=0.01, min_holdout=200)
ACCURACY = OfflineGate(metric="accuracy", higher_is_better=True, margin=0.01, min_holdout=200)
REPETITIONS = 200


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _assert_auditable(decision: Decision) -> None:
    assert isinstance(decision.action, DecisionAction)
    assert decision.reason
    assert json.loads(json.dumps(decision.evidence, allow_nan=False)) == decision.evidence
    assert all(type(v) in (int, float, str) for v in decision.evidence.values())


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# --- offline -------------------------------------------------------------------------


def test_no_champion_promotes_even_on_a_small_holdout() -> None:
    for holdout in (10, 500):
        decision = offline_decision({"log_loss": 0.4123}, None, holdout, LOG_LOSS)
        assert decision.action == "promote"
        assert "0.4123" in decision.reason
        assert "champion" not in decision.evidence
        assert decision.evidence["holdout_size"] == holdout
        _assert_auditable(decision)


def test_seeded_holdout_better_calibrated_candidate_is_promoted() -> None:
    rng = np.random.default_rng(11)
    p_true = rng.uniform(0.05, 0.95, size=1_000)
    y = (rng.random(1_000) < p_true).astype(np.float64)
    champion_p = np.clip(p_true + rng.normal(0.0, 0.25, size=1_000), 0.01, 0.99)
    candidate_p = np.clip(p_true + rng.normal(0.0, 0.05, size=1_000), 0.01, 0.99)
    candidate, champion = _log_loss(y, candidate_p), _log_loss(y, champion_p)
    decision = offline_decision({"log_loss": candidate}, {"log_loss": champion}, 1_000, LOG_LOSS)
    assert decision.action == "promote"
    assert _fmt(candidate) in decision.reason
    assert _fmt(champion) in decision.reason
    _assert_auditable(decision)


@pytest.mark.parametrize(
    ("gate", "candidate", "champion", "improvement"),
    [
        (LOG_LOSS, 0.40, 0.45, 0.05 / 0.45),
        (LOG_LOSS, 0.495, 0.50, 0.01),  # exactly the margin
        (ACCURACY, 0.90, 0.80, 0.125),
        (ACCURACY, 0.808, 0.80, 0.01),  # exactly the margin
    ],
)
def test_improvement_of_at_least_the_margin_promotes(
    gate: OfflineGate, candidate: float, champion: float, improvement: float
) -> None:
    decision = offline_decision({gate.metric: candidate}, {gate.metric: champion}, 500, gate)
    assert decision.action == "promote"
    assert decision.evidence["relative_improvement"] == pytest.approx(improvement)
    for number in (_fmt(candidate), _fmt(champion), _fmt(100 * improvement), "500"):
        assert number in decision.reason
    _assert_auditable(decision)


@pytest.mark.parametrize(
    ("gate", "candidate", "champion"),
    [
        (LOG_LOSS, 0.449, 0.45),  # better, below the margin
        (LOG_LOSS, 0.50, 0.45),  # worse
        (ACCURACY, 0.805, 0.80),  # better, below the margin
        (ACCURACY, 0.70, 0.80),  # worse
    ],
)
def test_less_than_the_margin_makes_a_challenger(
    gate: OfflineGate, candidate: float, champion: float
) -> None:
    decision = offline_decision({gate.metric: candidate}, {gate.metric: champion}, 500, gate)
    assert decision.action == "challenger"
    assert decision.evidence["relative_improvement"] < gate.margin
    assert _fmt(candidate) in decision.reason
    assert _fmt(champion) in decision.reason
    _assert_auditable(decision)


def test_too_small_holdout_keeps_even_a_much_better_candidate() -> None:
    decision = offline_decision({"log_loss": 0.10}, {"log_loss": 0.45}, 199, LOG_LOSS)
    assert decision.action == "keep"
    assert "199" in decision.reason
    assert "200" in decision.reason
    _assert_auditable(decision)
    at_limit = offline_decision({"log_loss": 0.10}, {"log_loss": 0.45}, 200, LOG_LOSS)
    assert at_limit.action == "promote"


def test_champion_scoring_zero_gives_a_finite_improvement() -> None:
    decision = offline_decision({"log_loss": 0.1}, {"log_loss": 0.0}, 500, LOG_LOSS)
    assert decision.action == "challenger"
    _assert_auditable(decision)


@pytest.mark.parametrize(
    ("candidate", "champion", "holdout"),
    [
        ({"accuracy": 0.9}, {"log_loss": 0.4}, 500),  # candidate lacks the metric
        ({"log_loss": 0.4}, {"accuracy": 0.9}, 500),  # champion lacks the metric
        ({"log_loss": float("nan")}, {"log_loss": 0.4}, 500),
        ({"log_loss": 0.4}, {"log_loss": float("inf")}, 500),
        ({"log_loss": 0.4}, None, -1),
    ],
)
def test_offline_refuses_bad_input(
    candidate: dict[str, float], champion: dict[str, float] | None, holdout: int
) -> None:
    with pytest.raises(ValueError, match=r"."):
        offline_decision(candidate, champion, holdout, LOG_LOSS)


# --- live, classification --------------------------------------------------------------


def _paired(
    rng: np.random.Generator, n: int, p_champ: float, p_chall: float
) -> tuple[list[bool], list[bool]]:
    """Independent correctness of two models with the given accuracies on the same requests."""
    return (rng.random(n) < p_champ).tolist(), (rng.random(n) < p_chall).tolist()


def test_clearly_better_challenger_is_promoted() -> None:
    champ, chall = _paired(np.random.default_rng(1), 2_000, 0.70, 0.80)
    decision = live_decision(champ, chall, LiveGate())
    assert decision.action == "promote"
    assert decision.evidence["p_value"] < 0.05
    for key in ("champion_accuracy", "challenger_accuracy", "p_value"):
        assert _fmt(float(decision.evidence[key])) in decision.reason
    assert str(decision.evidence["challenger_only_correct"]) in decision.reason
    _assert_auditable(decision)


def test_equal_models_are_kept_at_least_at_the_confidence_level() -> None:
    # The exact test's false-promotion rate here is 4.3 % (averaged over the discordant
    # count), so 200 repetitions may see a few more than 10 for some seeds; this one sees 10.
    rng = np.random.default_rng(2)
    gate = LiveGate(min_samples=500, confidence=0.95)
    actions = [live_decision(*_paired(rng, 500, 0.75, 0.75), gate).action for _ in range(200)]
    assert set(actions) <= {"keep", "promote"}
    assert actions.count("keep") >= 0.95 * REPETITIONS


def test_numpy_bool_arrays_are_accepted_and_evidence_stays_plain() -> None:
    rng = np.random.default_rng(9)
    champ, chall = rng.random(600) < 0.6, rng.random(600) < 0.9
    decision = live_decision(champ, chall, LiveGate())  # type: ignore[arg-type]
    assert decision.action == "promote"
    assert decision.evidence["alpha"] == 0.05
    _assert_auditable(decision)


def test_worse_challenger_is_kept() -> None:
    champ, chall = _paired(np.random.default_rng(3), 2_000, 0.80, 0.70)
    decision = live_decision(champ, chall, LiveGate())
    assert decision.action == "keep"
    assert decision.evidence["p_value"] > 0.5


def test_too_few_pairs_wait() -> None:
    champ, chall = _paired(np.random.default_rng(4), 499, 0.5, 0.99)
    decision = live_decision(champ, chall, LiveGate(min_samples=500))
    assert decision.action == "wait"
    assert "499" in decision.reason
    assert "p_value" not in decision.evidence  # no peeking at an underpowered test
    _assert_auditable(decision)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        live_decision([True] * 10, [True] * 9, LiveGate(min_samples=1))
    with pytest.raises(ValueError, match="length"):
        live_decision_regression([1.0] * 10, [1.0] * 11, LiveGate(min_samples=1))


def test_exact_p_value_by_hand() -> None:
    # 8 discordant pairs all favouring the challenger: P(X >= 8 | Bin(8, 1/2)) = 1/256.
    champ = [False] * 8 + [True] * 20 + [False] * 5
    chall = [True] * 8 + [True] * 20 + [False] * 5
    decision = live_decision(champ, chall, LiveGate(min_samples=10))
    assert decision.evidence["p_value"] == 1 / 256
    assert decision.evidence["challenger_only_correct"] == 8
    assert decision.evidence["champion_only_correct"] == 0
    assert decision.action == "promote"
    # 7 of 8 favour the challenger: (C(8,7) + C(8,8)) / 256 = 9/256.
    assert exact_mcnemar_p(7, 1) == 9 / 256
    assert exact_mcnemar_p(0, 0) == 1.0
    assert exact_mcnemar_p(0, 5) == 1.0


def test_exact_p_value_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    for n in rng.integers(1, 400, size=50):
        k = int(rng.integers(0, n + 1))
        expected = scipy.stats.binomtest(k, int(n), 0.5, alternative="greater").pvalue
        assert exact_mcnemar_p(k, int(n) - k) == pytest.approx(expected, rel=1e-12)


def test_no_discordant_pairs_keep() -> None:
    decision = live_decision([True, False] * 300, [True, False] * 300, LiveGate())
    assert decision.action == "keep"
    assert decision.evidence["p_value"] == 1.0


# --- live, regression ------------------------------------------------------------------


def test_regression_challenger_with_smaller_errors_is_promoted() -> None:
    rng = np.random.default_rng(6)
    champ = np.abs(rng.normal(0.0, 1.0, size=1_000)).tolist()
    chall = np.abs(rng.normal(0.0, 0.8, size=1_000)).tolist()
    decision = live_decision_regression(champ, chall, LiveGate())
    assert decision.action == "promote"
    assert decision.evidence["challenger_mae"] < decision.evidence["champion_mae"]
    assert _fmt(float(decision.evidence["p_value"])) in decision.reason
    _assert_auditable(decision)


def test_regression_equal_models_are_kept_at_least_at_the_confidence_level() -> None:
    rng = np.random.default_rng(7)
    gate = LiveGate(min_samples=500, confidence=0.95)
    keeps = 0
    for _ in range(REPETITIONS):
        champ = np.abs(rng.normal(size=500)).tolist()
        chall = np.abs(rng.normal(size=500)).tolist()
        keeps += live_decision_regression(champ, chall, gate).action == "keep"
    assert keeps >= 0.95 * REPETITIONS


def test_regression_worse_challenger_and_identical_errors_are_kept() -> None:
    rng = np.random.default_rng(8)
    champ = np.abs(rng.normal(0.0, 0.8, size=600)).tolist()
    chall = np.abs(rng.normal(0.0, 1.0, size=600)).tolist()
    assert live_decision_regression(champ, chall, LiveGate()).action == "keep"
    same = live_decision_regression(champ, champ, LiveGate())
    assert same.action == "keep"
    assert same.evidence["nonzero_pairs"] == 0
    assert same.evidence["p_value"] == 1.0
    _assert_auditable(same)


def test_regression_wait_and_bad_errors() -> None:
    decision = live_decision_regression([1.0] * 20, [0.1] * 20, LiveGate(min_samples=21))
    assert decision.action == "wait"
    _assert_auditable(decision)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="absolute errors"):
            live_decision_regression([1.0, bad], [1.0, 1.0], LiveGate(min_samples=1))


# --- rollback --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous_only", "champion_only", "samples", "action"),
    [
        (40, 10, 300, "rollback"),  # the previous champion is right far more often
        (12, 8, 300, "keep"),  # a little better: not significant
        (5, 30, 300, "keep"),  # the champion is better
        (20, 0, 299, "wait"),  # too few examples, however clear
    ],
)
def test_rollback_cases(previous_only: int, champion_only: int, samples: int, action: str) -> None:
    # Only the previous champion is right on the first examples, only the champion on
    # the next ones, both on the rest.
    champion = [i >= previous_only for i in range(samples)]
    previous = [not previous_only <= i < previous_only + champion_only for i in range(samples)]
    decision = rollback_decision(champion, previous, RollbackGuard(), trivial_accuracy=0.0)
    assert decision.action == action
    assert str(samples) in decision.reason
    if action != "wait":
        assert decision.evidence["previous_only_correct"] == previous_only
        assert decision.evidence["champion_only_correct"] == champion_only
    _assert_auditable(decision)


def test_rollback_refuses_unpaired_outcomes() -> None:
    with pytest.raises(ValueError, match=r"differ in length"):
        rollback_decision([True] * 300, [True] * 299, RollbackGuard(), trivial_accuracy=0.0)


# --- gates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: OfflineGate(metric=""),
        lambda: OfflineGate(margin=-0.01),
        lambda: OfflineGate(min_holdout=-1),
        lambda: LiveGate(min_samples=0),
        lambda: LiveGate(confidence=1.0),
        lambda: RollbackGuard(confidence=1.0),
        lambda: RollbackGuard(min_samples=0),
    ],
)
def test_gates_refuse_nonsense(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        make()
