"""The online learner's core: predict, score, monitor, then learn — one example at a time.

No Kafka or Redis here: :class:`Learner` takes examples and returns what happened,
including the drift alerts to publish. The whole object is what a checkpoint seals, so
a restored learner continues exactly where the original stopped.

>>> learner = Learner(LearnerConfig(model="demo", kind="logistic"))
>>> step = learner.step({"x": 1.0}, True, Position("t", 0, 0, 1_700_000_000.0))
>>> step.prediction, learner.examples
(False, 1)
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.contracts import DriftAlert, DriftEvidence, DriftKind, DriftWindow
from streams.detectors import DEFAULT_DETECTOR, make_detector
from streams.drift import DataDriftMonitor, DriftConfig, FeatureDrift
from streams.evaluation import PrequentialMetrics
from streams.models import CLASSIFICATION, Features, Label, make_model, numeric

PREDICTION_FEATURE = "prediction"
RETRAIN = "retrain"


@dataclass(frozen=True)
class LearnerConfig:
    """What the learner learns and how it watches itself (from settings)."""

    model: str
    kind: str = "logistic"
    detector: str = DEFAULT_DETECTOR
    metric_window: int = 500
    concept_cooldown: int = 1_000
    drift: DriftConfig = field(default_factory=DriftConfig)
    seed: int = 42


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


class Learner:
    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        self.model = make_model(config.kind, config.seed)
        self.metrics = PrequentialMetrics(self.model.task, config.metric_window)
        self.detector = make_detector(config.detector, seed=config.seed)
        self.data_drift = DataDriftMonitor(config.drift)
        self.prediction_drift = DataDriftMonitor(config.drift)
        self.examples = 0
        self.version = f"{config.model}@online"
        self._last_concept_alert: int | None = None
        self._window: collections.deque[Position] = collections.deque(maxlen=config.drift.window)

    def step(self, x: Features, y: Label, where: Position) -> Step:
        """Prequential step: predict and score ``x`` first, then learn ``(x, y)``."""
        xn = numeric(x)
        prediction, proba = self.model.predict(xn)
        self.metrics.update(y, prediction, proba)
        error = self._error(y, prediction)
        signal = self.detector.update(error)
        drifted_features = self.data_drift.update(x)
        drifted_predictions = self.prediction_drift.update(
            {PREDICTION_FEATURE: _prediction_value(prediction, proba)}
        )
        self.model.learn(xn, y)
        self.examples += 1
        self._window.append(where)

        alerts = []
        cooled = (
            self._last_concept_alert is None
            or self.examples - self._last_concept_alert >= self.config.concept_cooldown
        )
        if signal.drifted and cooled:
            self._last_concept_alert = self.examples
            evidence = DriftEvidence(
                feature="error",
                test=signal.detector,
                statistic=signal.statistic if signal.statistic is not None else error,
                threshold=signal.threshold if signal.threshold is not None else 0.0,
            )
            alerts.append(self._alert(DriftKind.CONCEPT, signal.detector, [evidence]))
        if drifted_features:
            alerts.append(self._alert(DriftKind.DATA, "data_drift", _evidence(drifted_features)))
        if drifted_predictions:
            alerts.append(
                self._alert(
                    DriftKind.PREDICTION, "prediction_drift", _evidence(drifted_predictions)
                )
            )
        return Step(prediction, error, alerts)

    def _error(self, y: Label, prediction: Label | None) -> float:
        if self.model.task == CLASSIFICATION:
            return 0.0 if prediction == y else 1.0
        return abs(float(y) - float(prediction or 0.0))

    def _alert(self, kind: DriftKind, detector: str, evidence: list[DriftEvidence]) -> DriftAlert:
        top = evidence[0]
        return DriftAlert(
            alert_id=f"{self.config.model}:{kind.value}:{self.examples}",
            model=self.config.model,
            kind=kind,
            detector=detector,
            feature=top.feature,
            statistic=top.statistic,
            threshold=top.threshold,
            window=self.window(),
            model_version=self.version,
            action=RETRAIN,
            detected_at=datetime.now(UTC),
            evidence=evidence,
            metrics={k: v for k, v in self.metrics.report().items() if math.isfinite(v)},
        )

    def window(self) -> DriftWindow:
        """Offsets (first, last per partition) and times of the recent examples."""
        if not self._window:
            return DriftWindow()
        offsets: dict[str, tuple[int, int]] = {}
        for p in self._window:
            name = f"{p.topic}[{p.partition}]"
            first, _ = offsets.get(name, (p.offset, p.offset))
            offsets[name] = (first, p.offset)
        times = (
            datetime.fromtimestamp(self._window[0].event_time, UTC),
            datetime.fromtimestamp(self._window[-1].event_time, UTC),
        )
        return DriftWindow(offsets=offsets, times=times)


def _prediction_value(prediction: Label | None, proba: dict[Label, float]) -> float | str | None:
    """What prediction drift watches: P(positive) for binary models, else the label."""
    if proba and (True in proba or 1 in proba):
        return proba.get(True, proba.get(1, 0.0))
    if isinstance(prediction, bool):
        return float(prediction)
    return prediction


def _evidence(drifts: list[FeatureDrift]) -> list[DriftEvidence]:
    return [
        DriftEvidence(feature=d.feature, test=d.test, statistic=d.statistic, threshold=d.threshold)
        for d in drifts
    ]
