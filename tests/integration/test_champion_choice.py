"""Choosing the champion like with like, on real Kafka and a real registry.

Every decision scores the models on the same labelled examples read back from
``training-examples``: a retrain never serves a model worse than ignoring the features;
between retrains the champion is rolled back only to a previous champion that is
significantly better on the examples since its promotion, a cold start's snapshot is
judged once by a retrain, a champion is refitted once a review window of data it
never saw has arrived, and a champion right less often than the majority class is
replaced at once: by a fit no worse than it, or by the majority class itself.
"""

from __future__ import annotations

import random
import time

import pytest

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHAMPION, RIVER, SKLEARN, Lineage, Registry
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.services.training.core import MAJORITY_CLASS, REFITTED_ON, is_majority, make_estimator
from eddy.services.training.retrainer import Retrainer
from eddy.streams.learning.models import make_model, numeric
from tests.factories import DeploymentSettings
from tests.integration.training_examples import publish_examples

MODEL = "churn"
LINEAGE = Lineage({}, "fs-test", {}, {}, "test", {"type": "operator", "id": "test"}, "test")
Rows = list[tuple[dict[str, float], bool]]


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings) -> Settings:
    return deployment_settings("cc", retrain_window=2000, retrain_min_holdout=100)


def concept(count: int, seed: int, flipped: bool) -> Rows:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        x = {"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1)}
        rows.append((x, (x["a"] + 0.5 * x["b"] > 0) != flipped))
    return rows


def noise(count: int, seed: int, positive: float) -> Rows:
    """Labels that ignore the features: nothing can beat the majority class."""
    rng = random.Random(seed)
    return [
        ({"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1)}, rng.random() < positive)
        for _ in range(count)
    ]


def publish(settings: Settings, rows: Rows, start: float, tag: str) -> None:
    """``rows`` as training examples with event times from ``start`` on (epoch s)."""
    publish_examples(settings, rows, 0, base=start, step_s=0.001, tag=tag)


def fitted(rows: Rows) -> object:
    estimator = make_estimator("logistic_regression", classification=True, seed=1)
    estimator.fit([numeric(x) for x, _ in rows], [y for _, y in rows])
    return estimator


def test_a_retrain_never_serves_a_model_worse_than_ignoring_the_features(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    publish(deployment, noise(1500, seed=1, positive=0.75), time.time(), "noise")
    outcome = Retrainer(deployment, registry).retrain(MODEL, Trigger(TriggerKind.OPERATOR, "t"))
    assert outcome.decision.action == "keep", outcome.decision.reason
    assert outcome.decision.reason.startswith("No contender beats the trivial baseline")
    assert registry.alias(MODEL, CHAMPION) is None
    (decision,) = [e for e in registry.audit_log(MODEL) if e["action"] == "decision"]
    contenders = decision["details"]["contenders"]
    trivial = contenders["trivial baseline"]["log_loss"]
    assert contenders["candidate"]["log_loss"] >= trivial


def test_a_retrain_judges_the_champion_and_promotes_only_a_significant_winner(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    champion = registry.register(MODEL, SKLEARN, fitted(concept(800, 1, False)), {}, LINEAGE)
    registry.promote(MODEL, champion.version, "test", "initial")
    # The same concept: the candidate is no better on the same held-out examples.
    publish(deployment, concept(1500, seed=2, flipped=False), time.time(), "same")
    same = Retrainer(deployment, registry).retrain(MODEL, Trigger(TriggerKind.OPERATOR, "same"))
    assert same.decision.action != "promote", same.decision.reason
    assert registry.alias(MODEL, CHAMPION).version == champion.version  # type: ignore[union-attr]


def champion_pair(registry: Registry) -> tuple[int, int]:
    """v1 (concept A) served first, then v2 (concept B) promoted over it."""
    first = registry.register(MODEL, SKLEARN, fitted(concept(800, 1, False)), {}, LINEAGE)
    registry.promote(MODEL, first.version, "test", "initial")
    second = registry.register(MODEL, SKLEARN, fitted(concept(800, 2, True)), {}, LINEAGE)
    registry.promote(MODEL, second.version, "test", "concept B")
    return first.version, second.version


def test_the_review_rolls_back_to_a_previous_champion_better_on_the_same_examples(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    first, second = champion_pair(registry)
    # Since the promotion the world is concept A again: v1 is right where v2 is wrong.
    publish(deployment, concept(600, seed=3, flipped=False), time.time() + 1, "back")
    (decision,) = Retrainer(deployment, registry).review_champion(MODEL)
    assert decision.action == "rollback", decision.reason
    assert decision.evidence["previous_accuracy"] > decision.evidence["champion_accuracy"]
    assert registry.alias(MODEL, CHAMPION).version == first  # type: ignore[union-attr]
    assert second != first


def test_the_review_keeps_a_champion_right_on_the_examples_since_its_promotion(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    _, second = champion_pair(registry)
    # Examples from before the promotion (concept A) do not count against it.
    publish(deployment, concept(600, seed=4, flipped=False), time.time() - 3600, "old")
    publish(deployment, concept(600, seed=5, flipped=True), time.time() + 1, "new")
    decisions = Retrainer(deployment, registry).review_champion(MODEL)
    assert [d.action for d in decisions] == ["keep"], [d.reason for d in decisions]
    assert decisions[0].evidence["samples"] == 600
    assert registry.alias(MODEL, CHAMPION).version == second  # type: ignore[union-attr]


def test_a_cold_start_snapshot_is_judged_once_by_a_retrain(deployment: Settings) -> None:
    registry = open_registry(deployment, announce=False)
    cold = make_model("logistic")
    for x, y in concept(5, seed=6, flipped=False):  # a few labels: barely learned
        cold.learn(numeric(x), y)
    snapshot = registry.register(MODEL, RIVER, cold, {}, LINEAGE)
    registry.promote(MODEL, snapshot.version, "test", "cold start")
    publish(deployment, concept(1500, seed=7, flipped=False), time.time() + 1, "warm")
    retrainer = Retrainer(deployment, registry)
    decisions = retrainer.review_champion(MODEL)
    assert [d.action for d in decisions] == ["promote"], [d.reason for d in decisions]
    champion = registry.alias(MODEL, CHAMPION)
    assert champion is not None
    assert champion.flavor == SKLEARN
    assert champion.lineage.trigger["type"] == "cold start"
    window = champion.lineage.window
    assert window[REFITTED_ON] == window["examples"] == window["train"] + window["holdout"]
    again = retrainer.review_champion(MODEL)  # an sklearn champion: no second retrain
    assert all(d.action != "promote" for d in again), [d.reason for d in again]
    assert len(registry.versions(MODEL)) == 2


def test_a_champion_is_refreshed_once_the_review_window_is_data_it_never_saw(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    retrainer = Retrainer(deployment, registry)
    start = time.time()
    publish(deployment, concept(400, seed=8, flipped=True), start, "first")
    first = retrainer.retrain(MODEL, Trigger(TriggerKind.OPERATOR, "first"))
    assert first.decision.action == "promote", first.decision.reason
    # Still data the champion learned from in the review window: no refresh.
    publish(deployment, concept(300, seed=9, flipped=True), start + 1, "some")
    assert all(d.action != "promote" for d in retrainer.review_champion(MODEL))
    assert len(registry.versions(MODEL)) == 1
    # A whole review window of examples it never saw: refitted, and the refit serves.
    publish(deployment, concept(1200, seed=10, flipped=True), start + 2, "new")
    decisions = retrainer.review_champion(MODEL)
    assert [d.action for d in decisions] == ["promote"], [d.reason for d in decisions]
    champion = registry.alias(MODEL, CHAMPION)
    assert champion is not None
    assert champion.version == 2
    assert champion.lineage.trigger == {"type": "refresh", "id": f"{MODEL}@1"}
    again = retrainer.review_champion(MODEL)
    assert all(d.action != "promote" for d in again), [d.reason for d in again]
    assert len(registry.versions(MODEL)) == 2, "one refresh per window of new data"


def test_no_refresh_when_it_is_turned_off(deployment: Settings) -> None:
    settings = deployment.model_copy(update={"retrain_refresh": False})
    registry = open_registry(settings, announce=False)
    retrainer = Retrainer(settings, registry)
    start = time.time()
    publish(settings, concept(400, seed=8, flipped=True), start, "first")
    retrainer.retrain(MODEL, Trigger(TriggerKind.OPERATOR, "first"))
    publish(settings, concept(1500, seed=10, flipped=True), start + 1, "new")
    retrainer.review_champion(MODEL)
    assert len(registry.versions(MODEL)) == 1


def test_a_champion_worse_than_the_majority_class_gives_way_to_it_until_a_fit_beats_it(
    deployment: Settings,
) -> None:
    # The floor is not the refresh: it holds with the data-paced refresh turned off.
    settings = deployment.model_copy(update={"retrain_refresh": False})
    registry = open_registry(settings, announce=False)
    retrainer = Retrainer(settings, registry)
    old = registry.register(MODEL, SKLEARN, fitted(concept(800, 1, False)), {}, LINEAGE)
    registry.promote(MODEL, old.version, "test", "initial")
    # Since its promotion the labels ignore the features and are mostly True: the old
    # concept's champion is right about half the time, the majority class 3 times in 4.
    start = time.time() + 1
    publish(settings, noise(1500, seed=11, positive=0.75), start, "mixed")
    decisions = retrainer.review_champion(MODEL)
    assert [d.action for d in decisions] == ["promote"], [d.reason for d in decisions]
    assert "serve the majority class" in decisions[0].reason
    stand_in = registry.alias(MODEL, CHAMPION)
    assert stand_in is not None
    assert is_majority(stand_in)
    assert stand_in.lineage.params == {"estimator": MAJORITY_CLASS}
    assert stand_in.lineage.trigger == {"type": "below majority", "id": f"{MODEL}@{old.version}"}
    served = registry.load(MODEL, stand_in.version)
    probes = [numeric(x) for x, _ in concept(20, seed=12, flipped=False)]
    assert list(served.predict(probes)) == [True] * 20  # type: ignore[attr-defined]
    # The stand-in is no worse than the majority class: no retrain for it.
    assert all(d.action != "promote" for d in retrainer.review_champion(MODEL))
    assert len(registry.versions(MODEL)) == 2
    # A new concept the old champion never learned (no rollback to it): the stand-in
    # serves below what it promised (the majority class's share on its holdout), and
    # the retrain that starts at once fits the new concept and replaces it.
    publish(settings, concept(1500, seed=13, flipped=True), start + 2, "new")
    decisions = retrainer.review_champion(MODEL)
    assert [d.action for d in decisions] == ["keep", "promote"], [d.reason for d in decisions]
    fit = registry.alias(MODEL, CHAMPION)
    assert fit is not None
    assert fit.lineage.trigger == {"type": "below promise", "id": f"{MODEL}@{stand_in.version}"}
    assert not is_majority(fit)
    assert fit.version not in (old.version, stand_in.version)


def test_a_champion_no_worse_than_the_majority_class_is_not_retrained_for_it(
    deployment: Settings,
) -> None:
    registry = open_registry(deployment, announce=False)
    champion = registry.register(MODEL, SKLEARN, fitted(concept(800, 1, False)), {}, LINEAGE)
    registry.promote(MODEL, champion.version, "test", "initial")
    publish(deployment, concept(1500, seed=14, flipped=False), time.time() + 1, "same")
    decisions = Retrainer(deployment, registry).review_champion(MODEL)
    assert all(d.action != "promote" for d in decisions), [d.reason for d in decisions]
    assert registry.alias(MODEL, CHAMPION).version == champion.version  # type: ignore[union-attr]
    assert len(registry.versions(MODEL)) == 1


def rotated(count: int, seed: int) -> Rows:
    """A boundary turned by about 53 degrees from :func:`concept`'s: a fit of the old one
    is still right about 70 % of the time, the majority class half of the time."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        x = {"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1)}
        rows.append((x, x["a"] - 0.5 * x["b"] > 0))
    return rows


def promised(registry: Registry, rows: Rows) -> int:
    """A fit of ``rows`` registered and promoted with the holdout its lineage promises:
    right on 198 of 200 held-out examples."""
    lineage = Lineage({}, "fs-test", {}, {}, "test", {"type": "operator"}, "test", {"holdout": 200})
    version = registry.register(MODEL, SKLEARN, fitted(rows), {"accuracy": 0.99}, lineage)
    registry.promote(MODEL, version.version, "test", "initial")
    return version.version


def test_a_champion_serving_below_its_own_holdout_is_retrained_at_once(
    deployment: Settings,
) -> None:
    # Not the refresh's pacing: it holds with the refresh turned off.
    settings = deployment.model_copy(update={"retrain_refresh": False})
    registry = open_registry(settings, announce=False)
    retrainer = Retrainer(settings, registry)
    old = promised(registry, concept(800, 1, False))
    start = time.time() + 1
    # The world it learned still holds: it keeps its promise, nothing is retrained.
    publish(settings, concept(600, seed=21, flipped=False), start, "same")
    assert retrainer.review_champion(MODEL) == []
    assert len(registry.versions(MODEL)) == 1
    # The boundary turns: right about 70 % of the time, above the majority class, far
    # below the 99 % it promised.
    publish(settings, rotated(1500, seed=22), start + 2, "turned")
    decisions = retrainer.review_champion(MODEL)
    assert [d.action for d in decisions] == ["promote"], [d.reason for d in decisions]
    fit = registry.alias(MODEL, CHAMPION)
    assert fit is not None
    assert fit.version != old
    assert fit.lineage.trigger == {"type": "below promise", "id": f"{MODEL}@{old}"}
    # Tried once per champion until as many newer examples arrive: the new fit keeps
    # its own promise on the turned world, so no further retrain.
    assert all(d.action != "promote" for d in retrainer.review_champion(MODEL))
