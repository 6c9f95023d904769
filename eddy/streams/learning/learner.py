"""The online learner's core: predict, score, monitor, then learn — one example at a time.

No Kafka or Redis here: :class:`Learner` takes examples and returns what happened,
including the drift alerts to publish. The whole object is what a checkpoint seals, so
a restored learner continues exactly where the original stopped.

It watches three streams, and every alert says which one fired (``stream``):

- ``online``: its own prequential error, through a one-sided concept detector whose
  cooldown delays, never drops (:mod:`eddy.streams.drift.concept_watch`), and whose detections
  count only when the model as it was before the change is worse on the examples since
  (:mod:`eddy.streams.drift.attribution`): a rise the model caused itself is no concept drift; and
  unless the answers users were served over the same span clearly did not get worse
  with it (:meth:`ServedWatch.confirms`): it is the second signal, and stands alone
  where too few served answers have labels to say;
- ``served``: each deployed version's live error and answers, from the labels joined
  to what that version served (:meth:`Learner.watch_served`, :mod:`eddy.streams.drift.served`);
- ``features``: data drift of the examples' inputs, leaving out the features that move
  with an entity's history by construction (``drift_ignore``).

Concept alerts ask for a retrain; data and prediction drift alone warn
(``drift_action``): the served model's live error is what confirms harm.

>>> learner = Learner(LearnerConfig(model="demo", kind="logistic"))
>>> step = learner.step({"x": 1.0}, True, Position("t", 0, 0, 1_700_000_000.0))
>>> step.prediction, learner.examples
(False, 1)
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eddy.streams.drift.attribution import ModelHistory
from eddy.streams.drift.concept_watch import ConceptDetection, ConceptWatch
from eddy.streams.drift.data import DataDriftMonitor, DriftConfig, FeatureDrift
from eddy.streams.drift.detectors import DEFAULT_DETECTOR
from eddy.streams.drift.estimate import (
    DEGRADATION_DETECTOR,
    DISAGREEMENT_DETECTOR,
    ESTIMATED_DEGRADATION,
    Calibration,
    EstimateConfig,
    EstimateFinding,
    EstimateWatch,
    Inputs,
    LossFinding,
    LossWatch,
)
from eddy.streams.drift.served import ServedOutcome, ServedWatch, prediction_error
from eddy.streams.learning.evaluation import PrequentialMetrics, is_binary
from eddy.streams.learning.models import (
    CLASSIFICATION,
    PROJECT_KIND,
    Features,
    Label,
    OnlineModel,
    batchable,
    make_model,
    positive_class,
)
from eddy.streams.learning.slices import COUNT, SliceNamer
from eddy.streams.messages.contracts import (
    AlertStream,
    DriftAlert,
    DriftEvidence,
    DriftKind,
    DriftWindow,
)

RETRAIN = "retrain"
WARN = "warn"
ACTIONS = (RETRAIN, WARN)


EVERY_VERSION = "all"  # an alert id's scope for the watch on every answer served


@dataclass(frozen=True)
class LearnerConfig:
    """What the learner learns and how it watches itself (from settings).

    ``kind`` names a built-in model (:data:`~eddy.streams.learning.models.MODEL_KINDS`),
    or is ``"project"``: the project's ``online_model()``, which the learner is given
    to build (:class:`Learner`'s ``build``); ``online_model`` then says what it builds
    (its classes), so a checkpoint of another model is not restored into it.
    """

    model: str
    kind: str = "logistic"
    online_model: str = ""
    detector: str = DEFAULT_DETECTOR
    metric_window: int = 500
    concept_cooldown: int = 1_000
    # Not part of the checkpoint's identity: a changed EDDY_DRIFT_* setting keeps the
    # learned state (its monitors keep the configuration they were built with).
    drift: DriftConfig = field(default_factory=DriftConfig, compare=False)
    seed: int = 42
    batch: int = 1  # > 1: mini-batches of this size where the model kind allows
    slices: tuple[str, ...] = ()  # features whose values get prequential metrics of their own
    slice_max_values: int = 50
    # Features data drift leaves out (they move by construction: FeatureSet.accumulating_names).
    drift_ignore: tuple[str, ...] = field(default=(), compare=False)
    # What data and prediction drift alerts ask for: "warn", or "retrain" on their own.
    drift_action: str = field(default=WARN, compare=False)
    # How served versions' performance is estimated before labels, and what an
    # estimated degradation asks for.
    estimate: EstimateConfig = field(default_factory=EstimateConfig, compare=False)
    estimate_action: str = field(default=WARN, compare=False)

    def __post_init__(self) -> None:
        for name, action in (("drift", self.drift_action), ("estimate", self.estimate_action)):
            if action not in ACTIONS:
                raise ValueError(f"{name}_action must be one of {ACTIONS}, got {action!r}")


@dataclass(frozen=True)
class Position:
    """Where an example came from, for alert windows and checkpoints."""

    topic: str
    partition: int
    offset: int
    event_time: float


@dataclass
class Step:
    prediction: Label | None
    error: float
    alerts: list[DriftAlert]


Item = tuple[Features, Label, Position]


class Learner:
    """``build``: a fresh online model, for a project's (``kind`` ``"project"``);
    without it, :func:`~eddy.streams.learning.models.make_model` builds ``kind``. Only
    the model it built is kept (and checkpointed), never ``build`` itself."""

    def __init__(
        self, config: LearnerConfig, build: Callable[[], OnlineModel] | None = None
    ) -> None:
        if config.batch > 1 and not batchable(config.kind):
            raise ValueError(f"model kind {config.kind!r} learns one example at a time")
        if (config.kind == PROJECT_KIND) != (build is not None):
            raise ValueError(
                f"model kind {PROJECT_KIND!r} is built by the project's online_model(), "
                "and only it: pass build with it, and only with it"
            )
        self.config = config
        self.model = make_model(config.kind, config.seed) if build is None else build()
        self.metrics = PrequentialMetrics(self.model.task, config.metric_window)
        self.concept = ConceptWatch(
            config.detector, seed=config.seed, cooldown=config.concept_cooldown
        )
        self.history = ModelHistory(self.model.task)
        self.data_drift = DataDriftMonitor(config.drift)
        self.served = ServedWatch(
            config.detector,
            seed=config.seed,
            cooldown=config.concept_cooldown,
            drift=config.drift,
            task=self.model.task,
        )
        self.estimates = EstimateWatch(config.estimate)
        self.losses = LossWatch(config.estimate)  # regressors' expected errors (DLE)
        # The online model's own answers before it learned each example, with their
        # labels: the calibration its snapshots (served versions) start from.
        self.calibration = Calibration()
        self.slice_namer = SliceNamer(config.slices, config.slice_max_values)
        self.slice_metrics: dict[str, PrequentialMetrics] = {}
        self.examples = 0
        self.unconfirmed = 0  # online detections the served answers vetoed
        self.version = f"{config.model}@online"
        self.pending: list[Item] = []  # mini-batch mode: examples waiting for a full batch
        self._window: collections.deque[Position] = collections.deque(maxlen=config.drift.window)

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a checkpoint; one from before the concept watch and the served
        streams keeps its detector and learned state and gains fresh served watches."""
        if "detector" in state:
            config = state["config"]
            assert isinstance(config, LearnerConfig)  # noqa: S101 - our own sealed pickle
            concept = ConceptWatch(
                config.detector, seed=config.seed, cooldown=config.concept_cooldown
            )
            concept.detector = state.pop("detector")  # type: ignore[assignment]
            concept.seen = int(state["examples"])  # type: ignore[call-overload]
            concept._last_alert = state.pop("_last_concept_alert")  # type: ignore[assignment]
            state["concept"] = concept
            state.pop("prediction_drift", None)
            model = state["model"]
            state["served"] = ServedWatch(
                config.detector,
                seed=config.seed,
                cooldown=config.concept_cooldown,
                drift=config.drift,
                task=model.task,  # type: ignore[attr-defined]
            )
        if "history" not in state:  # a checkpoint from before the history: it starts now
            history = ModelHistory(state["model"].task)  # type: ignore[attr-defined]
            history.seen = int(state["examples"])  # type: ignore[call-overload]
            state["history"] = history
        state.setdefault("unconfirmed", 0)  # a checkpoint from before the confirmation
        if "estimates" not in state:  # from before the live estimate: it starts now
            state["estimates"] = EstimateWatch(EstimateConfig())
            state["calibration"] = Calibration()
        if "losses" not in state:
            state["losses"] = LossWatch(EstimateConfig())
        self.__dict__.update(state)

    def step(self, x: Features, y: Label, where: Position) -> Step:
        """Prequential step: predict and score ``x`` first, then learn ``(x, y)``."""
        if self.config.batch > 1:
            raise ValueError("a mini-batch learner takes examples through learn_many")
        return self.learn_many([(x, y, where)])[0]

    def learn_many(self, items: Sequence[Item]) -> list[Step]:
        """Learn examples in order; the steps of the examples learned by this call.

        One example at a time (``batch`` 1), this is exactly :meth:`step` applied to
        each. In mini-batch mode, examples wait in :attr:`pending` (which checkpoints
        keep) until ``batch`` of them are there; each full batch is predicted by the
        model as it was before the batch, then learned with ``learn_many``. Batches are
        cut by count only, so a replay from a checkpoint cuts them where the original
        run did. Metrics, detectors and monitors see every example in order either way.
        """
        predictions, errors, alerts_at = self._learn(items)
        return [
            Step(prediction, error, alerts_at.get(i, []))
            for i, (prediction, error) in enumerate(zip(predictions, errors, strict=True))
        ]

    def learn_alerts(self, items: Sequence[Item]) -> list[DriftAlert]:
        """:meth:`learn_many`, returning only the alerts raised, in order: the learner
        process publishes those and needs no step per example."""
        return [alert for _, alerts in sorted(self._learn(items)[2].items()) for alert in alerts]

    def _learn(
        self, items: Sequence[Item]
    ) -> tuple[list[Label | None], list[float], dict[int, list[DriftAlert]]]:
        """The predictions and errors of the examples learned now, and their alerts by
        position among them."""
        if self.config.batch > 1:
            self.pending.extend(items)
            full = len(self.pending) - len(self.pending) % self.config.batch
            items, self.pending = self.pending[:full], self.pending[full:]
        if not items:
            return [], [], {}
        predictions, positives = self._predict_and_learn(items)
        errors, alerts_at = self._monitor(items, predictions, positives)
        return predictions, errors, alerts_at

    def _predict_and_learn(
        self, items: Sequence[Item]
    ) -> tuple[list[Label | None], list[float | None]]:
        predictions: list[Label | None] = []
        positives: list[float | None] = []
        if self.config.batch == 1:
            for x, y, _ in items:
                xn = self.model.encode(x, learning=True)
                prediction, proba = self.model.predict(xn)
                predictions.append(prediction)
                positives.append(positive_class(proba))
                self.model.learn(xn, y)
                self.history.learned(self.model, xn, y)
            return predictions, positives
        for start in range(0, len(items), self.config.batch):
            chunk = items[start : start + self.config.batch]
            xns, ys = (
                [self.model.encode(x, learning=True) for x, _, _ in chunk],
                [y for _, y, _ in chunk],
            )
            chunk_predictions, chunk_positives = self.model.predict_and_learn_many(xns, ys)
            self.history.learned_many(self.model, xns, ys)
            predictions += chunk_predictions
            positives += chunk_positives
        return predictions, positives

    def _monitor(
        self,
        items: Sequence[Item],
        predictions: list[Label | None],
        positives: list[float | None],
    ) -> tuple[list[float], dict[int, list[DriftAlert]]]:
        """Score, watch and alert, exactly as if the examples came one by one: the
        errors, and the alerts by position in ``items``."""
        ys = [y for _, y, _ in items]
        errors = self._errors(ys, predictions)
        # Where something fires, in the order step() would have raised it.
        events: dict[int, list[tuple[DriftKind, str, list[DriftEvidence], float | None]]] = {}
        times = [where.event_time for _, _, where in items]
        for detection in self.concept.update_many(
            errors, times, self.history.attributes, self._served_confirms
        ):
            evidence = [_concept_evidence(detection, errors[detection.index])]
            events.setdefault(detection.index, []).append(
                (DriftKind.CONCEPT, detection.signal.detector, evidence, detection.change_at)
            )
        watched = [x for x, _, _ in items]
        for i, drifts in self.data_drift.update_many(watched, self.config.drift_ignore):
            events.setdefault(i, []).append((DriftKind.DATA, "data_drift", _evidence(drifts), None))
        alerts_at: dict[int, list[DriftAlert]] = {}
        done = 0
        for i in sorted(events):
            self._account(items, ys, predictions, positives, done, i + 1)
            done = i + 1
            for kind, detector, evidence, change_at in events[i]:
                stream = AlertStream.ONLINE if kind is DriftKind.CONCEPT else AlertStream.FEATURES
                alerts_at.setdefault(i, []).append(
                    self._alert(kind, detector, evidence, stream, change_at=change_at)
                )
        self._account(items, ys, predictions, positives, done, len(items))
        return errors, alerts_at

    def watch_served(self, outcomes: Sequence[ServedOutcome]) -> list[DriftAlert]:
        """Watch the answers deployed versions served, now that their labels arrived.

        A concept alert here means the model users are served got worse; its
        ``model_version`` names that version and ``change_at`` where the change began.
        """
        alerts = [
            self._estimate_alert(found)
            for found in (self._estimate_labelled(o) for o in outcomes)
            if found is not None
        ]
        for found in self.served.update_many(outcomes):
            if found.concept is not None:
                evidence = [_concept_evidence(found.concept, found.concept.signal.statistic)]
                detector = found.concept.signal.detector
                change_at = found.concept.change_at
            else:
                evidence, detector, change_at = _evidence(found.drifts), "prediction_drift", None
            alerts.append(
                self._alert(
                    found.kind,
                    detector,
                    evidence,
                    AlertStream.SERVED,
                    version=found.version,
                    count=found.count,
                    change_at=change_at,
                    every_version=found.every_version,
                )
            )
        return alerts

    def _estimate_labelled(self, outcome: ServedOutcome) -> EstimateFinding | LossFinding | None:
        """A joined label, for the served version's estimate: a binary classifier's
        calibration, a regressor's loss model; nothing for other answers."""
        if outcome.positive is not None and is_binary(outcome.label):
            return self.estimates.labelled(outcome.version, outcome.positive, bool(outcome.label))
        numbers = (outcome.prediction, outcome.label)
        if outcome.features is not None and all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            return self.losses.labelled(
                outcome.version,
                outcome.features,
                float(outcome.prediction),  # type: ignore[arg-type]
                float(outcome.label),
            )
        return None

    def watch_regression(
        self, version: str, answers: Sequence[tuple[Inputs, float]]
    ) -> list[DriftAlert]:
        """Estimate a regressor ``version``'s error from answers it just served (with
        their inputs), before any label: an estimated degradation is alerted at once."""
        return [self._estimate_alert(f) for f in self.losses.served(version, answers)]

    def watch_answers(self, version: str, positives: Sequence[float]) -> list[DriftAlert]:
        """Estimate ``version``'s performance from answers it just served (each its
        P(positive)), before any label: an estimated degradation is alerted at once."""
        return [self._estimate_alert(f) for f in self.estimates.served(version, positives)]

    def _estimate_alert(self, found: EstimateFinding | LossFinding) -> DriftAlert:
        """The alert of an estimate finding, with its evidence: the estimate against
        what it crossed, then (for a degradation) the features whose shift explains it.
        A classifier's is about its accuracy, a regressor's about its MAE."""
        metric, value = (
            ("mae", found.estimate.mae)
            if isinstance(found, LossFinding)
            else ("accuracy", found.estimate.accuracy)
        )
        figures = found.estimate.as_dict(self.config.estimate.band_z)
        if found.kind == ESTIMATED_DEGRADATION:
            kind, detector = DriftKind.ESTIMATED, DEGRADATION_DETECTOR
            action = self.config.estimate_action
            evidence = [
                DriftEvidence(
                    feature=f"estimated_{metric}",
                    test=detector,
                    statistic=value,
                    threshold=found.threshold,
                ),
                *self._drifted_features(),
            ]
            metrics = {f"estimated_{k}": v for k, v in figures.items() if k != "answers"}
            metrics |= {f"reference_{metric}": found.reference, "answers": figures["answers"]}
        else:
            kind, detector, action = DriftKind.CONCEPT, DISAGREEMENT_DETECTOR, WARN
            gap = abs(found.reference - value)
            evidence = [
                DriftEvidence(
                    feature=metric, test=detector, statistic=gap, threshold=found.threshold
                )
            ]
            metrics = {
                f"estimated_{metric}": value,
                f"realized_{metric}": found.reference,
                "labelled": float(found.estimate.answers),
            }
        alert_id = (
            f"{self.config.model}:{AlertStream.SERVED.value}:{found.kind}:"
            f"{found.version}:{found.answers_seen}"
        )
        return self._drift_alert(
            alert_id, kind, detector, evidence, AlertStream.SERVED, found.version, action, metrics
        )

    def _drifted_features(self) -> list[DriftEvidence]:
        """The features whose latest drift statistic is past its threshold, most severe
        first: what moved in the inputs, when an estimated degradation asks why."""
        thresholds = self.config.drift.thresholds
        drifted = [
            DriftEvidence(feature=name, test=test, statistic=value, threshold=thresholds[test])
            for name, tests in self.data_drift.statistics().items()
            for test, value in tests.items()
            if test in thresholds and value > thresholds[test]
        ]
        return sorted(drifted, key=lambda e: (-e.statistic / e.threshold, e.feature))

    def _account(
        self,
        items: Sequence[Item],
        ys: list[Label],
        predictions: list[Label | None],
        positives: list[float | None],
        start: int,
        end: int,
    ) -> None:
        """Metrics, example count and alert window over ``items[start:end]``."""
        self.metrics.update_many(ys[start:end], predictions[start:end], positives[start:end])
        self.calibration.add_many(
            (
                (positive, bool(y))
                for y, positive in zip(ys[start:end], positives[start:end], strict=True)
                if positive is not None and is_binary(y)
            ),
            self.config.estimate.calibration_memory,
        )
        if self.config.slices:
            members: dict[str, list[int]] = {}
            for i in range(start, end):
                for name in self.slice_namer.slices_of(items[i][0]):
                    members.setdefault(name, []).append(i)
            for name, rows in members.items():
                if name not in self.slice_metrics:
                    self.slice_metrics[name] = PrequentialMetrics(
                        self.model.task, self.config.metric_window
                    )
                self.slice_metrics[name].update_many(
                    [ys[i] for i in rows],
                    [predictions[i] for i in rows],
                    [positives[i] for i in rows],
                )
        self.examples += end - start
        self._window.extend(where for _, _, where in items[start:end])

    def slice_report(self) -> dict[str, dict[str, float]]:
        """Prequential metrics per slice, with the slice's example count as ``n``."""
        return {
            name: {COUNT: float(m.count), **m.report()}
            for name, m in sorted(self.slice_metrics.items())
        }

    def _served_confirms(
        self, change_at: float | None, detected_at: float, rise: float | None
    ) -> bool:
        """The online learner's rise stands unless the answers users were served over
        the same span clearly did not rise with it (:meth:`ServedWatch.confirms`)."""
        if self.served.confirms(change_at, detected_at, rise) is False:
            self.unconfirmed += 1
            return False
        return True

    def _errors(self, ys: list[Label], predictions: list[Label | None]) -> list[float]:
        """Each example's prequential error (:func:`prediction_error`); a regressor with
        no answer yet counts as if it said 0."""
        if self.model.task == CLASSIFICATION:  # 0/1, never missing: without a call each
            return [0.0 if p == y else 1.0 for y, p in zip(ys, predictions, strict=True)]
        errors = []
        for y, p in zip(ys, predictions, strict=True):
            error = prediction_error(self.model.task, y, p)
            errors.append(abs(float(y)) if error is None else error)
        return errors

    def _alert(
        self,
        kind: DriftKind,
        detector: str,
        evidence: list[DriftEvidence],
        stream: AlertStream,
        *,
        version: str | None = None,
        count: int | None = None,
        change_at: float | None = None,
        every_version: bool = False,
    ) -> DriftAlert:
        """An alert on the online stream (``version`` None) or on a served version's,
        whose ``count`` labelled answers so far make its id stable across replays
        (``every_version``: on all answers served, ``version`` the one answering then)."""
        if version is None:
            alert_id = f"{self.config.model}:{kind.value}:{self.examples}"
            metrics = self.metrics.report()
        else:
            scope = EVERY_VERSION if every_version else version
            alert_id = f"{self.config.model}:{stream.value}:{kind.value}:{scope}:{count}"
            metrics = self.served.metrics_of(version)
        return self._drift_alert(
            alert_id,
            kind,
            detector,
            evidence,
            stream,
            version or self.version,
            RETRAIN if kind is DriftKind.CONCEPT else self.config.drift_action,
            metrics,
            change_at,
        )

    def _drift_alert(
        self,
        alert_id: str,
        kind: DriftKind,
        detector: str,
        evidence: list[DriftEvidence],
        stream: AlertStream,
        version: str,
        action: str,
        metrics: dict[str, float],
        change_at: float | None = None,
    ) -> DriftAlert:
        """The alert itself: its headline repeats the first evidence; the learner's
        recent window; only finite metrics."""
        top = evidence[0]
        return DriftAlert(
            alert_id=alert_id,
            model=self.config.model,
            kind=kind,
            detector=detector,
            feature=top.feature,
            statistic=top.statistic,
            threshold=top.threshold,
            window=self.window(),
            model_version=version,
            action=action,
            detected_at=datetime.now(UTC),
            evidence=evidence,
            metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
            stream=stream,
            change_at=None if change_at is None else datetime.fromtimestamp(change_at, UTC),
        )

    def window(self) -> DriftWindow:
        """Offsets (first, last per partition) and event-time span of the recent examples."""
        if not self._window:
            return DriftWindow()
        offsets: dict[str, tuple[int, int]] = {}
        for p in self._window:
            name = f"{p.topic}[{p.partition}]"
            first, _ = offsets.get(name, (p.offset, p.offset))
            offsets[name] = (first, p.offset)
        # The span, not first and last: late labels and interleaved partitions arrive
        # out of event-time order, and a retrain bounded by an alert needs its latest.
        seen = [p.event_time for p in self._window]
        times = (
            datetime.fromtimestamp(min(seen), UTC),
            datetime.fromtimestamp(max(seen), UTC),
        )
        return DriftWindow(offsets=offsets, times=times)


def _concept_evidence(detection: ConceptDetection, fallback: float | None) -> DriftEvidence:
    signal = detection.signal
    statistic = signal.statistic if signal.statistic is not None else fallback
    return DriftEvidence(
        feature="error",
        test=signal.detector + (" (held through a cooldown)" if detection.deferred else ""),
        statistic=statistic if statistic is not None else 0.0,
        threshold=signal.threshold if signal.threshold is not None else 0.0,
    )


def _evidence(drifts: list[FeatureDrift]) -> list[DriftEvidence]:
    return [
        DriftEvidence(feature=d.feature, test=d.test, statistic=d.statistic, threshold=d.threshold)
        for d in drifts
    ]
