"""Training-serving skew: did the predictor serve the features the feature code gives?

Training examples and snapshots are computed by the feature worker; answers use the
features the predictor assembled at serving time. Both are meant to come from one code
path (:mod:`eddy.streams.features.compute` over
:data:`~eddy.streams.features.definitions.FEATURES`), and this module checks that promise after the
fact: for a logged request, it replays the entity's events from the event log through the worker's
own fold (:func:`~eddy.streams.features.pipeline.fold_events`), reads the features as of the serving
time with the request's own features merged in (exactly as the predictor does), and
compares them with the snapshot of what the predictor used. Nothing here does I/O.

**Which events the worker had applied when the request was served.** The worker applies
a partition's events in offset order, so what it had applied at serving time ``at`` is
a prefix (by offset) of the entity's events. The check takes the events appended (Kafka
timestamp) up to ``at`` plus :data:`READ_SLACK_S` — the predictor fixes ``at`` just
before it reads the online state; a later record cannot have been applied, nor can any
record after it in the partition — and, because the worker lags by up to a batch, lets
the events appended after ``at`` minus :data:`APPLY_ALLOWANCE_S` count as possibly
still in flight: every prefix that drops only such events is a candidate, and the
request is judged against the longest candidate that matches, or, when none does, the
one with the fewest differences (longest first among equals). Producers' and
predictors' clocks are assumed to agree to well within the allowance.

**Which events are needed.** Windowed aggregates see only events with event time within
``FeatureSet.horizon_s`` before ``at``; since the worker refuses an event whose time is
further than the allowed event-time skew ahead of its arrival (taken as its append
time, here and when the replay decodes it), such an event was appended no earlier than
``at - horizon - skew``, which is where the reader starts (:func:`history_start`). Last
values and the time since the last event can come from older events: a raw feature no
replayed event carries, the time since the last event of an entity with no replayed
event, and ratios over either are *unverifiable* — counted and reported, never called
skew. Every other feature is compared, including features present on one side only.

**Tolerance.** Two numbers differ when their relative difference
``|a - b| / max(|a|, |b|)`` exceeds the tolerance (equal to it is not skew); booleans,
strings and ``None`` differ unless equal.

>>> relative_difference(100.0, 100.5) <= 0.005, relative_difference(3, 3.0)
(True, 0.0)
>>> relative_difference("DE", None), relative_difference(True, 1)
(inf, inf)
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import (
    TIME_SINCE_LAST,
    EntityState,
    FeatureSet,
    FeatureValue,
    feature_vector,
)
from eddy.streams.features.pipeline import decode_batch, fold_events
from eddy.streams.messages.contracts import (
    AlertExample,
    DriftAlert,
    DriftEvidence,
    DriftKind,
    DriftWindow,
    Event,
)
from eddy.streams.store.online import StoredState

# How long after its append an event may still be waiting in the worker's batch.
APPLY_ALLOWANCE_S = 30.0
# How long after fixing its as-of time the predictor may read the online state.
READ_SLACK_S = 1.0
EXAMPLES_PER_FEATURE = 3
DETECTOR = "skew_check"
TEST = "mismatch_rate"
# Retraining cannot repair serving code: the retrainer acts only on "retrain".
ACTION = "investigate"
SAMPLE_ID_CHARS = 16


@dataclass(frozen=True)
class Served:
    """One logged prediction request: what it asked and what the predictor used."""

    request_id: str
    entity_id: str
    at: float  # serving time: the predictor's as-of time, epoch seconds
    features: dict[str, FeatureValue]  # the snapshot: the exact vector scored
    raw: dict[str, FeatureValue]  # the request's own features
    model_version: str | None = None
    feature_set: str | None = None  # the fingerprint the answer says it was computed with


@dataclass(frozen=True)
class LoggedEvent:
    """One record of the events topic with its Kafka timestamp (epoch seconds)."""

    record: RawRecord
    appended_at: float


@dataclass(frozen=True)
class History:
    """An entity's events appended before serving, in log order; the first ``settled``
    were certainly applied, the rest may still have been in flight."""

    events: tuple[LoggedEvent, ...] = ()
    settled: int = 0


@dataclass(frozen=True)
class Recomputed:
    """The features one candidate prefix gives, and those it cannot vouch for."""

    features: dict[str, FeatureValue]
    unknown: frozenset[str]
    applied: int


@dataclass(frozen=True)
class FeatureDiff:
    """One feature of one request: served value vs recomputed value."""

    request_id: str
    feature: str
    served: FeatureValue
    recomputed: FeatureValue
    relative: float  # inf: not comparable as numbers

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "feature": self.feature,
            "served": self.served,
            "recomputed": self.recomputed,
            "relative_difference": _finite_or_none(self.relative),
        }


@dataclass(frozen=True)
class RequestCheck:
    """The verdict on one request, against its best-fitting candidate prefix."""

    served: Served
    diffs: tuple[FeatureDiff, ...]
    compared: int
    unverified: tuple[str, ...]
    applied: int  # events of that prefix
    in_flight: int  # events appended before serving but taken as not yet applied


@dataclass(frozen=True)
class FeatureSkew:
    """One skewed feature over the sample: how often and how much it differed."""

    feature: str
    requests: int
    rate: float
    largest: float  # largest relative difference (inf: a non-numeric mismatch)
    examples: tuple[FeatureDiff, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "requests": self.requests,
            "rate": self.rate,
            "largest_relative_difference": _finite_or_none(self.largest),
            "examples": [e.as_dict() for e in self.examples],
        }


@dataclass(frozen=True)
class SkewReport:
    """What one check found; ``features`` are ranked, most skewed first."""

    checked: int
    skipped: dict[str, int]
    compared: int
    unverified: int
    skewed_requests: int
    features: tuple[FeatureSkew, ...]
    sample_id: str
    model_version: str | None = None
    window: DriftWindow = field(default_factory=DriftWindow)

    @property
    def skewed(self) -> bool:
        return bool(self.features)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "skipped": self.skipped,
            "features_compared": self.compared,
            "features_unverified": self.unverified,
            "skewed_requests": self.skewed_requests,
            "skewed": self.skewed,
            "sample_id": self.sample_id,
            "model_version": self.model_version,
            "window": self.window.model_dump(mode="json"),
            "features": [f.as_dict() for f in self.features],
        }


def history_start(at: float, fs: FeatureSet, max_future_s: float) -> float:
    """The earliest append time of an event that can matter to features as of ``at``."""
    return at - fs.horizon_s - max_future_s


def relative_difference(served: FeatureValue, recomputed: FeatureValue) -> float:
    """``|a - b| / max(|a|, |b|)`` for two numbers; 0 or inf for anything else."""
    a, b = _number(served), _number(recomputed)
    if a is not None and b is not None:
        return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))
    same = type(served) is type(recomputed) and served == recomputed
    return 0.0 if same else math.inf


def candidates(
    history: History,
    fs: FeatureSet,
    entity_id: str,
    at: float,
    raw: Mapping[str, FeatureValue],
    max_future: timedelta,
) -> list[Recomputed]:
    """The features as of ``at`` for every prefix the worker may have applied, longest
    first: all settled events, plus none, some or all of the in-flight ones."""
    decoded = [_decode(event, max_future) for event in history.events]
    stored = StoredState(0, EntityState())
    loaded = {entity_id: stored}
    settled = [d for d in decoded[: history.settled] if d is not None]
    fold_events(settled, loaded, fs)
    found = [_recompute(stored.state, fs, at, raw, history.settled)]
    for applied, event in enumerate(decoded[history.settled :], start=history.settled + 1):
        if event is not None:
            fold_events([event], loaded, fs)
        found.append(_recompute(stored.state, fs, at, raw, applied))
    return found[::-1]


def compare(
    served: Served, recomputed: Recomputed, fs: FeatureSet, tolerance: float
) -> tuple[list[FeatureDiff], int, list[str]]:
    """(differences beyond ``tolerance``, features compared, features unverifiable)."""
    diffs: list[FeatureDiff] = []
    compared = 0
    unverified: list[str] = []
    for name in sorted(set(served.features) | set(recomputed.features)):
        if not _verifiable(name, recomputed, fs):
            unverified.append(name)
            continue
        compared += 1
        mine, theirs = served.features.get(name), recomputed.features.get(name)
        relative = relative_difference(mine, theirs)
        if relative > tolerance:
            diffs.append(FeatureDiff(served.request_id, name, mine, theirs, relative))
    return diffs, compared, unverified


def check_request(
    served: Served,
    history: History,
    fs: FeatureSet,
    tolerance: float,
    max_future: timedelta,
) -> RequestCheck:
    """Judge one request against the candidate prefix that fits it best."""
    longest, *shorter = candidates(history, fs, served.entity_id, served.at, served.raw, max_future)
    best = _judge(served, history, longest, fs, tolerance)
    for recomputed in shorter:
        if not best.diffs:
            break
        check = _judge(served, history, recomputed, fs, tolerance)
        if len(check.diffs) < len(best.diffs):
            best = check
    return best


def _judge(
    served: Served, history: History, recomputed: Recomputed, fs: FeatureSet, tolerance: float
) -> RequestCheck:
    diffs, compared, unverified = compare(served, recomputed, fs, tolerance)
    in_flight = len(history.events) - recomputed.applied
    return RequestCheck(
        served, tuple(diffs), compared, tuple(unverified), recomputed.applied, in_flight
    )


def summarize(
    checks: Sequence[RequestCheck],
    skipped: Mapping[str, int] | None = None,
    window: DriftWindow | None = None,
) -> SkewReport:
    """Rank the skewed features: most requests first, then largest difference."""
    by_feature: dict[str, list[FeatureDiff]] = {}
    for check in checks:
        for diff in check.diffs:
            by_feature.setdefault(diff.feature, []).append(diff)
    total = len(checks)
    features = [
        FeatureSkew(
            feature=name,
            requests=len(diffs),
            rate=len(diffs) / total,
            largest=max(d.relative for d in diffs),
            examples=tuple(
                sorted(diffs, key=lambda d: (-d.relative, d.request_id))[:EXAMPLES_PER_FEATURE]
            ),
        )
        for name, diffs in by_feature.items()
    ]
    features.sort(key=lambda f: (-f.requests, -f.largest, f.feature))
    skewed = [c for c in checks if c.diffs]
    versions = Counter(c.served.model_version for c in skewed if c.served.model_version)
    ids = "\n".join(sorted(c.served.request_id for c in checks)).encode()
    return SkewReport(
        checked=total,
        skipped=dict(sorted((skipped or {}).items())),
        compared=sum(c.compared for c in checks),
        unverified=sum(len(c.unverified) for c in checks),
        skewed_requests=len(skewed),
        features=tuple(features),
        sample_id=hashlib.sha256(ids).hexdigest()[:SAMPLE_ID_CHARS],
        model_version=versions.most_common(1)[0][0] if versions else None,
        window=window or DriftWindow(),
    )


def skew_alert(
    report: SkewReport, *, model: str, tolerance: float, detected_at: datetime
) -> DriftAlert | None:
    """The ``skew`` alert for a report with skewed features (None when there are none).

    Evidence: one item per skewed feature, ranked, with the share of checked requests
    on which it differed. The same sample gives the same ``alert_id``.
    """
    if not report.features:
        return None
    evidence = [
        DriftEvidence(feature=f.feature, test=TEST, statistic=f.rate, threshold=0.0)
        for f in report.features
    ]
    top = evidence[0]
    metrics = {
        "requests_checked": float(report.checked),
        "requests_skewed": float(report.skewed_requests),
        "features_compared": float(report.compared),
        "tolerance": tolerance,
    }
    metrics |= {
        f"largest_relative_difference.{f.feature}": f.largest
        for f in report.features
        if math.isfinite(f.largest)
    }
    return DriftAlert(
        alert_id=f"{model}:{DriftKind.SKEW.value}:{report.sample_id}",
        model=model,
        kind=DriftKind.SKEW,
        detector=DETECTOR,
        feature=top.feature,
        statistic=top.statistic,
        threshold=top.threshold,
        window=report.window,
        model_version=report.model_version,
        action=ACTION,
        detected_at=detected_at,
        evidence=evidence,
        metrics=metrics,
        examples=[
            AlertExample(
                request_id=e.request_id,
                feature=e.feature,
                served=e.served,
                recomputed=e.recomputed,
            )
            for f in report.features
            for e in f.examples
        ],
    )


def _decode(event: LoggedEvent, max_future: timedelta) -> tuple[RawRecord, Event] | None:
    """The event as the worker decoded it on arrival (None: the worker dead-lettered it)."""
    arrived = datetime.fromtimestamp(event.appended_at, UTC)
    decoded, _letters = decode_batch([event.record], arrived, max_future)
    return decoded[0] if decoded else None


def _recompute(
    state: EntityState,
    fs: FeatureSet,
    at: float,
    raw: Mapping[str, FeatureValue],
    applied: int,
) -> Recomputed:
    features = feature_vector(state, fs, at, raw=dict(raw))
    unknown: set[str] = set()
    if fs.time_since_last and state.newest is None:
        unknown.add(TIME_SINCE_LAST)  # the last event may be older than the replay
    derived = _derived(fs)
    for ratio in fs.ratios:
        operands = (ratio.numerator, ratio.denominator)
        if any(o in unknown or _may_be_older_raw(o, features, derived, fs) for o in operands):
            unknown.add(ratio.name)
    return Recomputed(features, frozenset(unknown), applied)


def _verifiable(name: str, recomputed: Recomputed, fs: FeatureSet) -> bool:
    if name in recomputed.unknown:
        return False
    return not _may_be_older_raw(name, recomputed.features, _derived(fs), fs)


def _may_be_older_raw(
    name: str, features: Mapping[str, FeatureValue], derived: frozenset[str], fs: FeatureSet
) -> bool:
    """A raw feature no replayed event carries may still pass through from an older one."""
    passes = fs.passthrough is None or name in fs.passthrough
    return name not in features and name not in derived and passes


def _derived(fs: FeatureSet) -> frozenset[str]:
    names = {n for a in fs.aggregates for n in a.names()} | {r.name for r in fs.ratios}
    if fs.time_since_last:
        names.add(TIME_SINCE_LAST)
    return frozenset(names)


def _number(value: FeatureValue) -> float | None:
    """Integers and floats as floats; booleans are not numbers here (True is not 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
