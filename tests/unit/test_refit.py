"""A promoted fit learns from its holdout too, and is never judged on what it learned.

:func:`eddy.services.training.core.refit_on_all` fits the judged estimator again on every
example;
:func:`eddy.services.training.core.unseen_holdout` keeps a later retrain's holdout to examples
newer than the newest a refitted champion learned from.
"""

from __future__ import annotations

from datetime import UTC, datetime

from eddy.services.registry.store import RIVER, SKLEARN, Lineage, Version
from eddy.services.training.core import (
    REFITTED_ON,
    TrainingSet,
    make_estimator,
    refit_on_all,
    unseen_holdout,
)
from eddy.streams.learning.models import encode_for, fit_vectors
from eddy.streams.messages.contracts import SourceOffset, TrainingExample

LINEAGE = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")


def _example(i: int, label: str, x: float) -> TrainingExample:
    return TrainingExample(
        example_id=f"e{i}",
        entity_id="u",
        event_time=datetime.fromtimestamp(1_700_000_000 + i, UTC),
        label=label,
        features={"x": x},
        feature_set="fs",
        source=SourceOffset(topic="events", partition=0, offset=i),
    )


def _champion(flavor: str, window: dict[str, object]) -> Version:
    lineage = Lineage(**{**LINEAGE.__dict__, "window": window})
    return Version("m", 1, flavor, "a", 0.0, "test", {}, lineage)


def test_the_refit_learns_a_class_only_its_holdout_held() -> None:
    examples = [
        _example(i, "low" if i % 2 else "mid", float(i % 5 + (0 if i % 2 else 10)))
        for i in range(40)
    ]
    examples += [_example(40 + i, "high", 100.0 + i) for i in range(10)]
    train = examples[:40]
    judged = make_estimator("logistic_regression", classification=True, seed=1)
    judged.fit(fit_vectors([e.features for e in train]), [e.label for e in train])
    refitted = refit_on_all(judged, examples)
    probe = encode_for(refitted, [{"x": 105.0}])
    assert "high" not in judged.classes_
    assert refitted.predict(probe)[0] == "high"
    assert refitted is not judged


def test_the_holdout_drops_what_a_refitted_champion_learned_into_training() -> None:
    data = TrainingSet([_example(i, "a" if i % 2 else "b", float(i)) for i in range(100)])
    learned_until = data.examples[89].event_time.isoformat()
    refitted = _champion(SKLEARN, {"to": learned_until, REFITTED_ON: 90})
    train, holdout = unseen_holdout(data, 0.2, refitted, min_holdout=10)
    assert [e.example_id for e in holdout] == [f"e{i}" for i in range(90, 100)]
    assert len(train) == 90
    assert unseen_holdout(data, 0.2, None, min_holdout=10) == data.split(0.2)


def test_too_few_unseen_examples_keep_the_plain_split() -> None:
    data = TrainingSet([_example(i, "a" if i % 2 else "b", float(i)) for i in range(100)])
    learned_until = data.examples[95].event_time.isoformat()
    refitted = _champion(SKLEARN, {"to": learned_until, REFITTED_ON: 96})
    assert unseen_holdout(data, 0.2, refitted, min_holdout=10) == data.split(0.2)
    _, holdout = unseen_holdout(data, 0.2, refitted, min_holdout=4)
    assert len(holdout) == 4


def test_a_champion_that_was_not_refitted_keeps_the_whole_holdout() -> None:
    data = TrainingSet([_example(i, "a" if i % 2 else "b", float(i)) for i in range(100)])
    learned_until = data.examples[89].event_time.isoformat()
    for champion in (
        _champion(SKLEARN, {"to": learned_until}),
        _champion(RIVER, {"to": learned_until}),
    ):
        assert unseen_holdout(data, 0.2, champion, min_holdout=10) == data.split(0.2)
