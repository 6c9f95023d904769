"""Backtesting retrain policies: the whole loop, replayed in memory, one policy at a time.

An operator chooses detectors, thresholds, cooldowns and promotion gates on their own
history before enabling them. For each :class:`Policy`, :func:`replay` walks a
:class:`~eddy.services.backtest.timeline.Timeline` (the events and labels of a range, with their
point-in-time features) through Eddy's own parts:

1. every accepted event is answered by the champion of the moment: the online model
   until a retrain is promoted, then that scikit-learn model; the answer is scored when
   its label arrives (on the event or later on ``labels``);
2. every label feeds :meth:`eddy.streams.learning.learner.Learner.learn_many` (predict, score,
   monitor, learn; one example at a time or in the policy's mini-batches) with the
   policy's model, detector, cooldowns and drift thresholds, and, with the answer the
   champion served for it, :meth:`~eddy.streams.learning.learner.Learner.watch_served` (the served
   version's live error and answers), as the learner process does;
3. alerts of the kinds the policy retrains on start a burst (:mod:`eddy.services.training.bursts`);
   ``debounce_s`` of event time after the first, the burst's retrain runs like the
   retrainer's: the most recent ``window`` learned examples (after a concept alert only
   those after the drift, waiting up to ``drift_wait_s`` for enough of them),
   :func:`~eddy.services.training.core.training_set`, the holdout
   split, :func:`~eddy.services.training.core.make_estimator`,
   :func:`~eddy.services.training.core.evaluate` of candidate and champion,
   :func:`~eddy.services.promotion.rules.offline_decision`;
4. a promoted candidate becomes the champion for the answers that follow.

Time is event time only and every seed is fixed, so two replays of one timeline and
policy give identical results (the report's ``compute`` section, CPU seconds measured
with :func:`time.process_time`, is the only exception; ``work`` counts the same work
deterministically). This module lives in ``services`` because the retrain and
promotion rules do; it does no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eddy.services.backtest.timeline import Item, Served, Timeline
from eddy.services.config.learner import deployment_learner
from eddy.services.config.retraining import deployment_retraining
from eddy.services.config.settings import Settings
from eddy.services.promotion.rules import (
    PROMOTE,
    Decision,
    OfflineGate,
    offline_decision,
)
from eddy.services.registry.lineage import iso
from eddy.services.registry.store import RIVER, SKLEARN
from eddy.services.training.bursts import AFTER_DRIFT_SEEN, Burst, choose_examples, fold
from eddy.services.training.core import (
    ESTIMATORS,
    TrainingSet,
    evaluate,
    is_classification,
    make_estimator,
    refit_on_all,
    require_examples,
    training_set,
)
from eddy.services.training.policy import offline_gate
from eddy.streams.drift.data import DriftConfig
from eddy.streams.drift.served import ServedOutcome
from eddy.streams.features.compute import FeatureSet
from eddy.streams.learning.learner import RETRAIN, Learner, LearnerConfig, Position
from eddy.streams.learning.models import Label, encode_for, fit_vectors
from eddy.streams.messages.contracts import DriftAlert, DriftKind, TrainingExample

METRICS = ("log_loss", "accuracy", "roc_auc", "mae")
DEFAULT_BUCKETS = 12
SKIPPED = "skipped"
SCORE_DIGITS = 6


class PolicyError(ValueError):
    """A policy file or table that does not describe a valid policy."""


class RetrainPolicy(BaseModel):
    """When and how a policy retrains; unset fields take the deployment's settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    on: tuple[DriftKind, ...] = (DriftKind.CONCEPT, DriftKind.DATA, DriftKind.PREDICTION)
    window: int = Field(ge=10)
    holdout: float = Field(gt=0, lt=1)
    min_holdout: int = Field(ge=1)
    estimator: str
    metric: str
    margin: float = Field(ge=0)
    debounce_s: float = Field(ge=0)
    drift_wait_s: float = Field(ge=0)
    seed: int = 42

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        if value not in ESTIMATORS:
            raise ValueError(f"unknown estimator {value!r}; known: {', '.join(ESTIMATORS)}")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(METRICS)}")
        return value

    @property
    def gate(self) -> OfflineGate:
        return offline_gate(self.metric, self.margin, self.min_holdout)


@dataclass(frozen=True)
class Policy:
    name: str
    learner: LearnerConfig
    retrain: RetrainPolicy

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "learner": dataclasses.asdict(self.learner),
            "retrain": self.retrain.model_dump(mode="json"),
        }


def policies_from(
    data: Mapping[str, Any], settings: Settings, features: FeatureSet
) -> list[Policy]:
    """Policies from a parsed file: ``{"policy": [{"name": ..., "learner": {...},
    "retrain": {...}}, ...]}``; what a policy leaves out is the deployment's setting
    (its learner over the deployment's ``features``).

    ``learner`` takes any :class:`~eddy.streams.learning.learner.LearnerConfig` field but ``model``,
    with ``drift`` holding :class:`~eddy.streams.drift.data.DriftConfig` fields.

    >>> from eddy.streams.features.definitions import FEATURES
    >>> [p] = policies_from({"policy": [{"name": "ph", "learner": {"detector":
    ...     "page_hinkley", "drift": {"cooldown": 500}}}]}, Settings(), FEATURES)
    >>> p.learner.detector, p.learner.drift.cooldown, p.retrain.window
    ('page_hinkley', 500, 10000)
    """
    unknown = set(data) - {"policy"}
    tables = data.get("policy")
    if unknown or not isinstance(tables, list) or not tables:
        raise PolicyError("a policy file holds a non-empty list `policy` and nothing else")
    deployment = deployment_learner(settings, features)
    policies = [_policy(table, settings, deployment) for table in tables]
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise PolicyError(f"policy names must be distinct: {names}")
    return policies


def _policy(table: Any, settings: Settings, deployment_config: LearnerConfig) -> Policy:
    if not isinstance(table, Mapping) or not isinstance(table.get("name"), str):
        raise PolicyError("every policy is a table with a `name`")
    name = table["name"]
    extra = set(table) - {"name", "learner", "retrain"}
    if extra:
        raise PolicyError(f"policy {name!r}: unknown keys {sorted(extra)}")
    learner = _learner_config(name, dict(table.get("learner", {})), deployment_config)
    deployment = dataclasses.asdict(deployment_retraining(settings))
    defaults = {k: v for k, v in deployment.items() if k in RetrainPolicy.model_fields}
    try:
        retrain = RetrainPolicy.model_validate(defaults | dict(table.get("retrain", {})))
    except ValidationError as exc:
        raise PolicyError(f"policy {name!r}: retrain: {exc}") from None
    return Policy(name, learner, retrain)


def _learner_config(name: str, table: dict[str, Any], deployment: LearnerConfig) -> LearnerConfig:
    drift = table.pop("drift", {})
    known = {f.name for f in dataclasses.fields(LearnerConfig)} - {"model", "drift"}
    drift_known = {f.name for f in dataclasses.fields(DriftConfig)}
    for where, keys, allowed in (("learner", table, known), ("drift", drift, drift_known)):
        if set(keys) - allowed:
            raise PolicyError(
                f"policy {name!r}: unknown {where} keys {sorted(set(keys) - allowed)}; "
                f"known: {sorted(allowed)}"
            )
    try:
        config = dataclasses.replace(
            deployment,
            **{k: _frozen(v) for k, v in table.items()},
            drift=_drift_config(deployment.drift, {k: _frozen(v) for k, v in drift.items()}),
        )
        Learner(config)  # unknown model kinds and detectors fail here, not mid-replay
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"policy {name!r}: learner: {exc}") from None
    return config


def _drift_config(deployment: DriftConfig, policy: dict[str, Any]) -> DriftConfig:
    """The deployment's drift settings with the policy's over them; thresholds merge
    key by key, so a policy naming one test keeps the deployment's others."""
    if "thresholds" in policy:
        policy = policy | {"thresholds": {**deployment.thresholds, **policy["thresholds"]}}
    return dataclasses.replace(deployment, **policy)


def _frozen(value: Any) -> Any:
    """Lists from a file become tuples, as the frozen configs declare them."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Champion:
    version: str
    flavor: str
    model: Any
    since: float


@dataclass
class Answer:
    at: float
    version: str
    prediction: Label | None = None


@dataclass
class Work:
    """Deterministic counts of the work a policy cost."""

    examples_learned: int = 0
    predictions_served: int = 0
    models_fitted: int = 0
    rows_fitted: int = 0
    rows_evaluated: int = 0


@dataclass
class Replay:
    """The mutable state of one policy's replay; :func:`_report` makes its result."""

    policy: Policy
    learner: Learner
    champion: Champion
    window: deque[TrainingExample]
    answers: dict[str, Answer] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    queued: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    burst: Burst | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    champions: list[dict[str, Any]] = field(default_factory=list)
    work: Work = field(default_factory=Work)
    retrain_cpu_s: float = 0.0


def replay(timeline: Timeline, policy: Policy, buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """One policy over one timeline: its report, ready for JSON.

    Per policy: the policy as run, answers served and scored with their accuracy (or
    MAE) overall and over event time, the online model's prequential metrics, every
    alert (kind, detector, evidence, position, whether it triggered a retrain), every
    retrain (trigger, window, both models' held-out metrics, the decision and its
    reason), which champion served from when, deterministic ``work`` counts and the
    measured ``compute``. A burst still waiting when the range ends is retrained at its
    due time with the examples there are, though no answer in the range follows it.
    """
    started = time.process_time()
    learner = Learner(policy.learner)
    first = timeline.items[0].at if timeline.items else 0.0
    state = Replay(
        policy=policy,
        learner=learner,
        champion=Champion(learner.version, RIVER, learner.model, first),
        window=deque(maxlen=policy.retrain.window),
    )
    state.champions.append(_switch(state.champion, None))
    for item in timeline.items:
        if state.burst is not None and item.at >= state.burst.due:
            _retrain(state, state.burst, state.burst.due)
        _process(state, item)
    if state.burst is not None:
        _retrain(state, state.burst, state.burst.due, final=True)
    _flush(state)
    return _report(state, timeline, buckets, time.process_time() - started)


def _process(state: Replay, item: Item) -> None:
    if isinstance(item, Served):
        answer = Answer(item.at, state.champion.version)
        state.answers[item.event_id] = answer
        state.work.predictions_served += 1
        if state.champion.flavor == RIVER:
            answer.prediction = state.learner.model.predict_one(item.features)
        else:
            state.queued.append(
                (item.event_id, encode_for(state.champion.model, [item.features])[0])
            )
    if item.example is None:
        return
    example = item.example
    state.labels[item.event_id] = example.label
    state.window.append(example)
    state.work.examples_learned += 1
    alerts: list[DriftAlert] = []
    served = state.answers.get(item.event_id)
    # As the learner process does: a served answer's label first (the online learner's
    # detections are judged against the served answers), then the example.
    if served is not None:
        if served.prediction is None:
            _flush(state)
        outcome = ServedOutcome(served.version, served.prediction, None, example.label, served.at)
        alerts += state.learner.watch_served([outcome])
    # In mini-batch mode the steps (and their alerts) come when a batch is full, and
    # batches are cut by count, so a replay cuts them alike.
    steps = state.learner.learn_many([(example.features, example.label, item.position)])
    alerts += [alert for step in steps for alert in step.alerts]
    for alert in alerts:
        _on_alert(state, alert, item.at, item.position)


def _on_alert(state: Replay, alert: DriftAlert, at: float, where: Position) -> None:
    """Record ``alert`` (raised at ``at`` on the timeline); start or join a burst."""
    retrain = state.policy.retrain
    triggers = retrain.enabled and alert.kind in retrain.on and alert.action == RETRAIN
    state.alerts.append(
        {
            "alert_id": alert.alert_id,
            "kind": alert.kind.value,
            "detector": alert.detector,
            "stream": alert.stream.value if alert.stream else None,
            "model_version": alert.model_version,
            "feature": alert.feature,
            "statistic": alert.statistic,
            "threshold": alert.threshold,
            "at": iso(at),
            "position": f"{where.topic}[{where.partition}]@{where.offset}",
            "examples": state.learner.examples,
            "triggers_retrain": triggers,
        }
    )
    if triggers:
        state.burst = fold(state.burst, alert, at, retrain.debounce_s)


def _retrain(state: Replay, burst: Burst, at: float, final: bool = False) -> None:
    """The retrainer's steps on the window of the moment (see the module docstring).

    A concept burst short of examples after the drift waits (``state.burst`` is due
    again later) unless its wait is over or the range has ended (``final``).
    """
    started = time.process_time()
    state.burst = None
    retrain = state.policy.retrain
    waiting = not final and burst.waiting(at, retrain.drift_wait_s)
    window = training_set(list(state.window)).examples
    chosen = choose_examples(window, burst.since, waiting, retrain.min_holdout, retrain.holdout)
    if chosen is None:
        state.burst = burst.retry(at, retrain.debounce_s)
        state.retrain_cpu_s += time.process_time() - started
        return
    data = TrainingSet(chosen.examples)  # a subset of a training set: unique, ordered
    entry: dict[str, Any] = {
        "at": iso(at),
        "trigger": list(burst.alert_ids),
        "champion": state.champion.version,
        "examples": len(data.examples),
    }
    if burst.since is not None and chosen.after_drift:
        entry[AFTER_DRIFT_SEEN] = burst.since.isoformat()
    try:
        require_examples(len(data.examples), retrain.min_holdout)
        train, holdout = data.split(retrain.holdout)
        labels = [e.label for e in train]
        estimator = make_estimator(retrain.estimator, is_classification(labels), retrain.seed)
        state.work.models_fitted += 1
        state.work.rows_fitted += len(train)
        estimator.fit(fit_vectors([e.features for e in train]), labels)
        candidate = evaluate(estimator, SKLEARN, holdout)
        champion = evaluate(state.champion.model, state.champion.flavor, holdout)
        state.work.rows_evaluated += 2 * len(holdout)
        decision = offline_decision(candidate, champion, len(holdout), retrain.gate)
    except ValueError as exc:  # as the retrainer: too little or unusable data, no model
        entry |= {"action": SKIPPED, "reason": str(exc)}
    else:
        version = f"{state.policy.learner.model}@backtest-{len(state.retrains) + 1}"
        entry |= _decided(version, len(train), len(holdout), candidate, champion, decision)
        if decision.action == PROMOTE:  # as the retrainer: served refitted on its holdout
            state.work.models_fitted += 1
            state.work.rows_fitted += len(data.examples)
            estimator = refit_on_all(estimator, data.examples)
            _flush(state)
            state.champion = Champion(version, SKLEARN, estimator, at)
            state.champions.append(_switch(state.champion, entry["reason"]))
    state.retrains.append(entry)
    state.retrain_cpu_s += time.process_time() - started


def _decided(
    version: str,
    train: int,
    holdout: int,
    candidate: dict[str, float],
    champion: dict[str, float],
    decision: Decision,
) -> dict[str, Any]:
    return {
        "version": version,
        "train": train,
        "holdout": holdout,
        "candidate_metrics": _rounded(candidate),
        "champion_metrics": _rounded(champion),
        "action": decision.action.value,  # a plain string: it also keys the counts
        "reason": decision.reason,
    }


def _flush(state: Replay) -> None:
    """Answer the queued requests of a scikit-learn champion in one call."""
    if not state.queued:
        return
    predictions = state.champion.model.predict([x for _, x in state.queued])
    for (event_id, _), prediction in zip(state.queued, predictions, strict=True):
        state.answers[event_id].prediction = _plain(prediction)
    state.queued = []


def _switch(champion: Champion, reason: str | None) -> dict[str, Any]:
    return {"from": iso(champion.since), "version": champion.version, "reason": reason}


def _report(state: Replay, timeline: Timeline, buckets: int, cpu_s: float) -> dict[str, Any]:
    """What an operator compares policies on. Everything but ``compute`` is a pure
    function of the timeline and the policy."""
    scored = [
        (answer, state.labels[event_id])
        for event_id, answer in state.answers.items()
        if event_id in state.labels
    ]
    classification = is_classification([label for _, label in scored])
    kinds = Counter(alert["kind"] for alert in state.alerts)
    actions = Counter(entry["action"] for entry in state.retrains)
    return {
        "policy": state.policy.describe(),
        "served": len(state.answers),
        "scored": len(scored),
        "score": _score(scored, classification),
        "accuracy_over_time": _over_time(scored, timeline, buckets, classification),
        "online_metrics": {
            k: v for k, v in state.learner.metrics.report().items() if math.isfinite(v)
        },
        "alerts_by_kind": dict(sorted(kinds.items())),
        "alerts": state.alerts,
        "retrains_by_action": dict(sorted(actions.items())),
        "retrains": state.retrains,
        "champions": state.champions,
        "work": dataclasses.asdict(state.work),
        "compute": {
            "cpu_seconds": round(cpu_s, 3),
            "retrain_cpu_seconds": round(state.retrain_cpu_s, 3),
        },
    }


def _score(pairs: Sequence[tuple[Answer, Label]], classification: bool) -> dict[str, Any]:
    """Accuracy of served answers (classification) or their mean absolute error."""
    if not pairs:
        return {"metric": "accuracy" if classification else "mae", "value": None}
    if classification:
        right = sum(1 for answer, label in pairs if str(answer.prediction) == str(label))
        return {"metric": "accuracy", "value": round(right / len(pairs), SCORE_DIGITS)}
    errors = [abs(float(label) - float(answer.prediction or 0.0)) for answer, label in pairs]
    return {"metric": "mae", "value": round(sum(errors) / len(errors), SCORE_DIGITS)}


def _over_time(
    pairs: Sequence[tuple[Answer, Label]], timeline: Timeline, buckets: int, classification: bool
) -> list[dict[str, Any]]:
    """Scored answers in ``buckets`` equal spans of serving (event) time."""
    span = timeline.span
    if span is None or buckets < 1:
        return []
    start, end = span
    width = (end - start) / buckets
    grouped: list[list[tuple[Answer, Label]]] = [[] for _ in range(buckets)]
    for answer, label in pairs:
        index = min(buckets - 1, int((answer.at - start) / width)) if width else 0
        grouped[index].append((answer, label))
    return [
        {
            "from": iso(start + i * width),
            "to": iso(start + (i + 1) * width),
            "scored": len(group),
            **_score(group, classification),
            "versions": sorted({answer.version for answer, _ in group}),
        }
        for i, group in enumerate(grouped)
    ]


def _rounded(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, SCORE_DIGITS) for k, v in sorted(metrics.items())}


def _plain(value: Any) -> Label:
    """numpy scalars as Python values, for comparison and JSON."""
    plain: Label = value.item() if hasattr(value, "item") else value
    return plain
