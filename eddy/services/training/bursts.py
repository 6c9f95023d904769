"""Alert bursts: which alerts make one retrain, when it runs, and what it may learn from.

Alerts for a model within ``EDDY_RETRAIN_DEBOUNCE_S`` of the first one fold into one
burst and one retrain (a burst that waits, below, takes in the alerts of its wait too).
A *concept* alert also bounds the data: once the relation between features and labels
has changed, the labels from before the change teach the old concept, so the retrain
learns only from examples after the change point the detector estimated (or, without
one, the latest event time it had seen when it fired), and waits (up to
``EDDY_RETRAIN_DRIFT_WAIT_S``, retrying with a back-off) until enough of them have
arrived to judge a promotion. When the wait is over it takes those
if they reach the retrainer's minimum, else the whole window: a blend judged on the
newest examples still beats a champion failing them. Data and prediction drift leave
the labels right for their inputs, so they keep the whole window. Pure: no Kafka, no
registry.

>>> from datetime import UTC, datetime
>>> from eddy.streams.messages.contracts import DriftAlert, DriftWindow
>>> seen = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
>>> alert = DriftAlert(alert_id="m:concept:900", model="m", kind="concept", detector="adwin",
...     statistic=0.4, threshold=0.0, action="retrain",
...     window=DriftWindow(times=(datetime(2026, 1, 1, tzinfo=UTC), seen)))
>>> burst = fold(None, alert, now=100.0, debounce_s=5.0)
>>> burst.alert_ids, burst.since == seen, burst.due
(('m:concept:900',), True, 105.0)
>>> decidable_size(min_holdout=200, holdout=0.2)
1000
>>> again = burst.retry(now=100.0, debounce_s=1.0)
>>> again.due, again.retry(now=100.0, debounce_s=1.0).due
(101.0, 102.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from eddy.streams.messages.contracts import DriftAlert, DriftKind, TrainingExample

RETRY_MIN_S = 1.0  # first wait between attempts (at least the debounce)
RETRY_MAX_S = 60.0  # the back-off doubles up to this
AFTER_DRIFT_SEEN = "after_drift_seen"  # lineage/report key: the bound a retrain learned after


@dataclass(frozen=True)
class Burst:
    """Alerts folded into one retrain of a model.

    ``since``: learn only from examples with a later event time (None: the whole
    window). ``due``: monotonic time of the next attempt.
    """

    first_seen: float
    alert_ids: tuple[str, ...]
    since: datetime | None
    due: float
    attempts: int = 0

    def waiting(self, now: float, wait_s: float) -> bool:
        """Still within the time a concept burst may wait for examples after the drift."""
        return self.since is not None and now - self.first_seen < wait_s

    def retry(self, now: float, debounce_s: float) -> Burst:
        """Due again after a back-off doubling per attempt: each attempt reads the
        whole window from Kafka, so a long wait should cost a handful of reads."""
        step = min(RETRY_MAX_S, max(RETRY_MIN_S, debounce_s) * 2**self.attempts)
        return replace(self, due=now + step, attempts=self.attempts + 1)


def change_seen(alert: DriftAlert) -> datetime | None:
    """The event time after which a retrain for ``alert`` should learn, if bounded.

    For a concept alert: where its detector estimates the change began (``change_at``:
    ADWIN's cut, Page-Hinkley's onset), else the last example it had seen when it fired
    (the change lies before it). Other kinds, or an alert without either: unbounded.
    """
    if alert.kind is not DriftKind.CONCEPT:
        return None
    if alert.change_at is not None:
        return alert.change_at
    return None if alert.window.times is None else alert.window.times[1]


def fold(burst: Burst | None, alert: DriftAlert, now: float, debounce_s: float) -> Burst:
    """``burst`` with ``alert`` added, or a new burst due ``debounce_s`` from now.

    The latest change wins: a second concept alert means the concept moved again.
    """
    since = change_seen(alert)
    if burst is None:
        return Burst(now, (alert.alert_id,), since, now + debounce_s)
    if burst.since is not None and (since is None or burst.since > since):
        since = burst.since
    return replace(burst, alert_ids=(*burst.alert_ids, alert.alert_id), since=since)


def examples_since(
    examples: Sequence[TrainingExample], since: datetime | None
) -> list[TrainingExample]:
    """The examples with an event time after ``since`` (all of them when None)."""
    if since is None:
        return list(examples)
    return [e for e in examples if e.event_time > since]


@dataclass(frozen=True)
class Chosen:
    """What a retrain learns from; ``after_drift``: only the examples after ``since``."""

    examples: list[TrainingExample]
    after_drift: bool


def choose_examples(
    window: Sequence[TrainingExample],
    since: datetime | None,
    waiting: bool,
    min_holdout: int,
    holdout: float,
) -> Chosen | None:
    """The examples a retrain learns from, or None to wait for more after the drift.

    >>> choose_examples([], None, waiting=True, min_holdout=5, holdout=0.2)
    Chosen(examples=[], after_drift=False)
    """
    if since is None:
        return Chosen(list(window), after_drift=False)
    after = examples_since(window, since)
    if len(after) >= decidable_size(min_holdout, holdout):
        return Chosen(after, after_drift=True)
    if waiting:
        return None
    if len(after) >= 2 * min_holdout:
        return Chosen(after, after_drift=True)
    return Chosen(list(window), after_drift=False)


def decidable_size(min_holdout: int, holdout: float) -> int:
    """Fewest examples whose held-out share (as the retrainer splits it) decides a promotion."""
    size = math.ceil(min_holdout / holdout)
    while int(size * holdout) < min_holdout:  # float rounding in the split
        size += 1
    return size
