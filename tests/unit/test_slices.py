"""Performance by slice: the learner's per-slice metrics and the live slice gate."""

from __future__ import annotations

import random
from pathlib import Path

from eddy.services.promotion.live_evaluation import LiveEvaluator, RecordedAnswer
from eddy.services.promotion.rules import LiveGate
from eddy.services.registry.store import CHALLENGER, CHAMPION
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from tests.unit.registries import registry_with_two_versions


def test_the_learner_keeps_prequential_metrics_per_slice() -> None:
    rng = random.Random(1)
    items = []
    for i in range(3000):
        region = rng.choice(["eu", "us", "apac"])
        x = {"a": rng.uniform(-1, 1), "region": region}
        # eu is noise: no model can be right there more than half the time
        y = rng.random() < 0.5 if region == "eu" else x["a"] > 0
        items.append((x, y, Position("t", 0, i, 1e9 + i)))
    learner = Learner(LearnerConfig(model="m", slices=("region",), slice_max_values=2))
    steps = learner.learn_many(items)
    report = learner.slice_report()
    # The third region to appear falls into "other"; every example is in one slice.
    first_two = list(dict.fromkeys(x["region"] for x, _, _ in items))[:2]
    assert set(report) == {f"region={r}" for r in first_two} | {"region=other"}
    assert sum(figures["n"] for figures in report.values()) == len(items)
    for name, figures in report.items():
        region = name.split("=", 1)[1]
        mine = [
            step.prediction == y
            for step, (x, y, _) in zip(steps, items, strict=True)
            if x["region"] == region or (region == "other" and x["region"] not in first_two)
        ]
        assert figures["n"] == len(mine)
        assert figures["accuracy"] == round(sum(mine) / len(mine), 4)
    accuracy = {name: figures["accuracy"] for name, figures in report.items()}
    noisy = "region=eu" if "eu" in first_two else "region=other"
    assert accuracy[noisy] < 0.6 < max(accuracy.values())


def test_a_live_challenger_better_overall_but_worse_on_a_slice_stays_challenger(
    tmp_path: Path,
) -> None:
    registry = registry_with_two_versions(tmp_path)
    rng = random.Random(3)
    answers, labels, slices = [], {}, {}
    for i in range(3000):
        request, label = f"r{i}", rng.random() < 0.5
        region = "eu" if i % 5 == 0 else "us"
        labels[request], slices[request] = label, [f"region={region}"]
        accuracy = {1: 0.7 if region == "us" else 0.9, 2: 0.9 if region == "us" else 0.6}
        for version in (1, 2):
            right = rng.random() < accuracy[version]
            answers.append(RecordedAnswer(request, "m", version, label if right else not label))
    evaluator = LiveEvaluator(registry, "m", LiveGate(min_samples=500))

    blocked = evaluator.compare(answers, labels, slices)

    assert blocked is not None
    assert blocked.action == "keep"
    assert blocked.evidence["blocked_by_slice"] == "region=eu"
    assert registry.aliases("m") == {CHAMPION: 1, CHALLENGER: 2}
    entry = registry.audit_log("m")[-1]["details"]
    assert entry["evidence"]["blocked_by_slice"] == "region=eu"
    assert entry["slices"]["challenger"]["region=eu"]["n"] == 600
    # Without slices the same evidence promotes: the slice gate is what held it back.
    assert evaluator.compare(answers, labels).action == "promote"  # type: ignore[union-attr]
