"""Live champion/challenger decisions on recorded answers, carried out in a real registry."""

from __future__ import annotations

import random
from pathlib import Path

from eddy.services.promotion.live_evaluation import LiveEvaluator, RecordedAnswer
from eddy.services.promotion.rules import LiveGate, RollbackGuard
from eddy.services.registry.store import CHALLENGER, CHAMPION
from tests.unit.registries import registry_with_two_versions


def traffic(
    count: int, champion_accuracy: float, challenger_accuracy: float, seed: int
) -> tuple[list[RecordedAnswer], dict[str, bool]]:
    rng = random.Random(seed)
    answers, labels = [], {}
    for i in range(count):
        request, label = f"r{i}", rng.random() < 0.5
        labels[request] = label
        for version, accuracy in ((1, champion_accuracy), (2, challenger_accuracy)):
            right = rng.random() < accuracy
            answers.append(RecordedAnswer(request, "m", version, label if right else not label))
    return answers, labels


def test_a_clearly_better_challenger_is_promoted_and_audited(tmp_path: Path) -> None:
    registry = registry_with_two_versions(tmp_path)
    answers, labels = traffic(2000, champion_accuracy=0.70, challenger_accuracy=0.80, seed=1)
    decision = LiveEvaluator(registry, "m", LiveGate(min_samples=500)).compare(answers, labels)
    assert decision is not None
    assert decision.action == "promote"
    assert registry.aliases("m") == {CHAMPION: 2}
    audit = registry.audit_log("m")
    assert any(e["action"] == "decision" and e["details"]["action"] == "promote" for e in audit)


def test_an_equal_challenger_is_kept_waiting_and_unlabelled_requests_do_not_count(
    tmp_path: Path,
) -> None:
    registry = registry_with_two_versions(tmp_path)
    answers, labels = traffic(2000, 0.75, 0.75, seed=2)
    assert LiveEvaluator(registry, "m").compare(answers, labels).action == "keep"  # type: ignore[union-attr]
    few = {k: v for k, v in list(labels.items())[:100]}
    assert LiveEvaluator(registry, "m").compare(answers, few).action == "wait"  # type: ignore[union-attr]
    assert registry.aliases("m") == {CHAMPION: 1, CHALLENGER: 2}


def test_a_new_champion_worse_on_the_same_examples_is_rolled_back(tmp_path: Path) -> None:
    registry = registry_with_two_versions(tmp_path)
    registry.promote("m", 2, "test", "promoted")
    rng = random.Random(3)
    champion = [rng.random() < 0.6 for _ in range(1000)]
    previous = [rng.random() < 0.9 for _ in range(1000)]
    evaluator = LiveEvaluator(registry, "m", guard=RollbackGuard(min_samples=300))
    decision = evaluator.guard_champion(champion, previous, trivial_accuracy=0.0)
    assert decision is not None
    assert decision.action == "rollback"
    assert registry.aliases("m")[CHAMPION] == 1
    assert registry.history("m")[-1].reason.startswith("rollback:")


def test_a_champion_no_worse_than_the_previous_on_the_same_examples_stays(
    tmp_path: Path,
) -> None:
    # Both are worse than the previous champion was on its own (pre-drift) holdout; only
    # today's examples count, and on them neither is significantly better.
    registry = registry_with_two_versions(tmp_path)
    registry.promote("m", 2, "test", "promoted")
    rng = random.Random(4)
    outcomes = [(rng.random() < 0.6, rng.random() < 0.6) for _ in range(1000)]
    evaluator = LiveEvaluator(registry, "m", guard=RollbackGuard(min_samples=300))
    decision = evaluator.guard_champion(
        [c for c, _ in outcomes], [p for _, p in outcomes], trivial_accuracy=0.0
    )
    assert decision is not None
    assert decision.action == "keep"
    assert registry.aliases("m")[CHAMPION] == 2
    few = evaluator.guard_champion([False] * 10, [True] * 10, trivial_accuracy=0.0)
    assert few is not None
    assert few.action == "wait"


def test_without_an_earlier_champion_there_is_nothing_to_guard(tmp_path: Path) -> None:
    registry = registry_with_two_versions(tmp_path)
    assert (
        LiveEvaluator(registry, "m").guard_champion(
            [False] * 500, [True] * 500, trivial_accuracy=0.0
        )
        is None
    )
