"""Scoring requests with whichever models serve: the predictor's pure core.

:class:`ServingModels` holds the champion and the challengers of one model name as one
immutable value; the predictor swaps the whole value at once when ``model-updates``
says so, so a batch is scored by exactly one champion and every answer names it.
:func:`score_batch` scores many feature vectors with one model, in one call for
scikit-learn pipelines, one by one for River models.

>>> from eddy.streams.learning.models import make_model
>>> model = make_model("logistic")
>>> model.learn_one({"x": 1.0}, True)
>>> [p.prediction for p in score_batch(Loaded("m", 1, "river", model), [{"x": 1.0}])]
[True]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eddy.streams.learning.models import encode_for

Answer = bool | int | float | str
# An unscorable request's error message carries this much of the model's exception.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Loaded:
    """A verified, deserialised model version ready to score.

    ``artifact`` is the registry's content address of the version's bytes (empty when it
    did not come from the registry): with the version it names the model exactly, e.g.
    for cached answers.
    """

    model: str
    version: int
    flavor: str
    estimator: Any
    artifact: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass(frozen=True)
class ServingModels:
    champion: Loaded | None = None
    challengers: tuple[Loaded, ...] = field(default_factory=tuple)


# The keys a binary classifier's positive class takes in ``Scored.proba`` (label text).
POSITIVE_KEYS = ("True", "1")


@dataclass(frozen=True)
class Scored:
    prediction: Answer | None
    proba: dict[str, float]

    @property
    def positive(self) -> float | None:
        """P(positive class) of a binary classifier; None otherwise.

        >>> Scored(True, {"False": 0.2, "True": 0.8}).positive, Scored("a", {"a": 1.0}).positive
        (0.8, None)
        """
        if len(self.proba) != 2:
            return None
        return next((self.proba[k] for k in POSITIVE_KEYS if k in self.proba), None)


@dataclass(frozen=True)
class Unscorable:
    """A vector the model raised on: the request gets an error answer with ``reason``."""

    reason: str


def score_each(model: Loaded, vectors: Sequence[dict[str, Any]]) -> list[Scored | Unscorable]:
    """Like :func:`score_batch`, but a vector the model cannot score costs only its own
    answer: when the batch raises, each vector is scored alone, so one request that a
    user's model chokes on cannot take the batch (or the process) down with it.

    Scoring is pure (no I/O), so whatever it raises is about the model and its input.

    >>> class Picky:
    ...     classes_ = [False, True]
    ...     def predict_proba(self, xs):
    ...         if any(x["a"] < 0 for x in xs):
    ...             raise ValueError("negative a")
    ...         return [[0.0, 1.0] for _ in xs]
    >>> picky = Loaded("m", 1, "sklearn", Picky())
    >>> good, bad = score_each(picky, [{"a": 1.0}, {"a": -1.0}])
    >>> good.prediction, bad
    (True, Unscorable(reason='ValueError: negative a'))
    """
    try:
        return list(score_batch(model, vectors))
    except Exception:  # isolated per vector below, where it is reported
        results: list[Scored | Unscorable] = []
        for vector in vectors:
            try:
                results.extend(score_batch(model, [vector]))
            except Exception as exc:  # this request's error answer
                results.append(Unscorable(f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]))
        return results


def score_batch(model: Loaded, vectors: Sequence[dict[str, Any]]) -> list[Scored]:
    """Predictions (and class probabilities, keyed by label text) for each vector."""
    xs = encode_for(model.estimator, vectors)
    if not xs:
        return []
    if model.flavor == "sklearn":
        estimator = model.estimator
        if hasattr(estimator, "predict_proba"):
            classes = [_plain(c) for c in estimator.classes_]
            labels = [str(c) for c in classes]
            probabilities = np.asarray(estimator.predict_proba(xs))
            # Whole-array conversions to Python values: per row and per cell, numpy's
            # scalars cost more than the rest of an answer.
            return [
                Scored(
                    classes[best],
                    {label: round(p, 6) for label, p in zip(labels, row, strict=True)},
                )
                for best, row in zip(
                    probabilities.argmax(axis=1).tolist(), probabilities.tolist(), strict=True
                )
            ]
        return [Scored(float(y), {}) for y in estimator.predict(xs)]
    scored = []
    for x in xs:
        prediction, proba = model.estimator.predict(x)
        scored.append(
            Scored(
                _plain(prediction) if prediction is not None else None,
                {str(k): round(float(v), 6) for k, v in proba.items()},
            )
        )
    return scored


def _plain(value: Any) -> Answer:
    """numpy scalars as plain Python values, so answers serialise as JSON."""
    return value.item() if hasattr(value, "item") else value  # type: ignore[no-any-return]
