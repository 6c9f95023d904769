"""Properties of the retrainer's choice rules in eddy.services.promotion.rules.

The trivial baseline (majority class accuracy and the training prior's log loss for a
classifier; the training mean's MAE for a regressor) is computed by hand; best_contender
never returns a contender that does not strictly beat it, in either metric direction;
paired_promotion keeps a promotion only when the winner is significantly better on the
same examples (two splits with the same accuracies but different pairings decide
differently) and downgrades it to "challenger" otherwise; rollback_decision judges the
champion against the previous one on the same recent examples, never against its own
old holdout figure. Randomness comes from seeded ``random.Random`` instances only.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from eddy.services.promotion.rules import (
    CHALLENGER,
    KEEP,
    PROMOTE,
    ROLLBACK,
    WAIT,
    Decision,
    OfflineGate,
    PairedGate,
    RollbackGuard,
    best_contender,
    exact_mcnemar_p,
    paired_promotion,
    rollback_decision,
    significantly_above_majority,
    significantly_below_majority,
    trivial_scores,
)


def _paired(
    both: int, only_a: int, only_b: int, neither: int, seed: int = 0
) -> tuple[list[bool], list[bool]]:
    """Correctness of models a and b on the same examples, in a shuffled order."""
    pairs = (
        [(True, True)] * both
        + [(True, False)] * only_a
        + [(False, True)] * only_b
        + [(False, False)] * neither
    )
    random.Random(seed).shuffle(pairs)
    return [a for a, _ in pairs], [b for _, b in pairs]


def _promote() -> Decision:
    return Decision(PROMOTE, "Candidate log_loss 0.4 vs champion 0.45: promote.", {"margin": 0.01})


# trivial_scores


def test_trivial_scores_of_a_binary_classifier_are_the_majority_and_the_prior() -> None:
    train = [True] * 7 + [False] * 3
    holdout = [True] * 6 + [False] * 4
    scores = trivial_scores(train, holdout)
    assert set(scores) == {"accuracy", "log_loss", "roc_auc"}
    assert scores["roc_auc"] == 0.5  # one score for all: chance
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["log_loss"] == pytest.approx(-(6 * math.log(0.7) + 4 * math.log(0.3)) / 10)


def test_a_roc_auc_gate_has_its_floor_and_a_metric_without_one_has_none() -> None:
    gate = OfflineGate(metric="roc_auc", higher_is_better=True)
    trivial = trivial_scores([True, False, True], [True, False])
    assert best_contender({"a": {"roc_auc": 0.5}, "b": {"roc_auc": 0.8}}, trivial, gate) == "b"
    assert best_contender({"a": {"roc_auc": 0.4}}, trivial, gate) is None
    multiclass = trivial_scores(["a", "b", "c"], ["a"])  # no ROC AUC for three classes
    assert best_contender({"a": {"roc_auc": 0.4}}, multiclass, gate) == "a"


def test_trivial_scores_of_a_multiclass_classifier_use_the_training_frequencies() -> None:
    train = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    holdout = ["b", "a", "c", "a"]
    scores = trivial_scores(train, holdout)
    assert scores["accuracy"] == pytest.approx(0.5)  # "a", the training majority
    expected = -(math.log(0.3) + 2 * math.log(0.5) + math.log(0.2)) / 4
    assert scores["log_loss"] == pytest.approx(expected)


def test_trivial_scores_take_the_majority_of_the_training_labels_not_the_holdout() -> None:
    scores = trivial_scores([0] * 6 + [1] * 4, [1] * 9 + [0])
    assert scores["accuracy"] == pytest.approx(0.1)
    assert scores["log_loss"] == pytest.approx(-(9 * math.log(0.4) + math.log(0.6)) / 10)


def test_trivial_log_loss_of_a_class_unseen_in_training_is_large_but_finite() -> None:
    scores = trivial_scores(["a", "a", "b"], ["c", "a"])
    assert scores["accuracy"] == pytest.approx(0.5)
    assert math.isfinite(scores["log_loss"])
    assert scores["log_loss"] == pytest.approx(-(math.log(1e-15) + math.log(2 / 3)) / 2)


def test_trivial_score_of_a_regressor_is_the_mae_of_the_training_mean() -> None:
    scores = trivial_scores([1.5, 2.5, 4.25], [2.0, 5.0, 2.75])  # training mean 2.75
    assert set(scores) == {"mae"}
    assert scores["mae"] == pytest.approx((0.75 + 2.25 + 0.0) / 3)
    # The mean of the training labels, not of the holdout (whose mean gives 1.0 here).
    assert trivial_scores([0.5, 1.5], [0.0, 4.0])["mae"] == pytest.approx(2.0)


def test_trivial_scores_need_labels() -> None:
    with pytest.raises(ValueError, match="need labels"):
        trivial_scores([], [True])
    with pytest.raises(ValueError, match="need labels"):
        trivial_scores([True], [])


# best_contender


@pytest.mark.parametrize(
    "gate",
    [OfflineGate(metric="accuracy", higher_is_better=True), OfflineGate(metric="log_loss")],
    ids=["accuracy", "log_loss"],
)
def test_best_contender_never_returns_one_that_does_not_beat_the_trivial_baseline(
    gate: OfflineGate,
) -> None:
    rng = random.Random(3)
    sign = 1.0 if gate.higher_is_better else -1.0
    returned = 0
    for _ in range(500):
        trivial = {gate.metric: rng.choice([0.5, 0.6, 0.7])}
        contenders = {
            f"c{k}": {gate.metric: rng.choice([0.4, 0.5, 0.6, 0.7, 0.8])}
            for k in range(rng.randint(1, 5))
        }
        best = best_contender(contenders, trivial, gate)
        beating = [
            name
            for name, scores in contenders.items()
            if sign * (scores[gate.metric] - trivial[gate.metric]) > 0
        ]
        if not beating:
            assert best is None, (contenders, trivial)
            continue
        returned += 1
        assert best in beating
        top = max(sign * contenders[name][gate.metric] for name in beating)
        assert sign * contenders[best][gate.metric] == top
    assert returned > 100  # both branches were exercised


def test_the_best_contender_is_none_when_even_the_best_only_ties_the_baseline() -> None:
    gate = OfflineGate(metric="log_loss")
    contenders = {"candidate": {"log_loss": 0.7}, "champion": {"log_loss": 0.69}}
    assert best_contender(contenders, {"log_loss": 0.69}, gate) is None
    assert best_contender(contenders, {"log_loss": 0.695}, gate) == "champion"


def test_a_fit_right_significantly_more_often_than_the_majority_class_clears_the_floor() -> None:
    # Mid-change (gradual drift, seed 1 of the recovery benchmark): the fit's log loss
    # (0.749) is above the training priors' (0.7245). Here it is right on 37 of 63
    # held-out examples, always answering their own majority label (True) on 32.
    labels = [True] * 32 + [False] * 31
    fit_right = [True] * 32 + [True] * 5 + [False] * 26
    assert significantly_above_majority(fit_right, labels, 0.95)
    gate = OfflineGate(metric="log_loss")
    contenders = {"candidate": {"log_loss": 0.749}, "old": {"log_loss": 1.52}}
    assert best_contender(contenders, {"log_loss": 0.7245}, gate) is None
    assert best_contender(contenders, {"log_loss": 0.7245}, gate, {"candidate"}) == "candidate"
    # Right as often as the majority class, but on other examples: not cleared.
    swapped = [True] + [False] * 31 + [True] * 31
    assert not significantly_above_majority(swapped, labels, 0.95)


def test_the_floor_is_the_holdouts_own_majority_not_the_training_windows() -> None:
    """The training window's majority (True) was right on 23 of 63 held-out examples
    and a fit right on 37 cleared the floor against it, while always answering the
    holdout's own majority (False) was right on 40: a fit worse than a constant."""
    labels = [True] * 23 + [False] * 40
    fit_right = [True] * 20 + [False] * 3 + [True] * 17 + [False] * 23
    assert sum(fit_right) == 37
    assert not significantly_above_majority(fit_right, labels, 0.95)
    # A champion right on 20 of the 63 is significantly below the holdout's majority
    # (40), though not below the training window's (23).
    champion_right = [True] * 20 + [False] * 43
    assert significantly_below_majority(champion_right, labels, 0.95)


# paired_promotion


def test_a_promotion_the_same_examples_do_not_support_becomes_a_challenger() -> None:
    # 200 held-out examples: the winner is right on 10 the champion gets wrong, the
    # champion on 5 the winner gets wrong: p = P(X >= 10 | 15 discordant) ~ 0.15.
    winner, champion = _paired(150, 10, 5, 35)
    decision = paired_promotion(_promote(), winner, champion, PairedGate())
    assert decision.action == CHALLENGER
    assert decision.evidence["paired_p_value"] == exact_mcnemar_p(10, 5)
    assert decision.evidence["winner_only_correct"] == 10
    assert decision.evidence["champion_only_correct"] == 5
    assert decision.evidence["margin"] == 0.01  # the offline evidence is kept
    assert decision.reason.endswith("run it as challenger.")
    json.dumps(decision.evidence)


def test_a_promotion_the_same_examples_support_stands() -> None:
    winner, champion = _paired(150, 20, 2, 28)
    decision = paired_promotion(_promote(), winner, champion, PairedGate())
    assert decision.action == PROMOTE
    assert decision.evidence["paired_p_value"] == exact_mcnemar_p(20, 2)
    assert float(decision.evidence["paired_p_value"]) <= 0.05
    json.dumps(decision.evidence)


def test_paired_promotion_judges_pairs_not_accuracies() -> None:
    # Both splits: winner 0.60, champion 0.50 on 200 examples. Only the pairing differs.
    consistent = _paired(100, 20, 0, 80)  # the winner fixes 20, breaks none: p ~ 1e-6
    churning = _paired(20, 100, 80, 0)  # fixes 100, breaks 80: p ~ 0.08
    for winner, champion in (consistent, churning):
        assert sum(winner) == 120
        assert sum(champion) == 100
    assert paired_promotion(_promote(), *consistent, PairedGate()).action == PROMOTE
    assert paired_promotion(_promote(), *churning, PairedGate()).action == CHALLENGER


def test_paired_promotion_uses_the_gates_confidence() -> None:
    winner, champion = _paired(150, 14, 4, 32)  # p ~ 0.015
    assert 0.01 < exact_mcnemar_p(14, 4) < 0.05
    assert paired_promotion(_promote(), winner, champion, PairedGate(0.95)).action == PROMOTE
    assert paired_promotion(_promote(), winner, champion, PairedGate(0.99)).action == CHALLENGER


def test_paired_promotion_leaves_other_decisions_alone() -> None:
    winner, champion = _paired(0, 50, 0, 0)
    for action in (KEEP, CHALLENGER):
        decision = Decision(action, "Something else.", {"x": 1})
        assert paired_promotion(decision, winner, champion, PairedGate()) is decision


def test_paired_promotion_refuses_unpaired_outcomes_and_bad_gates() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        paired_promotion(_promote(), [True] * 10, [False] * 9, PairedGate())
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            PairedGate(confidence)


# rollback_decision


def test_a_champion_worse_than_its_old_holdout_but_not_than_the_previous_one_is_kept() -> None:
    old_holdout_accuracy = 0.90  # what the champion scored when it was promoted
    # Today, after a drift, both models are at ~0.70 on the same 400 examples; the
    # previous champion is a little better, not significantly (p ~ 0.29).
    champion, previous = _paired(268, 12, 16, 104)
    assert sum(champion) / len(champion) < old_holdout_accuracy - 0.15
    decision = rollback_decision(champion, previous, RollbackGuard(), trivial_accuracy=0.0)
    assert decision.action == KEEP
    assert decision.evidence["previous_only_correct"] == 16
    assert decision.evidence["champion_only_correct"] == 12
    assert decision.evidence["p_value"] == exact_mcnemar_p(16, 12)
    json.dumps(decision.evidence)


def test_a_previous_champion_significantly_better_on_the_same_examples_is_rolled_back_to() -> None:
    champion, previous = _paired(250, 5, 30, 115)
    decision = rollback_decision(champion, previous, RollbackGuard(), trivial_accuracy=0.0)
    assert decision.action == ROLLBACK
    assert decision.evidence["p_value"] == exact_mcnemar_p(30, 5)
    json.dumps(decision.evidence)


def test_rollback_judges_pairs_not_accuracies() -> None:
    # Both splits: champion 0.70, previous 0.75 on 400 examples. Only the pairing differs.
    consistent = _paired(280, 0, 20, 100)  # p ~ 1e-6
    churning = _paired(200, 80, 100, 20)  # p ~ 0.08
    for champion, previous in (consistent, churning):
        assert sum(champion) == 280
        assert sum(previous) == 300
    assert rollback_decision(*consistent, RollbackGuard(), trivial_accuracy=0.0).action == ROLLBACK
    assert rollback_decision(*churning, RollbackGuard(), trivial_accuracy=0.0).action == KEEP


def test_rollback_waits_for_enough_paired_examples_and_refuses_unpaired_ones() -> None:
    champion, previous = _paired(0, 0, 299, 0)
    assert (
        rollback_decision(
            champion, previous, RollbackGuard(min_samples=300), trivial_accuracy=0.0
        ).action
        == WAIT
    )
    champion, previous = _paired(0, 0, 300, 0)
    assert (
        rollback_decision(
            champion, previous, RollbackGuard(min_samples=300), trivial_accuracy=0.0
        ).action
        == ROLLBACK
    )
    with pytest.raises(ValueError, match="differ in length"):
        rollback_decision([True] * 300, [True] * 301, RollbackGuard(), trivial_accuracy=0.0)


def test_rollback_never_serves_a_previous_champion_no_better_than_the_majority_class() -> None:
    # Mid-drift both are mostly wrong: 300 examples, the previous right on 140, the
    # champion on 80 (every champion-right one also previous-right): significant, yet
    # a constant answer right on 60 % of them beats both.
    champion, previous = _paired(80, 0, 60, 160)
    decision = rollback_decision(champion, previous, RollbackGuard(), trivial_accuracy=0.6)
    assert decision.action == KEEP
    assert "no better than the majority class" in decision.reason
    assert decision.evidence["trivial_accuracy"] == 0.6
    lower = rollback_decision(champion, previous, RollbackGuard(), trivial_accuracy=0.4)
    assert lower.action == ROLLBACK
