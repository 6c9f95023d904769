"""Watch what users are served: each served version's live error and answers.

The prediction service records, with the features each request was answered with, the
version that answered and its answer (:mod:`eddy.streams.store.snapshots`); the learner joins every
late label to it. That gives each deployed version a live error stream, and this module
watches it, version by version:

- a :class:`~eddy.streams.drift.concept_watch.ConceptWatch` on the version's errors: when the
  served model degrades, a concept alert fires, whatever the online learner does (it
  adapts by itself and can hide a change the champion suffers from);
- prediction drift on the version's answers (P(positive) to the nearest
  :data:`ANSWER_RESOLUTION`), against that version's own first answers.
  A version is a fixed model, so its outputs move only when its inputs do: the reference
  needs no warm-up, and a new version starts a new one;
- rolling live metrics of the version (accuracy, log loss, ...), for the alert's text;
- a concept watch on *every* answer served, whichever version gave it: a version
  promoted just as the world changed (live evaluation can pick it in the very second
  of a drift) starts its own error stream already high and sees no rise in it, while
  what users were served rose from one version's answers to the next's.

It also judges the online learner's concept detections (:meth:`ServedWatch.confirms`):
when the error of what users were served clearly did not rise with the online error,
the detection is the online model's own trouble, not the world's.

At most :data:`MAX_VERSIONS` versions are watched; the one seen longest ago makes room.
Pure and picklable (the learner's checkpoint seals it).

>>> watch = ServedWatch("adwin", seed=42, cooldown=100, drift=DriftConfig(), task="classification")
>>> right = [ServedOutcome("m@1", True, 0.9, True, float(t)) for t in range(2_000)]
>>> wrong = [ServedOutcome("m@1", True, 0.9, t % 3 == 0, 2_000.0 + t) for t in range(300)]
>>> found = watch.update_many(right + wrong)
>>> [(f.index, f.version, f.kind.value, f.count, f.every_version) for f in found]
[(2015, 'm@1', 'concept', 2016, True), (2015, 'm@1', 'concept', 2016, False)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import fmean, variance

from eddy.streams.drift.concept_watch import ConceptDetection, ConceptWatch
from eddy.streams.drift.data import DataDriftMonitor, DriftConfig, FeatureDrift, FeatureInput
from eddy.streams.learning.evaluation import PrequentialMetrics
from eddy.streams.learning.models import CLASSIFICATION, Label
from eddy.streams.messages.contracts import DriftKind

MAX_VERSIONS = 8
PREDICTION = "prediction"  # the one "feature" prediction drift watches
ANSWER_RESOLUTION = 0.05
"""P(positive) is watched to the nearest 0.05. A confident classifier answers 5e-06 or
1e-05 depending on the leaf an input falls in; those digits change no answer a user
sees, yet a two-sample test on them alarms when their mix moves (a demo run at 50
events/s raised a prediction alert at PSI 0.258 on such a mix, 15 s before any drift)."""
CONFIRM_MIN_ANSWERS = 30
"""Fewest labelled answers on each side of a change point to bound the served error's
rise there; with fewer, the served answers cannot say (and do not veto)."""
CONFIRM_Z = 1.645
"""One-sided 95 %: standard errors added to the served error's rise for its upper bound."""
CONFIRM_SHARE = 0.5
"""The served answers veto another stream's detection when their error's rise is, at
95 %, below this share of the rise that stream saw: what users were served stayed
clearly better than the detection claims."""


@dataclass(frozen=True)
class ServedOutcome:
    """One answer a version served, and the label that arrived for it."""

    version: str  # e.g. "fraud@3"
    prediction: Label | None
    positive: float | None  # P(positive class) when the model gave one
    label: Label
    at: float  # when it was served, epoch seconds
    # The features it was answered with (a regressor's expected error is learned on
    # them: eddy.streams.drift.estimate.LossModel); None when not kept.
    features: Mapping[str, FeatureInput] | None = None


@dataclass(frozen=True)
class ServedFinding:
    """Something to alert on: at ``index`` of the outcomes fed, for ``version``, which
    had then served ``count`` labelled answers."""

    index: int
    version: str
    kind: DriftKind
    count: int
    concept: ConceptDetection | None = None
    drifts: list[FeatureDrift] = field(default_factory=list)
    every_version: bool = False  # found on all answers served, whichever version


@dataclass
class VersionWatch:
    concept: ConceptWatch
    answers: DataDriftMonitor
    metrics: PrequentialMetrics
    last_seen: int = 0


class ServedWatch:
    def __init__(
        self, detector: str, *, seed: int, cooldown: int, drift: DriftConfig, task: str
    ) -> None:
        self.detector = detector
        self.seed = seed
        self.cooldown = cooldown
        self.drift = drift
        self.task = task
        self.versions: dict[str, VersionWatch] = {}
        self.answer_resolution = ANSWER_RESOLUTION  # what the answers' windows hold
        # Every answer served, whichever version: a version promoted just as the world
        # changed starts its own error stream already high, and sees no rise in it.
        self.every_version = ConceptWatch(detector, seed=seed, cooldown=cooldown)
        self.seen = 0
        self.unscored = 0

    def update_many(self, outcomes: Sequence[ServedOutcome]) -> list[ServedFinding]:
        """Feed labelled answers in order; what fired, in order. An answer that cannot
        be scored (a regressor's non-numeric or non-finite answer) is counted in
        :attr:`unscored` and skipped: one odd record must not stop the learner."""
        by_version: dict[str, list[int]] = {}
        errors_of: dict[int, float] = {}
        for i, outcome in enumerate(outcomes):
            error = prediction_error(self.task, outcome.label, outcome.prediction)
            if error is None:
                self.unscored += 1
                continue
            errors_of[i] = error
            by_version.setdefault(outcome.version, []).append(i)
        found: list[ServedFinding] = []
        scored = sorted(errors_of)
        start = self.every_version.seen
        for detection in self.every_version.update_many(
            [errors_of[i] for i in scored], [outcomes[i].at for i in scored]
        ):
            index = scored[detection.index]
            found.append(
                ServedFinding(
                    index,
                    outcomes[index].version,
                    DriftKind.CONCEPT,
                    start + detection.index + 1,
                    concept=detection,
                    every_version=True,
                )
            )
        for version, rows in by_version.items():
            watch = self._watch(version)
            start = watch.concept.seen
            picked = [outcomes[i] for i in rows]
            errors = [errors_of[i] for i in rows]
            for detection in watch.concept.update_many(errors, [o.at for o in picked]):
                found.append(
                    ServedFinding(
                        rows[detection.index],
                        version,
                        DriftKind.CONCEPT,
                        start + detection.index + 1,
                        concept=detection,
                    )
                )
            answers = [{PREDICTION: _answer_value(o)} for o in picked]
            for k, drifts in watch.answers.update_many(answers):
                found.append(
                    ServedFinding(
                        rows[k], version, DriftKind.PREDICTION, start + k + 1, drifts=drifts
                    )
                )
            watch.metrics.update_many(
                [o.label for o in picked],
                [o.prediction for o in picked],
                [o.positive for o in picked],
            )
        self.seen += len(outcomes)
        return sorted(found, key=lambda f: f.index)

    def confirms(
        self, change_at: float | None, detected_at: float, rise: float | None
    ) -> bool | None:
        """Whether the answers users were served leave standing another stream's
        detection that its error rose by ``rise`` from ``change_at`` to ``detected_at``.

        The labelled answers served in that span (what users were served, whichever
        version served them) are compared with those of the span as long just before
        it. False, a veto, only on evidence: the served error's rise is, at 95 %
        one-sided, below :data:`CONFIRM_SHARE` of ``rise``.
        None (no veto) when either span has fewer than :data:`CONFIRM_MIN_ANSWERS`
        answers or the rise is unknown.

        The online learner's own error can rise while what is served stays right: a
        tree that split on a noisy feature, for one. Its detection is a second signal,
        and the served answers can overrule it; a weak test must not (the served watch
        has its own detector for what users suffer)."""
        if change_at is None or rise is None or rise <= 0 or detected_at <= change_at:
            return None
        span = detected_at - change_at
        kept = self.every_version.kept()
        after = [error for at, error in kept if change_at <= at <= detected_at]
        before = [error for at, error in kept if change_at - span <= at < change_at]
        bound = rise_bound(before, after)
        return None if bound is None else bound >= CONFIRM_SHARE * rise

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a checkpoint; one from before the every-version watch starts it now.

        One from before answers were watched at :data:`ANSWER_RESOLUTION` holds raw
        probabilities in its versions' answer windows: compared with rounded ones, they
        would look like drift. Those windows start again (a version is a fixed model:
        its next answers are a reference at once)."""
        if "every_version" not in state:
            state["every_version"] = ConceptWatch(
                str(state["detector"]),
                seed=int(state["seed"]),  # type: ignore[call-overload]
                cooldown=int(state["cooldown"]),  # type: ignore[call-overload]
            )
        self.__dict__.update(state)
        if state.get("answer_resolution") != ANSWER_RESOLUTION:
            for watch in self.versions.values():
                watch.answers = DataDriftMonitor(replace(self.drift, warmup=0))
            self.answer_resolution = ANSWER_RESOLUTION

    def metrics_of(self, version: str) -> dict[str, float]:
        watch = self.versions.get(version)
        return watch.metrics.report() if watch is not None else {}

    def _watch(self, version: str) -> VersionWatch:
        watch = self.versions.get(version)
        if watch is None:
            if len(self.versions) >= MAX_VERSIONS:
                oldest = min(self.versions, key=lambda v: self.versions[v].last_seen)
                del self.versions[oldest]
            watch = VersionWatch(
                ConceptWatch(self.detector, seed=self.seed, cooldown=self.cooldown),
                DataDriftMonitor(replace(self.drift, warmup=0)),  # a fixed model: no warm-up
                PrequentialMetrics(self.task, self.drift.window),
            )
            self.versions[version] = watch
        watch.last_seen = self.seen
        return watch


def rise_bound(before: Sequence[float], after: Sequence[float]) -> float | None:
    """How much higher the mean error ``after`` may be than ``before``: the one-sided
    upper bound of the difference (:data:`CONFIRM_Z` standard errors above it); None
    when a side has fewer than :data:`CONFIRM_MIN_ANSWERS` values.

    >>> round(rise_bound([0.0] * 40, [0.0] * 38 + [1.0] * 2), 3)
    0.107
    >>> rise_bound([0.0] * 5, [1.0] * 5) is None
    True
    """
    if min(len(before), len(after)) < CONFIRM_MIN_ANSWERS:
        return None
    spread = math.sqrt(variance(before) / len(before) + variance(after) / len(after))
    return fmean(after) - fmean(before) + CONFIRM_Z * spread


def prediction_error(task: str, label: Label, prediction: Label | None) -> float | None:
    """0/1 for a classifier, the absolute error for a regressor; None when a regressor's
    answer or label is missing, not a number or not finite.

    >>> prediction_error("classification", True, False), prediction_error("regression", 2, 3.5)
    (1.0, 1.5)
    >>> prediction_error("regression", 2.0, "x") is None
    True
    """
    if task == CLASSIFICATION:
        return 0.0 if prediction == label else 1.0
    if isinstance(prediction, bool | str) or prediction is None or isinstance(label, str):
        return None
    error = abs(float(label) - float(prediction))
    return error if math.isfinite(error) else None


def _answer_value(outcome: ServedOutcome) -> float | str | None:
    """What prediction drift watches: P(positive) for binary models (to the nearest
    :data:`ANSWER_RESOLUTION`), else the answer.

    >>> _answer_value(ServedOutcome("m@1", False, 8e-06, False, 0.0))
    0.0
    >>> _answer_value(ServedOutcome("m@1", True, 0.62, True, 0.0))
    0.6
    """
    if outcome.positive is not None:
        if not math.isfinite(outcome.positive):
            return outcome.positive  # the monitor refuses it, as it refuses any such value
        return round(round(outcome.positive / ANSWER_RESOLUTION) * ANSWER_RESOLUTION, 10)
    if isinstance(outcome.prediction, bool):
        return float(outcome.prediction)
    if isinstance(outcome.prediction, int | float):
        return float(outcome.prediction)
    return outcome.prediction
