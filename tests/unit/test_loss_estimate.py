"""A regressor's error estimated before its labels (direct loss estimation, DLE).

The stream: y = 2x + noise whose spread grows with |x|, and a version that answers 2x
(right on average, wrong by more where x is large). Labels arrive 1,000 answers late.
Moving the inputs to large x is a covariate shift the loss model can see; making y
steeper is a concept shift it cannot, which the labels must then say.
"""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from eddy.services.serving.answers import AnsweredBatch, ServedBuffer
from eddy.streams.drift.estimate import (
    ESTIMATE_DISAGREES,
    ESTIMATED_DEGRADATION,
    EstimateConfig,
    LossFinding,
    LossWatch,
)
from eddy.streams.drift.served import ServedOutcome
from eddy.streams.learning.learner import Learner, LearnerConfig
from eddy.streams.messages.contracts import DriftKind, ServedAnswers
from eddy.streams.store.snapshots import ServedAnswer, Snapshot

CHANGE, END, DELAY = 12_000, 20_000, 1_000


def play(watch: LossWatch, scenario: str, seed: int) -> list[tuple[int, LossFinding]]:
    """The stream, answer by answer, each label ``DELAY`` answers late: what fired, where."""
    rng = random.Random(seed)
    waiting: list[tuple[dict[str, float], float, float]] = []
    found: list[tuple[int, LossFinding]] = []
    for i in range(END):
        shifted = i >= CHANGE
        x = rng.gauss(2.0 if shifted and scenario == "covariate" else 0.0, 1.0)
        slope = 3.0 if shifted and scenario == "concept" else 2.0
        y = slope * x + rng.gauss(0.0, 1.0) * (0.2 + abs(x))
        found += [(i, f) for f in watch.served("m@1", [({"x": x}, 2.0 * x)])]
        waiting.append(({"x": x}, 2.0 * x, y))
        if len(waiting) > DELAY:
            inputs, answer, label = waiting.pop(0)
            finding = watch.labelled("m@1", inputs, answer, label)
            if finding is not None:
                found.append((i, finding))
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stationary_regressor_raises_nothing(seed: int) -> None:
    watch = LossWatch(EstimateConfig())
    assert play(watch, "control", seed) == []
    latest, reference = watch.latest("m@1"), watch.reference("m@1")
    assert latest is not None
    assert reference is not None
    assert latest.mae == pytest.approx(reference, rel=0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inputs_moving_where_the_error_is_larger_raise_the_expected_error_before_labels(
    seed: int,
) -> None:
    found = play(LossWatch(EstimateConfig()), "covariate", seed)
    (at, finding), *_ = found
    assert finding.kind == ESTIMATED_DEGRADATION
    # Before the first label of the shifted inputs could land:
    assert CHANGE < at < CHANGE + DELAY
    assert finding.estimate.mae > finding.threshold > finding.reference


def test_a_steeper_concept_is_said_by_the_labels_not_the_estimate() -> None:
    found = play(LossWatch(EstimateConfig()), "concept", 3)
    kinds = [f.kind for _, f in found]
    assert ESTIMATE_DISAGREES in kinds
    assert ESTIMATED_DEGRADATION not in kinds[: kinds.index(ESTIMATE_DISAGREES)]
    at, disagreement = next((i, f) for i, f in found if f.kind == ESTIMATE_DISAGREES)
    assert at > CHANGE + DELAY  # only labels of the new concept can say it
    assert disagreement.reference > disagreement.estimate.mae  # realized above expected


def test_nothing_is_estimated_before_the_loss_model_learned_enough() -> None:
    watch = LossWatch(EstimateConfig(window=100, check_every=10, min_calibrated=500))
    watch.served("m@1", [({"x": 1.0}, 2.0)] * 1_000)
    assert watch.latest("m@1") is None
    for _ in range(500):
        assert watch.labelled("m@1", {"x": 1.0}, 2.0, 2.5) is None
    watch.served("m@1", [({"x": 1.0}, 2.0)] * 100)
    latest = watch.latest("m@1")
    assert latest is not None
    assert latest.mae == pytest.approx(0.5, abs=0.05)


def test_a_pickled_loss_watch_continues_like_the_original() -> None:
    watch = LossWatch(EstimateConfig(window=200, check_every=50, min_calibrated=100))
    rng = random.Random(5)
    for _ in range(600):
        x = rng.gauss(0, 1)
        watch.labelled("m@1", {"x": x}, 2 * x, 2 * x + rng.gauss(0, 1) * (0.2 + abs(x)))
    watch.served("m@1", [({"x": rng.gauss(0, 1)}, 0.0) for _ in range(400)])
    copy = pickle.loads(pickle.dumps(watch))
    rest = [({"x": rng.gauss(3, 1)}, 0.0) for _ in range(400)]
    assert [f.kind for f in copy.served("m@1", rest)] == [f.kind for f in watch.served("m@1", rest)]
    assert copy.latest("m@1") == watch.latest("m@1")


def test_the_learner_alerts_a_regressors_estimated_degradation_on_its_mae() -> None:
    config = LearnerConfig(
        model="m", kind="linear_regression", estimate=EstimateConfig(window=200, check_every=50)
    )
    learner = Learner(config)
    rng = random.Random(9)
    outcomes = []
    for t in range(4_000):  # enough for the loss model's tree to split on x
        x = rng.gauss(0, 1)
        label = 2 * x + rng.gauss(0, 1) * (0.2 + abs(x))
        outcomes.append(ServedOutcome("m@4", 2 * x, None, label, float(t), {"x": x}))
    assert learner.watch_served(outcomes) == []
    calm = [({"x": rng.gauss(0, 1)}, 0.0) for _ in range(400)]
    assert learner.watch_regression("m@4", calm) == []
    far = [({"x": rng.gauss(3, 1)}, 0.0) for _ in range(400)]
    (alert,) = learner.watch_regression("m@4", far)
    assert alert.kind is DriftKind.ESTIMATED
    assert alert.model_version == "m@4"
    assert alert.feature == "estimated_mae"
    assert alert.statistic > alert.threshold
    assert alert.metrics["estimated_mae"] > alert.metrics["reference_mae"]
    assert alert.action == "warn"


def test_served_answers_carry_one_kind_of_answers() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    common = {"batch_id": "b", "model": "m", "model_version": "m@1", "served_at": at}
    ServedAnswers(**common, values=[1.5], inputs=[{"x": 1.0}])
    ServedAnswers(**common, positives=[0.3])
    for bad in (
        {"positives": [0.3], "values": [1.5], "inputs": [{}]},
        {"values": [1.5], "inputs": []},
        {},
        {"positives": [1.5]},
    ):
        with pytest.raises(ValidationError):
            ServedAnswers(**common, **bad)  # type: ignore[arg-type]


def test_a_predictor_batch_sends_a_regressors_answers_with_their_features() -> None:
    snapshots = (
        ("r1", Snapshot("u1", 0.0, {"x": 1.0}, ServedAnswer("m@2", 2.5))),
        ("r2", Snapshot("u2", 0.0, {"x": 3.0}, ServedAnswer("m@2", 6.5))),
        ("r3", Snapshot("u3", 0.0, {"x": 0.0}, ServedAnswer("m@1", True, 0.7))),
        ("r4", Snapshot("u4", 0.0, {"x": 0.0}, None)),  # refused: nothing served
    )
    buffer = ServedBuffer("m")
    buffer.add(AnsweredBatch(replies=(), snapshots=snapshots), "p[0]@3", now=0.0)
    assert buffer.count == 3
    sent = buffer.take(datetime(2026, 1, 1, tzinfo=UTC))
    by_version = {s.model_version: s for s in sent}
    assert set(by_version) == {"m@1", "m@2"}
    assert by_version["m@2"].values == [2.5, 6.5]
    assert by_version["m@2"].inputs == [{"x": 1.0}, {"x": 3.0}]
    assert by_version["m@2"].positives == []
    assert by_version["m@1"].positives == [0.7]
    assert by_version["m@2"].batch_id == "p[0]@3:m@2"
