"""Prequential metrics: each example is scored by the model before it learns from it.

Cumulative and rolling (last ``window`` examples) versions of each metric, River's
metric objects behind one small class so nothing else imports ``river.metrics``.

>>> m = PrequentialMetrics("classification", window=2)
>>> seen = [(True, True, {True: 0.9}), (False, True, {True: 0.6}), (True, True, {True: 0.8})]
>>> for y, p, proba in seen:
...     m.update(y, p, proba)
>>> m.report()["accuracy"], m.report()["rolling_accuracy"]
(0.6667, 0.5)
"""

from __future__ import annotations

from typing import Any

from river import metrics, utils

from streams.models import CLASSIFICATION, Label

DECIMALS = 4


CLASSIFICATION_METRICS: dict[str, Any] = {
    "accuracy": metrics.Accuracy,
    "log_loss": metrics.LogLoss,
    "roc_auc": metrics.ROCAUC,
}
REGRESSION_METRICS: dict[str, Any] = {"mae": metrics.MAE, "rmse": metrics.RMSE}
CUMULATIVE_ONLY = frozenset({"roc_auc"})


class PrequentialMetrics:
    """Cumulative and rolling metrics for one model; picklable for checkpoints.

    Log loss and ROC AUC are computed for binary problems (labels that are booleans or
    0/1) from the probability of the positive class; accuracy works for any labels.
    """

    def __init__(self, task: str, window: int) -> None:
        self.task = task
        kinds = CLASSIFICATION_METRICS if task == CLASSIFICATION else REGRESSION_METRICS
        self.cumulative = {name: kind() for name, kind in kinds.items()}
        # ROC AUC keeps a confusion matrix per threshold: cumulative only, as a rolling
        # version would cost more than the model itself.
        self.rolling: dict[str, Any] = {
            name: utils.Rolling(kind, window_size=window)
            for name, kind in kinds.items()
            if name not in CUMULATIVE_ONLY
        }
        self.count = 0

    def update(self, y: Label, prediction: Label | None, proba: dict[Label, float]) -> None:
        self.count += 1
        for name in self.cumulative:
            pair = self._pair(name, y, prediction, proba)
            if pair is not None:
                self.cumulative[name].update(*pair)
                if name in self.rolling:
                    self.rolling[name].update(*pair)

    def _pair(
        self, name: str, y: Label, prediction: Label | None, proba: dict[Label, float]
    ) -> tuple[Any, Any] | None:
        if self.task != CLASSIFICATION:
            return (y, prediction) if prediction is not None else None
        if name == "accuracy":
            return y, prediction
        if not _is_binary(y):
            return None
        positive = proba.get(True, proba.get(1, 0.0))
        return bool(y), positive

    def report(self) -> dict[str, float]:
        """Every metric, cumulative and ``rolling_``, rounded for display and alerts."""
        out = {"examples": float(self.count)}
        for name, metric in self.cumulative.items():
            out[name] = round(float(metric.get()), DECIMALS)
        for name, metric in self.rolling.items():
            out[f"rolling_{name}"] = round(float(metric.get()), DECIMALS)
        return out


def _is_binary(y: Label) -> bool:
    return isinstance(y, bool) or y in (0, 1)
