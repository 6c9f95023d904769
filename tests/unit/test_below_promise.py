"""The champion's underperformance tests (below the majority class, below its promise)
on a stationary stream: each test on a block of examples no earlier test used.

Re-testing the overlapping windows of every review made a champion serving exactly what
it promised fire in the end (about 14 % of runs within 100 reviews); on disjoint blocks
each test's false alarm rate is one minus the confidence and no example counts twice.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import eddy.services.registry.store as store_module
import eddy.services.training.retrainer as retrainer_module
from eddy.services.config.settings import Settings
from eddy.services.registry.store import RIVER, SKLEARN, Lineage, Registry
from eddy.services.registry.triggers import TriggerKind
from eddy.services.training.core import HOLDOUT_KEY
from eddy.services.training.retrainer import Retrainer
from eddy.streams.messages.contracts import SourceOffset, TrainingExample

KEY = b"below-promise-test-key"
MODEL = "m"
SEED = 11
MIN_HOLDOUT = 50
REVIEW_EXAMPLES = 10 * MIN_HOLDOUT  # what a champion review reads (REVIEW_HOLDOUTS)
PROMISED_OF = 200  # the champion's holdout when it was trained
ACCURACY = 0.8  # what it promised there, and serves: the stream does not change
POSITIVE_SHARE = 0.5
STREAM = 3000
EVERY = 25  # new labelled examples between two reviews


def example(i: int, at: float, label: bool) -> TrainingExample:
    return TrainingExample(
        example_id=f"e{i}",
        entity_id="u",
        label=label,
        features={"x": float(label)},
        event_time=datetime.fromtimestamp(at + i, UTC),
        feature_set="fs",
        source=SourceOffset(topic="examples", partition=0, offset=i),
    )


def test_underperformance_is_tested_on_disjoint_blocks_of_a_stationary_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "registry", KEY)
    fitted = make_pipeline(DictVectorizer(sparse=False), LogisticRegression())
    fitted.fit([{"x": 0.0}, {"x": 1.0}], [False, True])
    lineage = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")
    lineage.window[HOLDOUT_KEY] = PROMISED_OF
    version = registry.register(MODEL, SKLEARN, fitted, {"accuracy": ACCURACY}, lineage)
    registry.promote(MODEL, version.version, "test", "serves")
    champion = registry.alias(MODEL, "champion")
    assert champion is not None
    retrainer = Retrainer(Settings(retrain_min_holdout=MIN_HOLDOUT), registry)

    rng = random.Random(SEED)
    served_after = time.time() + 1  # every example is served after the promotion
    stream = [example(i, served_after, rng.random() < POSITIVE_SHARE) for i in range(STREAM)]
    # Whether the champion is right on each example: as often as it promised.
    right = {e.example_id: rng.random() < ACCURACY for e in stream}
    tested: list[list[str]] = []

    def recorded(model: Any, flavor: str, examples: Sequence[TrainingExample]) -> list[bool]:
        tested.append([e.example_id for e in examples])
        return [right[e.example_id] for e in examples]

    fired: list[TriggerKind] = []

    def retrain(model: str, champion: Any, kind: TriggerKind) -> None:
        fired.append(kind)

    monkeypatch.setattr(retrainer_module, "correctness", recorded)
    monkeypatch.setattr(retrainer, "retrain_after_change_point", retrain)

    reviews = 0
    for end in range(EVERY, STREAM + 1, EVERY):
        retrainer.retrain_underperforming(
            MODEL, champion, stream[max(0, end - REVIEW_EXAMPLES) : end]
        )
        reviews += 1

    used = [example_id for block in tested for example_id in block]
    assert len(used) == len(set(used)), "an example was tested twice"
    assert all(len(block) >= MIN_HOLDOUT for block in tested)
    # One test per MIN_HOLDOUT new examples, not one per review.
    assert len(tested) == STREAM // MIN_HOLDOUT < reviews
    # Each block's test fires with probability at most 1 - confidence: on a stationary
    # stream, a false alarm is the exception.
    assert len(fired) < len(tested) * (1 - Settings().retrain_confidence)


def test_the_online_challenger_is_the_newest_snapshot_with_enough_labels_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is asked for one snapshot; the one it gives is the one a count of
    each snapshot's later examples, newest snapshot first, would choose."""
    # Registrations 10 s apart on the registry's clock, however slow the disk is.
    clock = itertools.count(1_700_000_000.0, 10.0)
    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=lambda: next(clock)))
    registry = Registry(tmp_path / "registry", KEY)
    lineage = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")
    fitted = make_pipeline(DictVectorizer(sparse=False), LogisticRegression())
    fitted.fit([{"x": 0.0}, {"x": 1.0}], [False, True])
    champion = registry.register(MODEL, SKLEARN, fitted, {"accuracy": ACCURACY}, lineage)
    for n in range(8):
        flavor = SKLEARN if n % 3 == 2 else RIVER
        registry.register(MODEL, flavor, fitted if flavor == SKLEARN else {"n": n}, {}, lineage)
    versions = registry.versions(MODEL)
    needed = 5
    retrainer = Retrainer(Settings(retrain_min_holdout=needed), registry)
    judged: list[Any] = []

    def recorded(model: Any, flavor: str, examples: Sequence[TrainingExample]) -> list[bool]:
        judged.append(model)
        return [False] * len(examples)  # no better than the baseline: nothing promoted

    monkeypatch.setattr(retrainer_module, "correctness", recorded)
    rng = random.Random(SEED)
    start, end = versions[0].created_at - 5, versions[-1].created_at + 5
    chosen = set()
    for _ in range(60):
        times = [rng.uniform(start, end) for _ in range(rng.randrange(3, 30))]
        window = [example(i, 0.0, i % 2 == 0) for i in range(len(times))]
        window = [
            e.model_copy(update={"event_time": datetime.fromtimestamp(t, UTC)})
            for e, t in zip(window, times, strict=True)
        ]
        expected = next(
            (
                v
                for v in reversed(versions)
                if v.flavor == RIVER
                and sum(1 for e in window if e.event_time.timestamp() > v.created_at) >= needed
            ),
            None,
        )
        judged.clear()
        assert retrainer.challenge_with_online(MODEL, champion, window) is None
        assert judged == ([] if expected is None else [registry.load(MODEL, expected.version)])
        chosen.add(None if expected is None else expected.version)
    assert len(chosen) >= 4  # the windows chose several snapshots, and none
