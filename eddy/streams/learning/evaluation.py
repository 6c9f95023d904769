"""Prequential metrics: each example is scored by the model before it learns from it.

Cumulative and rolling (last ``window`` examples) accuracy, log loss and ROC AUC for
classifiers, MAE and RMSE for regressors. They are computed here from running sums
rather than with River's metric objects: the learner updates them for a whole batch of
examples with a few array operations, where River's objects cost several Python calls
per example (ROC AUC alone updates ten confusion matrices). The definitions are River's
(its clamping of probabilities, its ten-threshold ROC AUC), and a test holds the two
to the same figures.

>>> m = PrequentialMetrics("classification", window=2)
>>> m.update_many([True, True, True], [True, False, True], [0.9, 0.6, 0.8])
>>> m.report()["accuracy"], m.report()["rolling_accuracy"]
(0.6667, 0.5)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from eddy.streams.learning.models import CLASSIFICATION, Label

DECIMALS = 4
ROC_THRESHOLDS = 10  # River's ROCAUC default: the curve is sampled at ten thresholds
PROBA_FLOOR = 1e-15  # River's clamp, so a confident mistake costs 34.5 nats, not infinity

CLASSIFICATION_METRICS = ("accuracy", "log_loss", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse")
CUMULATIVE_ONLY = frozenset({"roc_auc"})


def _roc_thresholds() -> np.ndarray:
    thresholds = np.array([i / (ROC_THRESHOLDS - 1) for i in range(ROC_THRESHOLDS)])
    thresholds[0] -= 1e-7
    thresholds[-1] += 1e-7
    return thresholds


class PrequentialMetrics:
    """Cumulative and rolling metrics for one model; picklable for checkpoints.

    Log loss and ROC AUC count the examples whose label is binary (a boolean or 0/1),
    scored by the probability of the positive class; accuracy counts every example.
    """

    def __init__(self, task: str, window: int) -> None:
        self.task = task
        self.window = window
        self.count = 0
        names = CLASSIFICATION_METRICS if task == CLASSIFICATION else REGRESSION_METRICS
        # Per metric: the sum of per-example terms and how many there were ...
        self._sum = dict.fromkeys(names, 0.0)
        self._n = dict.fromkeys(names, 0)
        # ... and the last `window` terms, for the rolling versions.
        self._recent: dict[str, deque[float]] = {
            name: deque(maxlen=window) for name in names if name not in CUMULATIVE_ONLY
        }
        # ROC AUC: per threshold, counts of [true positive, false negative, false
        # positive, true negative] of "P(positive) > threshold".
        self._roc = np.zeros((ROC_THRESHOLDS, 4), dtype=np.int64)
        self._thresholds = _roc_thresholds()

    def update(self, y: Label, prediction: Label | None, positive: float | None) -> None:
        """One example; ``positive`` is P(positive class), None for regressors."""
        self.update_many([y], [prediction], [positive])

    def update_many(
        self,
        ys: Sequence[Label],
        predictions: Sequence[Label | None],
        positives: Sequence[float | None],
    ) -> None:
        """Examples in order: the same figures as updating them one by one."""
        if not ys:
            return
        self.count += len(ys)
        if self.task == CLASSIFICATION:
            self._classification(ys, predictions, positives)
        else:
            self._regression(ys, predictions)

    def _add(self, name: str, terms: Sequence[float]) -> None:
        self._sum[name] += math.fsum(terms)
        self._n[name] += len(terms)
        if name in self._recent:
            self._recent[name].extend(terms)

    def _classification(
        self,
        ys: Sequence[Label],
        predictions: Sequence[Label | None],
        positives: Sequence[float | None],
    ) -> None:
        pairs = zip(ys, predictions, strict=True)
        self._add("accuracy", [1.0 if p == y else 0.0 for y, p in pairs])
        binary = [(bool(y), p or 0.0) for y, p in zip(ys, positives, strict=True) if is_binary(y)]
        if not binary:
            return
        truth = np.fromiter((t for t, _ in binary), dtype=bool, count=len(binary))
        proba = np.fromiter((p for _, p in binary), dtype=float, count=len(binary))
        clamped = np.clip(proba, PROBA_FLOOR, 1 - PROBA_FLOOR)
        losses = np.where(truth, -np.log(clamped), -np.log(1 - clamped))
        self._add("log_loss", losses.tolist())
        above = proba[None, :] > self._thresholds[:, None]
        self._roc[:, 0] += (above & truth).sum(axis=1)
        self._roc[:, 1] += (~above & truth).sum(axis=1)
        self._roc[:, 2] += (above & ~truth).sum(axis=1)
        self._roc[:, 3] += (~above & ~truth).sum(axis=1)
        self._n["roc_auc"] += len(binary)

    def _regression(self, ys: Sequence[Label], predictions: Sequence[Label | None]) -> None:
        pairs = zip(ys, predictions, strict=True)
        errors = [float(y) - float(p) for y, p in pairs if p is not None]
        self._add("mae", [abs(e) for e in errors])
        self._add("rmse", [e * e for e in errors])

    def _value(self, name: str, total: float, n: int) -> float:
        if n == 0:
            return 0.0
        mean = total / n
        return math.sqrt(mean) if name == "rmse" else mean

    def _roc_auc(self) -> float:
        tp, fn, fp, tn = (self._roc[:, k].astype(float) for k in range(4))
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            fpr = np.where(fp + tn > 0, fp / (fp + tn), 0.0)
        return float(-np.trapezoid(tpr, fpr))

    def report(self) -> dict[str, float]:
        """Every metric, cumulative and ``rolling_``, rounded for display and alerts."""
        out = {"examples": float(self.count)}
        for name in self._sum:
            value = (
                self._roc_auc()
                if name == "roc_auc"
                else self._value(name, self._sum[name], self._n[name])
            )
            out[name] = round(value, DECIMALS)
        for name, recent in self._recent.items():
            rolling = self._value(name, math.fsum(recent), len(recent))
            out[f"rolling_{name}"] = round(rolling, DECIMALS)
        return out


def is_binary(y: Label) -> bool:
    return isinstance(y, bool) or y in (0, 1)
