"""Know before the labels: a served version's performance estimated from its own answers.

A binary classifier whose probabilities are calibrated tells, for each answer, how likely
it is right: an answer of P(positive) = 0.9 says "positive" and is right 90 % of the time.
Averaged over a window of answers, that is an estimate of the window's accuracy, log loss
and ROC AUC before a single label arrived (confidence-based performance estimation, CBPE).
It holds while P(label | score) stays what it was when the version was calibrated: under
covariate shift (the inputs move, the rule does not), not under concept shift.

Per served version this module keeps:

- a **calibration table**: answers' scores binned to :data:`BINS` equal bins, with the
  labelled count and positives of each; seeded with the version's holdout at training time
  (:meth:`Calibration.from_pairs`), then fed every live label joined to an answer it
  served, once that label has been compared with the estimate (below). Each bin starts
  from :data:`PRIOR_WEIGHT` pseudo-answers at its own centre (the model taken at its
  word until labels say otherwise); a weighted isotonic fit (pool adjacent violators)
  over the bins is the calibration map. Counts halve when they pass
  ``EstimateConfig.calibration_memory``: the table forgets slowly, never grows;
- a **window** of the version's last ``window`` scores and, every ``check_every``
  answers, a :class:`PerformanceEstimate` with bands;
- a **reference**: the version's first full window, kept as its answers per bin and
  estimated again with the calibration of the moment, so the reference and the current
  window are always judged alike (a reference fixed while the table held a few hundred
  labels drifted from later windows' estimates by more than a drop). An "estimated
  degradation" fires when a window's estimated accuracy falls more than
  ``min_drop`` (and ``band_z`` standard errors of the estimate) below it, and rearms once
  the estimate is back within half that drop;
- the **honesty check**: each label joined to one of the version's answers is first put
  next to the estimate for that very answer. When the realized accuracy of the last
  ``agreement_window`` labelled answers lies outside the estimate's band for them, the
  labels disagree with the estimate: the relation between inputs and labels moved
  (concept drift), which no estimate from scores can see.

Pure and picklable: the learner's checkpoint seals it.

>>> config = EstimateConfig(window=200, check_every=100)
>>> watch = EstimateWatch(config)
>>> calm = [0.95, 0.05] * 200  # a confident model: estimated accuracy about 0.95
>>> watch.served("m@1", calm)
[]
>>> round(watch.latest("m@1").accuracy, 2)
0.95
>>> unsure = [0.6, 0.4] * 200  # the inputs moved to where the model hesitates
>>> [(f.version, f.kind) for f in watch.served("m@1", unsure)]
[('m@1', 'estimated_degradation')]
>>> round(watch.latest("m@1").accuracy, 2)
0.6
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

W = TypeVar("W")

BINS = 200
"""Calibration bins of P(positive), each 0.005 wide. Answers inside one bin share one
calibrated probability, so their order within it is lost to the expected ROC AUC: with
50 bins (60 % of a confident model's answers in the lowest) it ran 0.009 low on a
stationary stream, with 200 about 0.002 (docs/benchmarks.md, the estimate section)."""
REFIT_SHARE = 0.01
"""The isotonic map is fitted again once the labels added since its fit are this share
of the table (at least one): a label changes it by little, and a fit per label made
labelling cost as much as the rest of the estimate."""
PRIOR_WEIGHT = 0.5
"""Pseudo-answers per bin at the bin's centre (100 over the table): an empty bin trusts
the model's score, a few labels outweigh it."""
JUDGED_BIN_LABELS = 5
"""Labels an answer's bin must hold before a label of it is judged against the
estimate: where the table knows nothing, the estimate is the model's word, and a model
miscalibrated in a region it never answered in before is not a concept drift."""
EPSILON = 1e-6
"""Scores are clipped to [EPSILON, 1 - EPSILON] before a logarithm."""
ESTIMATED_DEGRADATION = "estimated_degradation"
ESTIMATE_DISAGREES = "estimate_disagrees"
DEGRADATION_DETECTOR = "cbpe"  # the alerts' detectors
DISAGREEMENT_DETECTOR = "cbpe_disagreement"


@dataclass(frozen=True)
class EstimateConfig:
    """How answers are windowed and judged (counts are in answers of one version)."""

    window: int = 1_000
    check_every: int = 100
    min_drop: float = 0.05
    band_z: float = 3.0
    agreement_window: int = 500
    agreement_min: int = 200
    agreement_tolerance: float = 0.02
    min_rise: float = 0.2  # a regressor's expected MAE, relative to its reference
    min_calibrated: int = 500
    calibration_memory: float = 20_000.0

    def __post_init__(self) -> None:
        if not 1 <= self.check_every <= self.window:
            raise ValueError("estimate: 1 <= check_every <= window")
        if not 1 <= self.agreement_min <= self.agreement_window:
            raise ValueError("estimate: 1 <= agreement_min <= agreement_window")
        if not (0 < self.min_drop < 1 and self.band_z > 0 and self.agreement_tolerance >= 0):
            raise ValueError("estimate: 0 < min_drop < 1, band_z > 0, agreement_tolerance >= 0")
        if not self.min_rise > 0:
            raise ValueError("estimate: min_rise > 0")
        if not self.calibration_memory >= BINS * PRIOR_WEIGHT:  # NaN too
            raise ValueError(f"estimate: calibration_memory >= {BINS * PRIOR_WEIGHT:g}")


def bin_of(score: float) -> int:
    """The calibration bin of a P(positive).

    >>> bin_of(0.0), bin_of(0.5), bin_of(1.0)
    (0, 100, 199)
    """
    return min(BINS - 1, max(0, int(score * BINS)))


@dataclass
class Calibration:
    """Labelled answers per score bin, and the isotonic map they make."""

    counts: list[float] = field(default_factory=lambda: [0.0] * BINS)
    positives: list[float] = field(default_factory=lambda: [0.0] * BINS)
    _map: list[float] | None = field(default=None, repr=False, compare=False)
    _total: float | None = field(default=None, repr=False, compare=False)
    _fitted_on: float = field(default=0.0, repr=False, compare=False)  # labels at the fit

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[float, bool]]) -> Calibration:
        """A table from (P(positive), label is positive) pairs, e.g. a holdout's."""
        table = cls()
        for score, positive in pairs:
            table.add(score, positive)
        return table

    @classmethod
    def from_table(cls, table: dict[str, list[float]]) -> Calibration:
        """A table as :meth:`as_table` wrote it (e.g. kept in a version's lineage)."""
        counts, positives = list(table["counts"]), list(table["positives"])
        if len(counts) != BINS or len(positives) != BINS:
            raise ValueError(f"a calibration table has {BINS} bins")
        if any(not 0 <= p <= c for p, c in zip(positives, counts, strict=True)):
            raise ValueError("a calibration bin has 0 <= positives <= count")
        return cls(counts, positives)

    def as_table(self) -> dict[str, list[float]]:
        return {"counts": list(self.counts), "positives": list(self.positives)}

    @property
    def labelled(self) -> float:
        if self._total is None:
            self._total = math.fsum(self.counts)
        return self._total

    def add(self, score: float, positive: bool, memory: float = math.inf) -> None:
        """One labelled answer; past ``memory`` answers every bin is halved."""
        self.add_many(((score, positive),), memory)

    def add_many(self, pairs: Iterable[tuple[float, bool]], memory: float = math.inf) -> None:
        """:meth:`add` of each (score, positive) pair in order, without a call per answer:
        the learner adds every example it learns. A score that cannot be binned (NaN)
        raises, the pairs before it added.

        >>> one, many = Calibration(), Calibration()
        >>> pairs = [(0.1, False), (0.9, True), (0.95, True), (0.5, False)]
        >>> for score, positive in pairs:
        ...     one.add(score, positive, memory=3)
        >>> many.add_many(pairs, memory=3)
        >>> (many.counts, many.positives, many.labelled) == (one.counts, one.positives, 2.0)
        True
        """
        counts, positives, total = self.counts, self.positives, self.labelled
        try:
            for score, positive in pairs:
                b = bin_of(score)
                total += 1.0
                counts[b] += 1.0
                positives[b] += 1.0 if positive else 0.0
                if total > memory:
                    counts = self.counts = [c / 2 for c in counts]
                    positives = self.positives = [p / 2 for p in positives]
                    total /= 2
                    self._map = None
        finally:
            self._total = total

    def merge(self, other: Calibration) -> None:
        """Add ``other``'s labelled answers to this table's."""
        for b in range(BINS):
            self.counts[b] += other.counts[b]
            self.positives[b] += other.positives[b]
        self._map, self._total = None, None

    def calibrated(self, score: float) -> float:
        """P(positive) as the labels so far say it is for answers scored ``score``."""
        labelled = self.labelled
        if self._map is None or labelled - self._fitted_on >= max(1.0, REFIT_SHARE * labelled):
            self._fitted_on = labelled
            self._map = isotonic(
                [
                    (p + PRIOR_WEIGHT * (b + 0.5) / BINS) / (c + PRIOR_WEIGHT)
                    for b, (c, p) in enumerate(zip(self.counts, self.positives, strict=True))
                ],
                [c + PRIOR_WEIGHT for c in self.counts],
            )
        return self._map[bin_of(score)]


def isotonic(values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The non-decreasing sequence nearest ``values`` in weighted least squares (pool
    adjacent violators).

    >>> isotonic([0.1, 0.4, 0.3, 0.9], [1, 1, 1, 1])
    [0.1, 0.35, 0.35, 0.9]
    """
    blocks: list[list[float]] = []  # [mean, weight, length]
    for value, weight in zip(values, weights, strict=True):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, w, n = blocks.pop()
            previous = blocks[-1]
            total = previous[1] + w
            previous[0] = (previous[0] * previous[1] + mean * w) / total
            previous[1], previous[2] = total, previous[2] + n
    return [mean for mean, _, n in blocks for _ in range(int(n))]


@dataclass(frozen=True)
class PerformanceEstimate:
    """Expected metrics of a window of answers, each with its standard error: the spread
    of the realized metric around the estimate if the calibration holds."""

    answers: int
    accuracy: float
    accuracy_se: float
    log_loss: float
    log_loss_se: float
    roc_auc: float | None
    roc_auc_se: float | None

    def as_dict(self, z: float) -> dict[str, float]:
        """Flat figures for metrics and alerts: each metric with its band at ``z``."""
        figures = {"answers": float(self.answers)}
        for name, value, se in (
            ("accuracy", self.accuracy, self.accuracy_se),
            ("log_loss", self.log_loss, self.log_loss_se),
            ("roc_auc", self.roc_auc, self.roc_auc_se),
        ):
            if value is None or se is None:
                continue
            figures[name] = value
            figures[f"{name}_lower"] = value - z * se
            figures[f"{name}_upper"] = value + z * se
        return figures


def estimate(scores: Sequence[float], calibration: Calibration) -> PerformanceEstimate:
    """CBPE over ``scores`` (each answer's P(positive); it answered positive at >= 0.5).

    >>> round(estimate([0.9, 0.1, 0.8], Calibration()).accuracy, 2)
    0.87
    """
    n = len(scores)
    if n == 0:
        raise ValueError("an estimate needs at least one answer")
    cal = [calibration.calibrated(s) for s in scores]
    right = [p if s >= 0.5 else 1 - p for s, p in zip(scores, cal, strict=True)]
    accuracy = math.fsum(right) / n
    accuracy_se = math.sqrt(math.fsum(p * (1 - p) for p in cal)) / n
    losses, spreads = [], []
    for s, p in zip(scores, cal, strict=True):
        clipped = min(1 - EPSILON, max(EPSILON, s))
        log_pos, log_neg = math.log(clipped), math.log(1 - clipped)
        losses.append(-(p * log_pos + (1 - p) * log_neg))
        spreads.append(p * (1 - p) * (log_pos - log_neg) ** 2)
    auc, auc_se = expected_auc(scores, cal)
    return PerformanceEstimate(
        answers=n,
        accuracy=accuracy,
        accuracy_se=accuracy_se,
        log_loss=math.fsum(losses) / n,
        log_loss_se=math.sqrt(math.fsum(spreads)) / n,
        roc_auc=auc,
        roc_auc_se=auc_se,
    )


def expected_auc(
    scores: Sequence[float], cal: Sequence[float]
) -> tuple[float | None, float | None]:
    """ROC AUC with each answer counted positive with weight P(positive) and negative
    with the rest; its Hanley-McNeil standard error for the expected class sizes. None
    when one class is expected to be (nearly) absent.

    >>> auc, _ = expected_auc([0.1, 0.9], [0.0, 1.0])
    >>> auc
    1.0
    """
    positives = math.fsum(cal)
    negatives = len(cal) - positives
    if positives < 1 or negatives < 1:
        return None, None
    ranked = sorted(zip(scores, cal, strict=True))
    below = 0.0  # negative weight of the answers scored lower
    concordant = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        tie_pos = math.fsum(p for _, p in ranked[i:j])
        tie_neg = (j - i) - tie_pos
        concordant += tie_pos * (below + tie_neg / 2)
        below += tie_neg
        i = j
    auc = concordant / (positives * negatives)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    return auc, math.sqrt(max(variance, 0.0))


@dataclass(frozen=True)
class EstimateFinding:
    """An estimate to alert on: degradation, or labels that disagree with it."""

    version: str
    kind: str  # ESTIMATED_DEGRADATION or ESTIMATE_DISAGREES
    estimate: PerformanceEstimate
    reference: float  # the reference accuracy (degradation) or the realized one (disagrees)
    threshold: float  # what the estimate crossed
    answers_seen: int  # the version's answers (degradation) or judged labels when it fired


@dataclass
class VersionEstimate:
    """One version's calibration, window, reference and findings state."""

    calibration: Calibration
    window: deque[float]
    seen: int = 0
    reference_bins: list[int] | None = None  # the first full window's answers per bin
    latest: PerformanceEstimate | None = None
    degraded: bool = False
    labelled: deque[tuple[float, bool]] = field(default_factory=deque)  # (right prob, right)
    # Running sums over ``labelled``: chances of being right, their variances, rights.
    expected_right: float = 0.0
    expected_spread: float = 0.0
    right: int = 0
    judged: int = 0  # labels compared with the estimate
    disagreeing: bool = False


class EstimateWatch:
    """Every served version's live estimate. ``served`` takes answers as they are
    served, ``labelled`` the labels joined to them later."""

    def __init__(self, config: EstimateConfig, max_versions: int = 8) -> None:
        self.config = config
        self.max_versions = max_versions
        self.versions: dict[str, VersionEstimate] = {}

    def seed(self, version: str, calibration: Calibration) -> None:
        """Start ``version`` from a calibration table (its holdout at training time);
        labels already fed to it are kept."""
        self._watch(version).calibration.merge(calibration)

    def knows(self, version: str) -> bool:
        return version in self.versions

    def latest(self, version: str) -> PerformanceEstimate | None:
        watched = self.versions.get(version)
        return None if watched is None else watched.latest

    def reference(self, version: str) -> float | None:
        """The estimated accuracy of ``version``'s first full window, with today's
        calibration; None before that window is full."""
        watched = self.versions.get(version)
        return None if watched is None else reference_accuracy(watched)

    def served(self, version: str, scores: Sequence[float]) -> list[EstimateFinding]:
        """Take a version's answers (each its P(positive)); findings they brought."""
        watched = self._watch(version)
        findings = []
        for score in scores:
            watched.window.append(score)
            watched.seen += 1
            if watched.seen % self.config.check_every or len(watched.window) < self.config.window:
                continue
            finding = self._check(version, watched)
            if finding is not None:
                findings.append(finding)
        return findings

    def labelled(self, version: str, score: float, positive: bool) -> EstimateFinding | None:
        """Take a label joined to an answer ``version`` served with ``score``: first
        compared with what the estimate expected of that answer, then calibrating.
        The answer is taken as positive at 0.5 and above, as on the served side (a
        binary classifier's most probable class).
        Until the calibration holds ``min_calibrated`` labels, the estimate is the
        model's word and is not judged: its miscalibration is no concept drift."""
        watched = self._watch(version)
        config = self.config
        if watched.calibration.labelled < config.min_calibrated:
            watched.calibration.add(score, positive, config.calibration_memory)
            return None
        if watched.calibration.counts[bin_of(score)] < JUDGED_BIN_LABELS:
            watched.calibration.add(score, positive, config.calibration_memory)
            return None
        p = watched.calibration.calibrated(score)
        predicted = score >= 0.5
        chance = p if predicted else 1 - p
        _agreement_add(watched, chance, predicted == positive, +1)
        watched.labelled.append((chance, predicted == positive))
        watched.judged += 1
        if len(watched.labelled) > config.agreement_window:
            _agreement_add(watched, *watched.labelled.popleft(), -1)
        watched.calibration.add(score, positive, config.calibration_memory)
        n = len(watched.labelled)
        if n < config.agreement_min:
            return None
        estimated = watched.expected_right / n
        realized = watched.right / n
        se = math.sqrt(max(watched.expected_spread, 0.0)) / n
        margin = config.band_z * se + config.agreement_tolerance
        fires, watched.disagreeing = crossed(watched.disagreeing, abs(realized - estimated), margin)
        if not fires:
            return None
        agreed = PerformanceEstimate(n, estimated, se, math.nan, math.nan, None, None)
        return EstimateFinding(
            version, ESTIMATE_DISAGREES, agreed, realized, margin, watched.judged
        )

    def _check(self, version: str, watched: VersionEstimate) -> EstimateFinding | None:
        config = self.config
        current = estimate(list(watched.window), watched.calibration)
        watched.latest = current
        if watched.reference_bins is None:
            watched.reference_bins = [0] * BINS
            for score in watched.window:
                watched.reference_bins[bin_of(score)] += 1
            return None
        reference = reference_accuracy(watched)
        assert reference is not None  # noqa: S101 - the bins were just checked
        spread = _estimate_spread(watched.window, watched.calibration)
        drop = max(config.min_drop, config.band_z * spread)
        threshold = reference - drop
        fires, watched.degraded = crossed(watched.degraded, reference - current.accuracy, drop)
        if not fires:
            return None
        return EstimateFinding(
            version, ESTIMATED_DEGRADATION, current, reference, threshold, watched.seen
        )

    def _watch(self, version: str) -> VersionEstimate:
        return most_recent(
            self.versions,
            version,
            lambda: VersionEstimate(Calibration(), deque(maxlen=self.config.window)),
            self.max_versions,
        )


def crossed(firing: bool, excess: float, bound: float) -> tuple[bool, bool]:
    """The hysteresis of every finding here: (fires now, firing after). It fires once
    ``excess`` passes ``bound``, and again only after it came back within half of it.

    >>> crossed(False, 0.06, 0.05), crossed(True, 0.06, 0.05), crossed(True, 0.02, 0.05)
    ((True, True), (False, True), (False, False))
    """
    if excess <= bound / 2:
        return False, False
    if firing or excess <= bound:
        return False, firing
    return True, True


def most_recent(versions: dict[str, W], version: str, make: Callable[[], W], limit: int) -> W:
    """``version``'s entry of ``versions`` (made when new), moved last: the dict runs
    from the version seen longest ago, which makes room when ``limit`` are kept."""
    watched = versions.pop(version, None)
    if watched is None:
        if len(versions) >= limit:
            del versions[next(iter(versions))]
        watched = make()
    versions[version] = watched
    return watched


def _agreement_add(watched: VersionEstimate, chance: float, right: bool, sign: int) -> None:
    """Add (``sign`` +1) or take out (-1) one judged label of the running sums."""
    watched.expected_right += sign * chance
    watched.expected_spread += sign * chance * (1 - chance)
    watched.right += sign * int(right)


def reference_accuracy(watched: VersionEstimate) -> float | None:
    """The estimated accuracy of the version's first full window under its current
    calibration: an answer in bin ``b`` is positive from bin ``BINS // 2`` on (a score
    of 0.5), so the bins alone make the estimate."""
    if watched.reference_bins is None:
        return None
    calibration, half = watched.calibration, BINS // 2
    right = math.fsum(
        n * (p if b >= half else 1 - p)
        for b, n in enumerate(watched.reference_bins)
        if n
        for p in (calibration.calibrated((b + 0.5) / BINS),)
    )
    return right / sum(watched.reference_bins)


def _estimate_spread(window: Iterable[float], calibration: Calibration) -> float:
    """Standard error of the estimated accuracy itself (its sampling noise, not the
    realized accuracy's): the spread of the answers' chances of being right."""
    confidences = []
    for score in window:
        p = calibration.calibrated(score)
        confidences.append(p if score >= 0.5 else 1 - p)
    n = len(confidences)
    mean = math.fsum(confidences) / n
    return math.sqrt(math.fsum((c - mean) ** 2 for c in confidences) / max(n - 1, 1) / n)


# --- regression: direct loss estimation ----------------------------------------------

LOSS_ANSWER = "__answer__"  # the version's own answer, among the loss model's inputs
Inputs = Mapping[str, bool | int | float | str | None]


class LossModel:
    """Direct loss estimation (DLE) for a regressor: a small online tree that learns a
    served version's absolute error from the inputs it answered and its answer, on the
    labels joined to its answers. Where the error depends on the inputs (noisier
    regions, regions the version fits badly), inputs moving there raise the expected
    error before any of their labels land. Numeric inputs only (categories and missing
    values are left out)."""

    def __init__(self) -> None:
        from river import tree  # here: a classifier's estimate never needs River

        self.model = tree.HoeffdingTreeRegressor(grace_period=50, leaf_prediction="adaptive")
        self.learned = 0
        self.residuals: deque[float] = deque(maxlen=1_000)  # |error| - its expectation

    def expected(self, inputs: Inputs, answer: float) -> float:
        """The absolute error this answer is expected to have (0 before any label)."""
        if not self.learned:
            return 0.0
        predicted = self.model.predict_one(_loss_inputs(inputs, answer))  # type: ignore[no-untyped-call]
        return max(0.0, float(predicted or 0.0))

    def learn(self, inputs: Inputs, answer: float, label: float) -> None:
        error = abs(label - answer)
        if self.learned:
            self.residuals.append(error - self.expected(inputs, answer))
        self.model.learn_one(_loss_inputs(inputs, answer), error)  # type: ignore[no-untyped-call]
        self.learned += 1

    @property
    def spread(self) -> float:
        """The spread of one answer's absolute error around its expectation."""
        n = len(self.residuals)
        if n < 2:
            return math.inf
        mean = math.fsum(self.residuals) / n
        return math.sqrt(math.fsum((r - mean) ** 2 for r in self.residuals) / (n - 1))


def _loss_inputs(inputs: Inputs, answer: float) -> dict[str, float]:
    x = {
        name: float(value)
        for name, value in inputs.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    x[LOSS_ANSWER] = answer
    return x


@dataclass(frozen=True)
class LossEstimate:
    """The expected mean absolute error of a window of answers, with the standard
    error of the realized one if the loss model is right."""

    answers: int
    mae: float
    mae_se: float

    def as_dict(self, z: float) -> dict[str, float]:
        return {
            "answers": float(self.answers),
            "mae": self.mae,
            "mae_lower": max(0.0, self.mae - z * self.mae_se),
            "mae_upper": self.mae + z * self.mae_se,
        }


def expected_mae(loss: LossModel, answers: Sequence[tuple[Inputs, float]]) -> LossEstimate:
    """DLE over ``answers`` (each its inputs and the version's answer)."""
    if not answers:
        raise ValueError("an estimate needs at least one answer")
    expected = [loss.expected(inputs, answer) for inputs, answer in answers]
    n = len(expected)
    return LossEstimate(n, math.fsum(expected) / n, loss.spread / math.sqrt(n))


@dataclass
class RegressionEstimate:
    """One regressor version's loss model, window and reference (its first full window,
    judged again by the loss model of the moment, as a classifier's is)."""

    loss: LossModel
    window: deque[tuple[Inputs, float]]
    seen: int = 0
    reference: list[tuple[Inputs, float]] | None = None
    latest: LossEstimate | None = None
    degraded: bool = False
    labelled: deque[tuple[float, float]] = field(default_factory=deque)  # expected, realized
    judged: int = 0
    disagreeing: bool = False


@dataclass(frozen=True)
class LossFinding:
    """A regressor's expected error to alert on: it rose past ``threshold`` above its
    reference (degradation), or the labels' realized error (``reference``) disagreed."""

    version: str
    kind: str  # ESTIMATED_DEGRADATION or ESTIMATE_DISAGREES
    estimate: LossEstimate
    reference: float
    threshold: float
    answers_seen: int


class LossWatch:
    """Every served regressor version's expected error (DLE): ``served`` takes answers
    with their inputs, ``labelled`` the labels joined to them. The expected MAE of a
    window rising ``min_rise`` (relative) and ``band_z`` standard errors above its
    reference is an estimated degradation; labels whose realized MAE lies outside the
    band of what was expected for those very answers disagree (concept drift). Nothing
    is judged before the loss model learned ``min_calibrated`` labels."""

    def __init__(self, config: EstimateConfig, max_versions: int = 8) -> None:
        self.config = config
        self.max_versions = max_versions
        self.versions: dict[str, RegressionEstimate] = {}

    def latest(self, version: str) -> LossEstimate | None:
        watched = self.versions.get(version)
        return None if watched is None else watched.latest

    def reference(self, version: str) -> float | None:
        watched = self.versions.get(version)
        if watched is None or watched.reference is None:
            return None
        return expected_mae(watched.loss, watched.reference).mae

    def served(self, version: str, answers: Sequence[tuple[Inputs, float]]) -> list[LossFinding]:
        watched = self._watch(version)
        config = self.config
        findings = []
        for answer in answers:
            watched.window.append(answer)
            watched.seen += 1
            if watched.seen % config.check_every or len(watched.window) < config.window:
                continue
            if watched.loss.learned < config.min_calibrated:
                continue  # the loss model knows nothing yet: no estimate, no reference
            current = expected_mae(watched.loss, list(watched.window))
            watched.latest = current
            if watched.reference is None:
                watched.reference = list(watched.window)
                continue
            reference = expected_mae(watched.loss, watched.reference).mae
            rise = max(config.min_rise * reference, config.band_z * current.mae_se)
            threshold = reference + rise
            fires, watched.degraded = crossed(watched.degraded, current.mae - reference, rise)
            if fires:
                findings.append(
                    LossFinding(
                        version, ESTIMATED_DEGRADATION, current, reference, threshold, watched.seen
                    )
                )
        return findings

    def labelled(
        self, version: str, inputs: Inputs, answer: float, label: float
    ) -> LossFinding | None:
        """Take a label joined to an answer: compared with the error expected of it
        (once the loss model has learned enough), then learned."""
        watched = self._watch(version)
        config = self.config
        judged = watched.loss.learned >= config.min_calibrated
        if judged:
            watched.labelled.append((watched.loss.expected(inputs, answer), abs(label - answer)))
            watched.judged += 1
            if len(watched.labelled) > config.agreement_window:
                watched.labelled.popleft()
        watched.loss.learn(inputs, answer, label)
        if not judged or len(watched.labelled) < config.agreement_min:
            return None
        n = len(watched.labelled)
        estimated = math.fsum(e for e, _ in watched.labelled) / n
        realized = math.fsum(r for _, r in watched.labelled) / n
        # The band of the realized mean, plus the tolerance as a share of the estimate.
        margin = (
            config.band_z * watched.loss.spread / math.sqrt(n)
            + config.agreement_tolerance * estimated
        )
        fires, watched.disagreeing = crossed(watched.disagreeing, abs(realized - estimated), margin)
        if not fires:
            return None
        return LossFinding(
            version,
            ESTIMATE_DISAGREES,
            LossEstimate(n, estimated, watched.loss.spread / math.sqrt(n)),
            realized,
            margin,
            watched.judged,
        )

    def _watch(self, version: str) -> RegressionEstimate:
        return most_recent(
            self.versions,
            version,
            lambda: RegressionEstimate(LossModel(), deque(maxlen=self.config.window)),
            self.max_versions,
        )
