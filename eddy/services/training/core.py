"""The pure training core: fit, split, score and choose, with no Kafka, Redis or registry I/O.

What a retrain does to the examples it was given, apart from reading them and writing its
result: de-duplicate and order them (:func:`training_set`), split a holdout the champion
never learned (:func:`unseen_holdout`), fit a candidate (:func:`make_estimator`), score
every contender on the same held-out examples (:func:`evaluate`, :func:`correctness`,
:func:`evaluate_slices`), refit the winner on everything (:func:`refit_on_all`), build
the majority-class stand-in (:func:`majority_class`), say what to do when no contender
beats the trivial baseline (:func:`stand_in_decision`, :func:`no_contender_decision`),
and when a fresh fit needs no significance to replace the champion
(:func:`refit_needs_no_proof`). The retrainer (:mod:`eddy.services.training.retrainer`)
and the backtest replay (:mod:`eddy.services.backtest.replay`) both call it, so a
backtest retrains as the running system does; being pure, it is tested without a broker.

>>> from datetime import UTC, datetime
>>> from eddy.streams.messages.contracts import SourceOffset
>>> def example(i: int) -> TrainingExample:
...     return TrainingExample(
...         example_id=f"e{i % 4}", entity_id="u", label=i % 2 == 0, features={"x": float(i)},
...         event_time=datetime.fromtimestamp(1_700_000_000 - i, UTC), feature_set="fs",
...         source=SourceOffset(topic="examples", partition=0, offset=i),
...     )
>>> data = training_set([example(i) for i in range(6)])
>>> [e.example_id for e in data.examples]
['e3', 'e2', 'e1', 'e0']
>>> train, holdout = data.split(0.25)
>>> len(train), len(holdout)
(3, 1)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, roc_auc_score
from sklearn.pipeline import Pipeline

from eddy.services.promotion.rules import KEEP, PROMOTE, Decision
from eddy.services.registry.lineage import window_time
from eddy.services.registry.store import RIVER, SKLEARN, Version
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.services.serving.scoring import POSITIVE_KEYS
from eddy.streams.drift.estimate import Calibration
from eddy.streams.learning.evaluation import is_binary
from eddy.streams.learning.models import encode_for, fit_vectors
from eddy.streams.learning.slices import COUNT, SliceNamer
from eddy.streams.messages.contracts import TrainingExample

log = logging.getLogger(__name__)

ESTIMATORS = ("hist_gradient_boosting", "logistic_regression")
REFITTED_ON = "refitted_on"  # lineage window: examples the promoted fit learned from
HOLDOUT_KEY = "holdout"  # lineage window: examples the fit was judged on
ACCURACY = "accuracy"
MAJORITY_CLASS = "majority_class"  # the estimator of the stand-in served when no model beats it


class TooFewExamples(ValueError):
    """Too few examples to train and judge a candidate (yet)."""


class EstimatorFailed(ValueError):
    """The retrain's estimator raised while it was built, fitted or scored: a failed
    retrain, audited, with nothing registered. A ValueError, as a retrain with too
    little to learn from is: whoever asked for the retrain logs it and goes on, since a
    project's estimator (one without ``predict_proba``, one that cannot take dict rows)
    must never stop the retrainer that serves every later alert."""


def require_examples(count: int, min_holdout: int) -> None:
    """Refuse a training set smaller than twice the smallest decidable holdout."""
    if count < 2 * min_holdout:
        raise TooFewExamples(
            f"only {count} examples in the window; need at least {2 * min_holdout}"
        )


@dataclass(frozen=True)
class TrainingSet:
    examples: list[TrainingExample]

    def split(self, holdout: float) -> tuple[list[TrainingExample], list[TrainingExample]]:
        cut = len(self.examples) - max(1, int(len(self.examples) * holdout))
        return self.examples[:cut], self.examples[cut:]


def training_set(examples: Sequence[TrainingExample]) -> TrainingSet:
    """De-duplicated by example id (first copy wins) and ordered by event time."""
    unique: dict[str, TrainingExample] = {}
    for example in examples:
        unique.setdefault(example.example_id, example)
    return TrainingSet(sorted(unique.values(), key=lambda e: (e.event_time, e.example_id)))


def current_feature_set(examples: Sequence[TrainingExample]) -> list[TrainingExample]:
    """The examples computed with the newest example's feature set (``examples`` ordered
    by event time): after ``eddy apply`` changed the definitions, a model is fitted and
    judged on the features it will be served, never on a mix of old and new ones.

    >>> from types import SimpleNamespace as Ex
    >>> window = [Ex(example_id="a", feature_set="old"), Ex(example_id="b", feature_set="new"),
    ...           Ex(example_id="c", feature_set="new")]
    >>> [e.example_id for e in current_feature_set(window)]
    ['b', 'c']
    """
    if not examples:
        return []
    newest = examples[-1].feature_set
    return [e for e in examples if e.feature_set == newest]


def is_classification(labels: Sequence[Any]) -> bool:
    return all(isinstance(y, bool | str) or float(y).is_integer() for y in labels)


def make_estimator(name: str, classification: bool, seed: int) -> Pipeline:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")
    if name == "hist_gradient_boosting":
        model: Any = (
            HistGradientBoostingClassifier(random_state=seed)
            if classification
            else HistGradientBoostingRegressor(random_state=seed)
        )
    else:
        model = LogisticRegression(max_iter=1000) if classification else Ridge()
    return Pipeline([("encode", DictVectorizer(sparse=False)), ("model", model)])


def evaluate(model: Any, flavor: str, examples: Sequence[TrainingExample]) -> dict[str, float]:
    """Held-out metrics of a scikit-learn pipeline or a River online model."""
    xs = encode_for(model, [e.features for e in examples])
    ys = [e.label for e in examples]
    if not is_classification(ys):
        predictions = (
            model.predict(xs) if flavor == SKLEARN else [model.predict(x)[0] or 0.0 for x in xs]
        )
        return {"mae": float(mean_absolute_error(ys, predictions))}
    if flavor == SKLEARN:
        classes = list(model.classes_)
        probabilities = np.asarray(model.predict_proba(xs))
    else:
        classes = sorted({*ys, *(c for x in xs for c in model.predict(x)[1])}, key=str)
        probabilities = np.asarray([[model.predict(x)[1].get(c, 0.0) for c in classes] for x in xs])
    probabilities = np.clip(probabilities, 1e-15, 1.0)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    metrics = {
        ACCURACY: float(accuracy_score([str(y) for y in ys], [str(p) for p in predicted])),
        "log_loss": float(
            log_loss([str(y) for y in ys], probabilities, labels=[str(c) for c in classes])
        ),
    }
    if len(classes) == 2 and len(set(map(str, ys))) == 2:
        positive = [str(y) == str(classes[1]) for y in ys]
        metrics["roc_auc"] = float(roc_auc_score(positive, probabilities[:, 1]))
    return metrics


def holdout_calibration(
    model: Any, examples: Sequence[TrainingExample]
) -> dict[str, list[float]] | None:
    """A fitted binary scikit-learn classifier's calibration table on ``examples`` it
    did not learn (:class:`~eddy.streams.drift.estimate.Calibration`): its P(positive
    class) of each, as the predictor would serve it, against the label. None for any
    other model, or a holdout without both classes."""
    classes = [str(c) for c in getattr(model, "classes_", [])]
    positive = next((classes.index(k) for k in POSITIVE_KEYS if k in classes), None)
    labels = [e.label for e in examples]
    if len(classes) != 2 or positive is None or not all(is_binary(y) for y in labels):
        return None
    if len(set(map(bool, labels))) != 2:
        return None
    xs = encode_for(model, [e.features for e in examples])
    scores = np.asarray(model.predict_proba(xs))[:, positive]
    pairs = zip(scores.tolist(), map(bool, labels), strict=True)
    return Calibration.from_pairs(pairs).as_table()


def correctness(model: Any, flavor: str, examples: Sequence[TrainingExample]) -> list[bool]:
    """Whether a classifier got each example right: the pairs a paired test compares."""
    xs = encode_for(model, [e.features for e in examples])
    if flavor == SKLEARN:
        predicted = list(model.predict(xs)) if xs else []
    else:
        predicted = [model.predict(x)[0] for x in xs]
    return [str(p) == str(e.label) for p, e in zip(predicted, examples, strict=True)]


def evaluate_slices(
    model: Any,
    flavor: str,
    examples: Sequence[TrainingExample],
    namer: SliceNamer,
    min_examples: int,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` on each slice with at least ``min_examples`` examples, plus
    ``n``, the slice's size. No slice features configured: no slices."""
    groups: dict[str, list[TrainingExample]] = {}
    for example in examples:
        for name in namer.slices_of(example.features):
            groups.setdefault(name, []).append(example)
    figures: dict[str, dict[str, float]] = {}
    for name, group in sorted(groups.items()):
        if len(group) < min_examples:
            continue
        try:
            figures[name] = evaluate(model, flavor, group) | {COUNT: float(len(group))}
        except ValueError as exc:  # e.g. one class only: log loss is undefined there
            log.info("slice not scored", extra={"slice": name, "reason": str(exc)})
    return figures


def unseen_holdout(
    data: TrainingSet, share: float, champion: Version | None, min_holdout: int
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Train and holdout split, the holdout keeping only examples newer than the newest
    a refitted champion learned from (the rest go to training): a champion refitted on
    its own holdout (:func:`refit_on_all`) would otherwise be judged on examples it
    learned, when a retrain follows its promotion before a holdout's worth of new data.
    When fewer than ``min_holdout`` would be left (an operator's retrain right after a
    promotion), the plain split: judged partly in-sample, the champion can only look
    better than it is, so the error is on the side of keeping it.
    """
    train, holdout = data.split(share)
    learned_until = None if champion is None else refitted_until(champion)
    if learned_until is None:
        return train, holdout
    seen = [e for e in holdout if e.event_time <= learned_until]
    unseen = holdout[len(seen) :]
    if len(unseen) < min(min_holdout, len(holdout)):
        return train, holdout
    return train + seen, unseen


def refitted_until(version: Version) -> datetime | None:
    """The newest example a version refitted on its holdout learned from (None if not
    refitted: it never learned the examples it was judged on)."""
    return window_time(version, "to") if REFITTED_ON in version.lineage.window else None


def refit_on_all(judged: Any, examples: Sequence[TrainingExample]) -> Any:
    """The judged candidate's estimator fitted again on every example, its holdout too.

    The holdout told whether the way of fitting beats the champion; once it has, the
    newest fifth of the data is the most relevant to what comes next, and a model that
    never learns from it serves worse (HistGradientBoosting on SEA, median of 10 seeds:
    0.9635 from 250 examples, 0.9705 from 320). As scikit-learn's search does with
    ``refit=True``; the registered metrics stay those of the judged fit.
    """
    estimator = clone(judged)
    estimator.fit(fit_vectors([e.features for e in examples]), [e.label for e in examples])
    return estimator


def majority_class(examples: Sequence[TrainingExample]) -> Pipeline:
    """The trivial baseline as a servable model: it answers every request with the
    examples' class frequencies (the majority class first), whatever the features.

    Mid-change (a gradual drift) no fit on the mixed window may beat it while the old
    concept's champion is right less often than it: serving it is the least wrong
    answer until a fit on the new concept beats it.
    """
    model = Pipeline(
        [("encode", DictVectorizer(sparse=False)), ("model", DummyClassifier(strategy="prior"))]
    )
    model.fit(fit_vectors([e.features for e in examples]), [e.label for e in examples])
    return model


def stand_in_decision(
    metric: str,
    trivial: Mapping[str, float],
    champion: Mapping[str, float],
    holdout_size: int,
) -> Decision:
    """Serve the majority-class stand-in (:func:`majority_class`): no contender beats the
    trivial baseline on the held-out examples, and the champion is right on
    significantly fewer of them than the majority class.

    >>> trivial = {"log_loss": 0.69, "accuracy": 0.6}
    >>> decision = stand_in_decision("log_loss", trivial, {"accuracy": 0.4}, 50)
    >>> decision.action, decision.evidence
    (<DecisionAction.PROMOTE: 'promote'>, {'metric': 'accuracy', 'champion': 0.4, 'trivial': 0.6})
    """
    return Decision(
        PROMOTE,
        f"No contender beats the trivial baseline ({metric} {trivial[metric]:.4g} on "
        f"{holdout_size} held-out examples) and the champion is right on significantly "
        f"fewer of them than the majority class (accuracy {champion['accuracy']:.4g} vs "
        f"{trivial['accuracy']:.4g}): serve the majority class until a model beats it.",
        {"metric": "accuracy", "champion": champion["accuracy"], "trivial": trivial["accuracy"]},
    )


def no_contender_decision(metric: str, trivial: Mapping[str, float], holdout_size: int) -> Decision:
    """Keep the candidate registered, not served: no contender beats the trivial baseline.

    >>> no_contender_decision("log_loss", {"log_loss": 0.69, "accuracy": 0.6}, 50).evidence
    {'metric': 'log_loss', 'trivial': 0.69}
    """
    return Decision(
        KEEP,
        f"No contender beats the trivial baseline ({metric} {trivial[metric]:.4g} on "
        f"{holdout_size} held-out examples): keep the candidate registered, not served.",
        {"metric": metric, "trivial": trivial[metric]},
    )


def is_majority(version: Version) -> bool:
    """Whether a version is the majority-class stand-in (:func:`majority_class`)."""
    return version.lineage.params.get("estimator") == MAJORITY_CLASS


def refit_needs_no_proof(trigger: Trigger, champion_flavor: str, *, stop_gap: bool) -> bool:
    """Whether a fresh fit of the retrain estimator replaces the champion when it is no
    worse on the same held-out examples
    (:func:`~eddy.services.promotion.rules.paired_no_regression`) rather than
    significantly better (:func:`~eddy.services.promotion.rules.paired_promotion`).

    No proof is asked against an earlier fit of the same estimator on a refresh or on a
    drift alert, nor against a frozen online snapshot, whatever the trigger: a snapshot
    serves as a stop-gap (a cold start, the first seconds after a drift) until a fit on
    enough data judges it, and a scheduled retrain would replace it blindly. On the
    demo's window (63 held-out examples) a paired test cannot separate a snapshot right
    91 % of the time from a fit right 96 % of the time, and the snapshot kept serving.
    An alert's fit learned after the change point and is judged on examples after it,
    against a champion of the world the alert says is gone: asking it for more than a
    refresh asks kept a pre-drift fit serving 0.87 for 11 s while the alert's fit,
    right 0.97 of the time, waited as a challenger (recovery benchmark, SEA, seed 3). A
    snapshot or a previous champion replacing a fit, and a fit replacing another fit on
    an operator's or a schedule's trigger, still need significance, unless the champion
    is a ``stop_gap``: the majority-class stand-in, or a fit right less often than the
    majority class on the held-out examples.

    >>> refit_needs_no_proof(Trigger(TriggerKind.COLD_START), RIVER, stop_gap=False)
    True
    >>> refit_needs_no_proof(Trigger(TriggerKind.REFRESH), SKLEARN, stop_gap=False)
    True
    >>> refit_needs_no_proof(Trigger(TriggerKind.ALERT), SKLEARN, stop_gap=False)
    True
    >>> refit_needs_no_proof(Trigger(TriggerKind.OPERATOR), SKLEARN, stop_gap=False)
    False
    >>> refit_needs_no_proof(Trigger(TriggerKind.CONTROL), SKLEARN, stop_gap=True)
    True
    """
    return (
        stop_gap
        or champion_flavor == RIVER
        or trigger.kind in (TriggerKind.REFRESH, TriggerKind.ALERT, TriggerKind.BELOW_PROMISE)
    )


def holdout_promise(version: Version) -> tuple[int, int] | None:
    """How many of its held-out examples a fit was right on, and of how many, when it was
    trained: what it promised to serve (None when its lineage records no holdout or
    its metrics no accuracy, as for an online snapshot or a regressor).

    >>> from eddy.services.registry.store import Lineage
    >>> lineage = Lineage({}, "", {}, {}, "", {}, "", {HOLDOUT_KEY: 63})
    >>> holdout_promise(Version("m", 1, SKLEARN, "", 0.0, "", {"accuracy": 41 / 63}, lineage))
    (41, 63)
    """
    held_out = version.lineage.window.get(HOLDOUT_KEY)
    accuracy = version.metrics.get(ACCURACY)
    if not isinstance(held_out, int) or held_out <= 0 or accuracy is None:
        return None
    return round(accuracy * held_out), held_out


def estimator_params(estimator: Any) -> dict[str, Any]:
    """The model's plain parameters (numbers, strings, flags), for the lineage: of the
    final step of a pipeline (Eddy's ``model``, whatever a project names it; inside a
    nested pipeline too), else of the estimator itself.

    >>> from sklearn.linear_model import LogisticRegression
    >>> estimator_params(LogisticRegression(C=0.5))["C"]
    0.5
    >>> scaled = Pipeline([("vectors", DictVectorizer()), ("fit", LogisticRegression(C=2.0))])
    >>> estimator_params(Pipeline([("scaled", scaled)]))["C"]
    2.0
    """
    final = estimator
    while isinstance(final, Pipeline):
        final = final.steps[-1][1]
    get_params = getattr(final, "get_params", None)
    params: dict[str, Any] = get_params() if callable(get_params) else {}
    return {k: v for k, v in params.items() if isinstance(v, int | float | str | bool | None)}
