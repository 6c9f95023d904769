"""The learner's batch path gives the figures the one-by-one path gives.

The learner worker hands whole polls to :meth:`Learner.learn_many`; metrics, detectors
and drift monitors then work on arrays. These tests hold each batched piece to its
one-by-one definition (River's metrics, ``update`` per value) on seeded streams, with
the batches cut at random places.
"""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import pytest
from river import datasets, metrics, utils

from eddy.streams.drift.data import DataDriftMonitor, DriftConfig
from eddy.streams.drift.detectors import DETECTORS, make_detector
from eddy.streams.learning.evaluation import PrequentialMetrics
from eddy.streams.learning.learner import Learner, LearnerConfig, Position


def _cuts(rng: random.Random, total: int, largest: int = 300) -> list[tuple[int, int]]:
    spans, start = [], 0
    while start < total:
        end = min(total, start + rng.randint(1, largest))
        spans.append((start, end))
        start = end
    return spans


def test_classification_metrics_match_rivers() -> None:
    rng = random.Random(3)
    window = 50
    ours = PrequentialMetrics("classification", window)
    river = {
        "accuracy": metrics.Accuracy(),
        "log_loss": metrics.LogLoss(),
        "roc_auc": metrics.ROCAUC(),
        "rolling_accuracy": utils.Rolling(metrics.Accuracy, window_size=window),
        "rolling_log_loss": utils.Rolling(metrics.LogLoss, window_size=window),
    }
    rows = []
    for _ in range(2000):
        y = rng.random() < 0.4
        p = min(1.0, max(0.0, rng.gauss(0.65 if y else 0.35, 0.25)))
        rows.append((y if rng.random() < 0.8 else int(y), p > 0.5, p))
    for start, end in _cuts(rng, len(rows)):
        batch = rows[start:end]
        ours.update_many([y for y, _, _ in batch], [c for _, c, _ in batch], [p for *_, p in batch])
        for y, predicted, p in batch:
            for name, metric in river.items():
                metric.update(y, predicted if "accuracy" in name else p)
    report = ours.report()
    for name, metric in river.items():
        assert report[name] == pytest.approx(round(metric.get(), 4), abs=1e-4), name


def test_regression_metrics_match_rivers_and_skip_missing_predictions() -> None:
    rng = random.Random(4)
    ours = PrequentialMetrics("regression", 40)
    mae, rmse, rolling_mae = (
        metrics.MAE(),
        metrics.RMSE(),
        utils.Rolling(metrics.MAE, window_size=40),
    )
    rows = [(rng.gauss(0, 3), None if rng.random() < 0.05 else rng.gauss(0, 3)) for _ in range(900)]
    for start, end in _cuts(rng, len(rows)):
        ours.update_many(
            [y for y, _ in rows[start:end]], [p for _, p in rows[start:end]], [None] * (end - start)
        )
    for y, p in rows:
        if p is not None:
            for metric in (mae, rmse, rolling_mae):
                metric.update(y, p)
    report = ours.report()
    assert report["mae"] == pytest.approx(mae.get(), abs=1e-4)
    assert report["rmse"] == pytest.approx(rmse.get(), abs=1e-4)
    assert report["rolling_mae"] == pytest.approx(rolling_mae.get(), abs=1e-4)
    assert report["examples"] == len(rows)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_update_many_fires_where_update_fires(name: str) -> None:
    rng = random.Random(5)
    errors = [float(rng.random() < (0.1 if i < 3000 else 0.5)) for i in range(6000)]
    one_by_one = make_detector(name)
    expected = [(i, s) for i, e in enumerate(errors) if (s := one_by_one.update(e)).drifted]
    batched, found = make_detector(name), []
    for start, end in _cuts(rng, len(errors)):
        found += [(start + i, s) for i, s in batched.update_many(errors[start:end])]
    assert expected, "the stream must drift for this test to mean anything"
    assert found == expected


def test_detector_update_many_checks_values_before_feeding_any() -> None:
    detector = make_detector("ddm")
    with pytest.raises(ValueError, match="0/1"):
        detector.update_many([0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="finite"):
        make_detector("adwin").update_many([0.1, math.nan])


def _feature_rows(rng: random.Random, count: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i in range(count):
        shifted = i > count // 2
        rows.append(
            {
                "a": rng.gauss(2.0 if shifted else 0.0, 1.0),
                "b": rng.gauss(0, 1),
                "n": rng.randint(0, 5),
                "flag": rng.random() < 0.5,
                "plan": rng.choice(["x", "y", "z"] if shifted else ["x", "y"]),
                "gone": None if rng.random() < 0.3 else rng.random(),
            }
        )
    return rows


def _drifts_one_by_one_and_batched(
    rng: random.Random, rows: list[dict[str, object]], warmup: int = 0
) -> tuple[list[Any], list[Any], DataDriftMonitor, DataDriftMonitor]:
    """Drifts found stepping ``rows`` one by one and in random cuts, and both monitors."""
    config = DriftConfig(window=300, min_samples=100, check_every=50, cooldown=400, warmup=warmup)
    one_by_one = DataDriftMonitor(config)
    expected = [(i, d) for i, row in enumerate(rows) if (d := one_by_one.update(row))]
    batched, found = DataDriftMonitor(config), []
    for start, end in _cuts(rng, len(rows), largest=130):
        found += [(start + i, d) for i, d in batched.update_many(rows[start:end])]
    return expected, found, one_by_one, batched


def test_drift_update_many_matches_update_across_any_cuts() -> None:
    rng = random.Random(6)
    expected, found, one_by_one, batched = _drifts_one_by_one_and_batched(
        rng, _feature_rows(rng, 5000)
    )
    assert {d.feature for _, drifts in expected for d in drifts} >= {"a", "plan"}
    assert found == expected
    assert batched.state() == one_by_one.state()


def test_drift_update_many_matches_update_after_a_warmup() -> None:
    rng = random.Random(8)
    expected, found, one_by_one, batched = _drifts_one_by_one_and_batched(
        rng, _feature_rows(rng, 4000), warmup=737
    )
    assert expected
    assert found == expected
    assert batched.state() == one_by_one.state()
    assert one_by_one.updates == 4000


def test_drift_update_many_matches_update_when_rows_lack_features() -> None:
    rng = random.Random(7)
    rows = _feature_rows(rng, 3000)
    for i, row in enumerate(rows):
        if i % 7 == 0:
            del row["b"]
    expected, found, one_by_one, batched = _drifts_one_by_one_and_batched(rng, rows)
    assert found == expected
    assert batched.state() == one_by_one.state()


def test_drift_update_many_matches_update_when_every_row_has_every_feature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The usual batch: its columns are split and checked once for all its checks."""
    rng = random.Random(9)
    rows = _feature_rows(rng, 5000)
    for row in rows:
        del row["gone"]
    one_by_one = DataDriftMonitor(DriftConfig(window=300, min_samples=100, check_every=50))
    expected = [(i, d) for i, row in enumerate(rows) if (d := one_by_one.update(row))]
    # Every batch takes the aligned path: the check-by-check one is not called.
    monkeypatch.setattr(DataDriftMonitor, "_add_columns", _never)
    batched = DataDriftMonitor(one_by_one.config)
    found = []
    for start, end in _cuts(rng, len(rows), largest=130):
        found += [(start + i, d) for i, d in batched.update_many(rows[start:end])]
    assert {d.feature for _, drifts in expected for d in drifts} >= {"a", "plan"}
    assert found == expected
    assert batched.state() == one_by_one.state()


def _never(*_: object) -> None:
    raise AssertionError("the check-by-check path was taken")


def test_drift_update_many_refuses_a_whole_column_of_the_other_kind() -> None:
    monitor = DataDriftMonitor(DriftConfig(window=10, min_samples=5, check_every=2))
    monitor.update_many([{"plan": "x", "a": 1.0}, {"plan": "y", "a": 2.0}])
    monitor.update_many([{"plan": 1.0, "a": 3.0}, {"plan": 2.0, "a": "z"}, {"plan": 3, "a": 4}])
    monitor.update_many([{"plan": 4.0, "a": 5.0}, {"plan": 5.0, "a": 6.0}])  # all else plain
    assert monitor.refused == 6
    features = monitor.state()["features"]
    assert features["plan"]["reference"] == ["x", "y"]
    assert features["a"]["reference"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert monitor.updates == 7


def test_drift_update_many_skips_and_counts_refused_values() -> None:
    monitor = DataDriftMonitor(DriftConfig(window=10, min_samples=5, check_every=5))
    monitor.update_many([{"a": 1.0}, {"a": 2.0}])
    monitor.update_many([{"a": "text"}, {"a": math.inf}, {"a": 3}, {"a": [1]}])  # type: ignore[dict-item]
    assert monitor.refused == 3
    assert monitor.state()["features"]["a"]["reference"] == [1.0, 2.0, 3.0]
    assert monitor.updates == 6


def _stream(count: int, seed: int) -> list[tuple[dict[str, float], bool, Position]]:
    rows = list(datasets.synth.SEA(variant=0, seed=seed).take(count // 2))
    rows += [(x, not y) for x, y in datasets.synth.SEA(variant=0, seed=seed + 1).take(count // 2)]
    rng = random.Random(seed)
    out = []
    for i, (x, y) in enumerate(rows):
        features = {f"x{k}": float(v) for k, v in x.items()}
        if i > count * 3 // 4:
            features["x1"] += 4.0  # a data drift on top of the label flip
        out.append(
            (features, bool(y) if rng.random() > 0.02 else not y, Position("t", 0, i, 1e9 + i))
        )
    return out


def test_learn_many_is_step_by_step_whatever_the_batches() -> None:
    items = _stream(8000, seed=11)
    config = LearnerConfig(model="m", kind="hoeffding_adaptive_tree")
    reference = Learner(config)
    expected = [reference.step(*item) for item in items]
    batched, steps = Learner(config), []
    for start, end in _cuts(random.Random(12), len(items), largest=700):
        steps += batched.learn_many(items[start:end])
    kinds = {a.kind.value for s in expected for a in s.alerts}
    assert {"concept", "data"} <= kinds
    assert [s.prediction for s in steps] == [s.prediction for s in expected]
    assert [[a.model_dump(exclude={"detected_at"}) for a in s.alerts] for s in steps] == [
        [a.model_dump(exclude={"detected_at"}) for a in s.alerts] for s in expected
    ]
    assert batched.metrics.report() == reference.metrics.report()
    assert batched.examples == reference.examples == len(items)


def test_mini_batches_are_cut_by_count_so_any_split_and_any_restart_agree() -> None:
    items = _stream(6000, seed=21)
    config = LearnerConfig(model="m", kind="logistic", batch=64)
    whole = Learner(config)
    whole_steps = whole.learn_many(items)
    assert len(whole_steps) == len(items) // 64 * 64
    assert len(whole.pending) == len(items) % 64

    split = Learner(config)
    steps = []
    for start, end in _cuts(random.Random(22), 3000, largest=150):
        steps += split.learn_many(items[start:end])
    split = pickle.loads(pickle.dumps(split))  # a checkpoint keeps the waiting examples
    steps += split.learn_many(items[3000:])
    assert [s.prediction for s in steps] == [s.prediction for s in whole_steps]
    assert split.metrics.report() == whole.metrics.report()
    assert split.model.predict_one(items[0][0]) == whole.model.predict_one(items[0][0])
    before_the_flip = Learner(config)
    before_the_flip.learn_many(items[:3000])
    assert before_the_flip.metrics.report()["accuracy"] > 0.9


def test_mini_batch_mode_refuses_models_that_learn_one_at_a_time() -> None:
    with pytest.raises(ValueError, match="one example at a time"):
        Learner(LearnerConfig(model="m", kind="hoeffding_adaptive_tree", batch=32))
    with pytest.raises(ValueError, match="learn_many"):
        Learner(LearnerConfig(model="m", batch=32)).step({"x": 1.0}, True, Position("t", 0, 0, 0.0))


def test_a_mini_batch_with_differing_features_is_learned_one_by_one() -> None:
    learner = Learner(LearnerConfig(model="m", kind="logistic", batch=4))
    items = [
        (
            {"x": 1.0, "country=NL": 1.0} if i % 2 else {"x": 0.0},
            i % 2 == 1,
            Position("t", 0, i, 0.0),
        )
        for i in range(400)
    ]
    learner.learn_many(items)
    assert learner.examples == 400
    assert learner.model.predict_one({"x": 1.0, "country=NL": 1.0}) is True
    assert learner.model.predict_one({"x": 0.0}) is False
