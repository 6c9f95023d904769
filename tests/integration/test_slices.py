"""Performance by slice: a candidate better overall but worse on one slice is not promoted.

The recent window is mostly region ``us``, whose concept flipped; region ``eu`` keeps the
old concept. A linear retrain cannot hold both (no interaction between region and the
other features), so it fits ``us`` and fails ``eu``. The champion, trained on the old
concept, is the other way round. Overall the candidate wins by far; by slice it loses
``eu`` badly. With slices configured the gate keeps it and the audit log names ``eu``;
without them the same data promotes it.
"""

from __future__ import annotations

import random

import pytest

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHAMPION, SKLEARN, Lineage
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.services.training.core import make_estimator
from eddy.services.training.retrainer import Retrainer
from eddy.streams.learning.models import numeric
from eddy.streams.learning.slices import split
from tests.factories import DeploymentSettings
from tests.integration.training_examples import publish_examples

MODEL = "sliced"


def _rows(count: int, seed: int, eu_share: float, flipped_us: bool) -> list[tuple[dict, bool]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        region = "eu" if rng.random() < eu_share else "us"
        x = {"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1), "region": region}
        old_concept = x["a"] + 0.5 * x["b"] > 0
        rows.append((x, old_concept != (flipped_us and region == "us")))
    return rows


def _deployment(deployment_settings: DeploymentSettings, slices: str) -> Settings:
    settings = deployment_settings(
        "slice",
        retrain_window=3000,
        retrain_estimator="logistic_regression",
        retrain_metric="accuracy",
        slice_features=slices,
    )
    publish_examples(settings, _rows(3000, seed=2, eu_share=0.2, flipped_us=True), start=0)
    return settings


def _register_old_champion(settings: Settings) -> None:
    registry = open_registry(settings, announce=False)
    old = _rows(2000, seed=1, eu_share=0.2, flipped_us=False)
    estimator = make_estimator("logistic_regression", classification=True, seed=42)
    estimator.fit([numeric(x) for x, _ in old], [y for _, y in old])
    lineage = Lineage({}, "fs-test", {}, {}, "test", {"type": "operator", "id": "t"}, "test")
    version = registry.register(MODEL, SKLEARN, estimator, {"accuracy": 0.9}, lineage)
    registry.promote(MODEL, version.version, "test", "the old concept's champion")


@pytest.mark.parametrize("slices", ["region", ""])
def test_a_slice_regression_blocks_a_promotion_and_the_audit_names_the_slice(
    deployment_settings: DeploymentSettings, slices: str
) -> None:
    settings = _deployment(deployment_settings, slices)
    _register_old_champion(settings)
    registry = open_registry(settings, announce=False)

    outcome = Retrainer(settings, registry).retrain(MODEL, Trigger(TriggerKind.OPERATOR, "test"))

    candidate = registry.get(MODEL, outcome.version)
    _, per_slice = split(candidate.metrics)
    decision = next(
        entry["details"]
        for entry in reversed(registry.audit_log(MODEL))
        if entry["action"] == "decision" and entry["version"] == outcome.version
    )
    assert decision["evidence"]["relative_improvement"] > 0.2  # far better overall
    if not slices:
        assert outcome.decision.action == "promote"
        assert per_slice == {}
        assert registry.alias(MODEL, CHAMPION).version == outcome.version
        return
    assert outcome.decision.action == "keep"
    assert decision["evidence"]["blocked_by_slice"] == "region=eu"
    assert "blocked by slice region=eu" in decision["reason"]
    assert registry.alias(MODEL, CHAMPION).version == 1
    # The figures behind it: the candidate fails eu and wins us; both are recorded.
    assert per_slice["region=eu"]["accuracy"] < 0.5 < per_slice["region=us"]["accuracy"]
    holdout = decision["evidence"]["holdout_size"]
    assert per_slice["region=eu"]["n"] + per_slice["region=us"]["n"] == holdout
    champion_eu = decision["slices"]["champion"]["region=eu"]["accuracy"]
    assert champion_eu > 0.9 > per_slice["region=eu"]["accuracy"]
