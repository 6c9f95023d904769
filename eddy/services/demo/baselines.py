"""What users would have been served without Eddy's loop, on the very same requests.

The demo measures the loop against three simpler policies, replayed after the run on the
requests it sent (the feature vectors the predictor served them with, their labels,
each label arriving :data:`~eddy.services.demo.run.LABEL_DELAY_S` after its request):

- **never retrain**: the first champion (the cold start's online snapshot) answers
  everything;
- **online learner alone**: a fresh online model of the deployment's kind answers each
  request, having learned every label that had arrived by then;
- **fixed schedule**: every :data:`SCHEDULE_S` seconds a scikit-learn model (the
  retrainer's estimator) is fitted on the last ``window`` labels that had arrived, and
  answers until the next one (the first champion answers before the first fit).

Each returns ``(seconds since start, right)`` per request, like the demo's own outcomes.
Pure: the caller fetches the vectors and loads the first champion.

>>> requests = [Request(float(t), {"x": float(t % 2)}, t % 2 == 1) for t in range(40)]
>>> right = online_alone(requests, kind="logistic", seed=1, label_delay_s=1.0)
>>> sum(r for _, r in right[-10:])
10
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eddy.services.training.core import make_estimator
from eddy.streams.learning.models import Label, encode_for, fit_vectors, make_model

SCHEDULE_S = 10.0  # how often the fixed-schedule baseline refits


@dataclass(frozen=True)
class Request:
    at: float  # seconds since the start, when it was sent
    features: dict[str, Any]  # as the predictor served it
    label: Label


Outcomes = list[tuple[float, bool]]


def never_retrained(
    requests: Sequence[Request], predict: Callable[[dict[str, Any]], Any]
) -> Outcomes:
    """The first champion's answers to every request."""
    return [(r.at, predict(r.features) == r.label) for r in requests]


def online_alone(
    requests: Sequence[Request], *, kind: str, seed: int, label_delay_s: float
) -> Outcomes:
    """A fresh online model's answers, each after learning the labels arrived by then."""
    model = make_model(kind, seed)
    waiting: collections.deque[Request] = collections.deque()
    outcomes: Outcomes = []
    for request in sorted(requests, key=lambda r: r.at):
        while waiting and waiting[0].at + label_delay_s <= request.at:
            done = waiting.popleft()
            model.learn_one(done.features, done.label)
        outcomes.append((request.at, model.predict_one(request.features) == request.label))
        waiting.append(request)
    return outcomes


def fixed_schedule(
    requests: Sequence[Request],
    predict_first: Callable[[dict[str, Any]], Any],
    *,
    estimator: str,
    window: int,
    min_examples: int,
    label_delay_s: float,
    every_s: float = SCHEDULE_S,
) -> Outcomes:
    """Answers of a model refitted every ``every_s`` on the last ``window`` arrived labels."""
    ordered = sorted(requests, key=lambda r: r.at)
    arrived: collections.deque[Request] = collections.deque(maxlen=window)
    pending = collections.deque(ordered)
    fitted: Any = None
    next_fit = ordered[0].at + every_s if ordered else 0.0
    outcomes: Outcomes = []
    for request in ordered:
        while pending and pending[0].at + label_delay_s <= request.at:
            arrived.append(pending.popleft())
        if request.at >= next_fit:
            next_fit = request.at + every_s
            labels = [r.label for r in arrived]
            if len(arrived) >= min_examples and len(set(labels)) > 1:
                fitted = make_estimator(estimator, classification=True, seed=42)
                fitted.fit(fit_vectors([r.features for r in arrived]), labels)
        if fitted is None:
            answer = predict_first(request.features)
        else:
            answer = fitted.predict(encode_for(fitted, [request.features]))[0]
        outcomes.append((request.at, bool(answer == request.label)))
    return outcomes


def timeline(
    outcomes: Sequence[tuple[float, bool]], start: float, step: float = SCHEDULE_S
) -> list[float | None]:
    """Accuracy per ``step`` seconds from ``start``: where one policy gains or loses.

    >>> timeline([(0.5, True), (1.5, False), (2.5, True), (3.5, True)], 0.0, step=2.0)
    [0.5, 1.0]
    """
    buckets: dict[int, list[bool]] = {}
    for at, right in outcomes:
        if at >= start:
            buckets.setdefault(int((at - start) // step), []).append(right)
    last = max(buckets, default=-1)
    return [round(sum(b) / len(b), 4) if (b := buckets.get(k)) else None for k in range(last + 1)]


def accuracy(outcomes: Sequence[tuple[float, bool]], since: float = 0.0) -> float | None:
    """Share of right answers among those given at or after ``since``."""
    chosen = [right for at, right in outcomes if at >= since]
    return round(sum(chosen) / len(chosen), 4) if chosen else None
