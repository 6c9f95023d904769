"""Data and prediction drift: windowed two-sample tests per feature, with alert hygiene.

A model degrades quietly when its inputs (data drift) or outputs (prediction drift) move
away from what it learned from. Each feature keeps a *reference* window (its first
``window`` values after the first ``warmup`` observations, which are no evidence: a cold
start's new entities and a model still learning are not the normal state; or those of
the last reset) and a sliding *current* window of its latest
``window`` values; every ``check_every`` updates, a feature with ``min_samples`` values in
both drifts when any of its tests exceeds its threshold. One drift gives one alert: the
feature is then disarmed until all its statistics fall below ``threshold * rearm_ratio``
(hysteresis), and never alerts twice within ``cooldown`` updates. Statistics are
scale-free, so one threshold per test fits every feature. Nothing here does I/O.

Ints and floats are numeric, bools are 0/1, strings are categorical, None is ignored (a
missing value is no evidence). NaN and infinities raise ``ValueError``: upstream
validation refuses them, so one here is a bug to surface, not data to drop quietly.

>>> rng = np.random.default_rng(7)
>>> monitor = DataDriftMonitor()
>>> alerts: list[FeatureDrift] = []
>>> for i in range(4000):
...     shift = 1.0 if i >= 2000 else 0.0
...     x = {"amount": rng.normal(shift, 1.0), "age": rng.normal(40.0, 5.0), "plan": "free"}
...     alerts += monitor.update(x)
>>> [alert.describe() for alert in alerts]
['amount: psi 0.391 > 0.250 (x1.56)']
>>> monitor.updates, sorted(monitor.statistics())
(4000, ['age', 'amount', 'plan'])
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from eddy.streams.messages.contracts import MAX_FEATURES

FloatArray = NDArray[np.float64]
Sample = Sequence[float] | FloatArray  # a window of numeric values
NumericTest = Callable[["Sequence[float] | Reference", Sample], float]
CategoricalTest = Callable[[Mapping[str, int], Mapping[str, int]], float]
FeatureInput = float | int | str | bool | None

DEFAULT_BINS = 10
# Floor of a bin's proportion in PSI, so an empty bin gives a large but finite term.
PSI_EPSILON = 1e-4
# Categories counted fewer times than this in both samples together are pooled into one
# for the chi-square test, whose approximation needs expected counts of about 5 per cell.
RARE_CATEGORY_COUNT = 10
STATE_VERSION = 1
NUMERIC, CATEGORICAL = "numeric", "categorical"

# Each numeric default sits near where a mean shift of half a standard deviation puts
# the test on normal data (KS 0.19, PSI 0.25, JS distance 0.21, Wasserstein 0.51) and
# above the 99.9th percentile of its sampling noise for windows of 500 and 200 values
# (KS 0.16, PSI 0.21, JS 0.18, Wasserstein 0.29). PSI 0.25 is also the customary "major
# shift" level. Categorical: Cramér's V 0.2 (a moderate association; its noise stays
# below up to ~100 categories), or one category's frequency moving by 20 points.
DEFAULT_THRESHOLDS: Mapping[str, float] = MappingProxyType(
    {"psi": 0.25, "ks": 0.2, "jensen_shannon": 0.2, "wasserstein": 0.5}
    | {"chi_square": 0.2, "l_infinity": 0.2}
)


def _finite_array(values: Sample, role: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"the {role} sample must be a non-empty sequence of finite numbers")
    return array


def _quantile_edges(ref: FloatArray, bins: int) -> FloatArray:
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


@dataclass(frozen=True, eq=False)
class Reference:
    """A numeric reference sample prepared once (sorted, binned) for many tests.

    A monitor compares the same reference with a new current window at every check;
    sorting it and finding its quantiles each time would cost more than the tests.
    Every numeric test takes either a plain sequence or one of these.
    """

    values: FloatArray  # sorted
    edges: FloatArray  # quantile edges for DEFAULT_BINS
    proportions: FloatArray  # of the values in those bins
    cdf: FloatArray  # the empirical CDF at each of the values
    # `values` after a -inf: at a current value's rank r, the largest reference value at
    # most it (or -inf), so one lookup tells whether the two samples share a value.
    below: FloatArray
    # For a current sample of n values, the counts n_ref * i / n for i = 0..n, which the
    # KS test compares the ranks with: one array per sample size, kept after first use.
    _steps: dict[int, FloatArray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, values: Sequence[float]) -> Reference:
        ordered = np.sort(_finite_array(values, "reference"))
        edges = _quantile_edges(ordered, DEFAULT_BINS)
        cdf = np.searchsorted(ordered, ordered, side="right") / ordered.size
        below = np.concatenate(([-np.inf], ordered))
        return cls(ordered, edges, _proportions(ordered, edges), cdf, below)

    def steps(self, size: int) -> FloatArray:
        """``values.size * i / size`` for i in 0..size: the current sample's empirical
        CDF at its own points, on the scale of the reference's ranks."""
        if size not in self._steps:
            self._steps[size] = np.arange(size + 1, dtype=np.float64) * (self.values.size / size)
        return self._steps[size]


def _reference(reference: Sequence[float] | Reference) -> Reference:
    return reference if isinstance(reference, Reference) else Reference.of(reference)


def _binned_proportions(
    reference: Sequence[float] | Reference, current: Sample, bins: int
) -> tuple[FloatArray, FloatArray]:
    """Proportions of both samples in bins of equal reference mass (so each bin carries
    evidence); tied quantiles (discrete data) merge, the outer bins are open-ended."""
    prepared = _reference(reference)
    cur = _finite_array(current, "current")
    if bins == DEFAULT_BINS:
        return prepared.proportions, _proportions(cur, prepared.edges)
    edges = _quantile_edges(prepared.values, bins)
    return _proportions(prepared.values, edges), _proportions(cur, edges)


def _proportions(sample: FloatArray, edges: FloatArray) -> FloatArray:
    index = edges.searchsorted(sample, side="right")
    return np.bincount(index, minlength=edges.size + 1) / sample.size


def psi(reference: Sequence[float] | Reference, current: Sample, bins: int = DEFAULT_BINS) -> float:
    """Population stability index over reference-quantile bins (0 when identical).

    >>> psi([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    0.0
    """
    return _psi(*_binned_proportions(reference, current, bins))


def _psi(p_ref: FloatArray, p_cur: FloatArray) -> float:
    p_ref, p_cur = np.maximum(p_ref, PSI_EPSILON), np.maximum(p_cur, PSI_EPSILON)
    return float(((p_cur - p_ref) * np.log(p_cur / p_ref)).sum())


def jensen_shannon(
    reference: Sequence[float] | Reference, current: Sample, bins: int = DEFAULT_BINS
) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]; 1 for disjoint bins) over the bins
    of :func:`psi`; unlike PSI it is bounded and needs no smoothing."""
    return _jensen_shannon(*_binned_proportions(reference, current, bins))


def _jensen_shannon(p_ref: FloatArray, p_cur: FloatArray) -> float:
    middle = (p_ref + p_cur) / 2

    def divergence(p: FloatArray) -> float:
        held = p > 0
        return float(np.sum(p[held] * np.log2(p[held] / middle[held])))

    js_divergence = (divergence(p_ref) + divergence(p_cur)) / 2
    return min(1.0, math.sqrt(max(0.0, js_divergence)))


def _cdf_gaps(ref: FloatArray, cur: FloatArray, points: FloatArray) -> FloatArray:
    """F_ref - F_cur at ``points``, both samples sorted."""
    at_ref = np.searchsorted(ref, points, side="right") / ref.size
    at_cur = np.searchsorted(cur, points, side="right") / cur.size
    return np.asarray(at_ref - at_cur, dtype=np.float64)


def ks_statistic(reference: Sequence[float] | Reference, current: Sample) -> float:
    """Two-sample Kolmogorov-Smirnov D: the largest gap between the empirical CDFs.

    >>> ks_statistic([1.0, 2.0, 3.0], [4.0, 5.0])
    1.0
    """
    return _ks(_reference(reference), _finite_array(current, "current"))


def _ks(prepared: Reference, current: FloatArray) -> float:
    ref, cur = prepared.values, np.sort(current)
    # Array methods, not numpy's functions: a monitor runs this for every feature at
    # every check, and the functions' Python wrappers cost a fifth of it.
    ranks = ref.searchsorted(cur, side="right")
    if (cur[1:] > cur[:-1]).all() and not (prepared.below[ranks] == cur).any():
        # No value twice in the current sample, none in both: between two current values
        # F_cur is flat and F_ref rises, so the gap F_ref - F_cur peaks just before the
        # next current value and dips at the last one; at the i-th current value (from 0)
        # F_ref is ranks / n_ref, F_cur is i / n before it and (i + 1) / n at it. One
        # lookup, where the general case below needs two.
        steps = prepared.steps(cur.size)
        gap = max((ranks - steps[:-1]).max(), (steps[1:] - ranks).max())
        return float(gap / ref.size)
    # The gap can only peak at a sample point: at the reference's own points its CDF is
    # prepared once; the current sample is ranked against itself and the reference.
    at_ref = prepared.cdf - cur.searchsorted(ref, side="right") / cur.size
    at_cur = ranks / ref.size - _own_cdf(cur) / cur.size
    return float(max(np.abs(at_ref).max(), np.abs(at_cur).max()))


def _own_cdf(ordered: FloatArray) -> NDArray[np.intp]:
    """How many of ``ordered``'s values are at most each one: 1, 2, 3... without ties.

    >>> _own_cdf(np.array([1.0, 2.0, 2.0, 3.0])).tolist()
    [1, 3, 3, 4]
    """
    if (ordered[1:] > ordered[:-1]).all():
        return np.arange(1, ordered.size + 1)
    return ordered.searchsorted(ordered, side="right")


def wasserstein(reference: Sequence[float] | Reference, current: Sample) -> float:
    """Earth mover's distance in units of the reference's standard deviation.

    A constant reference has no spread, so the pooled one is used: the result stays
    finite (0 when both samples are the same constant).

    >>> wasserstein([0.0, 2.0], [1.0, 3.0])
    1.0
    """
    ref = _reference(reference).values
    cur = np.sort(_finite_array(current, "current"))
    points = np.sort(np.concatenate([ref, cur]))
    distance = float(np.sum(np.abs(_cdf_gaps(ref, cur, points[:-1])) * np.diff(points)))
    if distance == 0.0:
        return 0.0
    return distance / (float(np.std(ref)) or float(np.std(points)))


def _category_counts(
    reference: Mapping[str, int], current: Mapping[str, int]
) -> tuple[FloatArray, FloatArray]:
    """Aligned counts over the categories seen in either sample."""
    categories = sorted(set(reference) | set(current))
    ref = np.array([reference.get(c, 0) for c in categories], dtype=np.float64)
    cur = np.array([current.get(c, 0) for c in categories], dtype=np.float64)
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("category counts must not be negative")
    if ref.sum() == 0 or cur.sum() == 0:
        raise ValueError("both samples need at least one counted category")
    seen = (ref + cur) > 0
    return ref[seen], cur[seen]


def chi_square(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """Chi-square test of the 2 x k table (reference, current) as Cramér's V in [0, 1].

    Bias-corrected (Bergsma, 2013): plain V of two samples from the same distribution
    is about sqrt((k - 1) / n), which with 30 categories and 700 values is already 0.2;
    the correction removes that expected noise, so one threshold works across
    cardinalities. Tiny samples shrink towards 0 (two values are no evidence).

    >>> round(chi_square({"a": 100}, {"b": 100}), 9)
    1.0
    """
    ref, cur = _category_counts(reference, current)
    rare = (ref + cur) < RARE_CATEGORY_COUNT
    if rare.any():
        ref, cur = (np.append(row[~rare], row[rare].sum()) for row in (ref, cur))
    table = np.vstack([ref, cur])
    total, k = float(table.sum()), table.shape[1]
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    phi_squared = float(np.sum((table - expected) ** 2 / expected)) / total
    # Bergsma's corrections with two rows (rows - 1 = 1).
    corrected_phi_squared = max(0.0, phi_squared - (k - 1) / (total - 1))
    denominator = min(k - (k - 1) ** 2 / (total - 1), 2 - 1 / (total - 1)) - 1
    if k < 2 or denominator <= 0:
        return 0.0
    return min(1.0, math.sqrt(corrected_phi_squared / denominator))


def l_infinity(reference: Mapping[str, int], current: Mapping[str, int]) -> float:
    """Largest absolute change of one category's frequency, in [0, 1].

    >>> l_infinity({"a": 1}, {"b": 1})
    1.0
    """
    ref, cur = _category_counts(reference, current)
    return float(np.max(np.abs(ref / ref.sum() - cur / cur.sum())))


NUMERIC_TESTS: Mapping[str, NumericTest] = MappingProxyType(
    {"psi": psi, "ks": ks_statistic, "jensen_shannon": jensen_shannon, "wasserstein": wasserstein}
)
CATEGORICAL_TESTS: Mapping[str, CategoricalTest] = MappingProxyType(
    {"chi_square": chi_square, "l_infinity": l_infinity}
)
# The numeric tests a monitor runs on its own windows, whose values it has checked as
# they came (finite floats) and keeps as an array: the same statistics as
# NUMERIC_TESTS, without checking and converting every value again at every check.
WINDOW_TESTS: Mapping[str, Callable[[Reference, FloatArray], float]] = MappingProxyType(
    {
        "psi": lambda ref, cur: _psi(ref.proportions, _proportions(cur, ref.edges)),
        "jensen_shannon": lambda ref, cur: _jensen_shannon(
            ref.proportions, _proportions(cur, ref.edges)
        ),
        "ks": _ks,
    }
)


@dataclass(frozen=True)
class DriftConfig:
    """How drift is tested and when it is reported (all counts are in updates/events).

    ``thresholds`` given are merged over :data:`DEFAULT_THRESHOLDS`. The defaults assume
    windows of hundreds: PSI's noise floor is about ``(bins - 1) * (1/n_ref + 1/n_cur)``
    (0.27 for 100 vs 50 values), so smaller ``min_samples`` need higher thresholds.
    """

    numeric_tests: tuple[str, ...] = ("psi", "ks")
    categorical_test: str = "chi_square"
    thresholds: Mapping[str, float] = field(default_factory=lambda: DEFAULT_THRESHOLDS, hash=False)
    window: int = 500
    min_samples: int = 200
    check_every: int = 100
    cooldown: int = 1000
    rearm_ratio: float = 0.5
    warmup: int = 0
    # Features a monitor tracks, the first it sees; each keeps two windows of values, so
    # a stream of ever-new names (ids used as keys, a producer's typo) must not grow
    # the monitor and every checkpoint of it without end.
    max_features: int = MAX_FEATURES

    def __post_init__(self) -> None:
        # A plain dict (a copy), so that configs and monitors pickle into checkpoints.
        merged = {**DEFAULT_THRESHOLDS, **self.thresholds}
        object.__setattr__(self, "thresholds", merged)
        known = set(self.numeric_tests) <= set(NUMERIC_TESTS)
        _require(bool(self.numeric_tests) and known, f"numeric_tests from {list(NUMERIC_TESTS)}")
        _require(
            self.categorical_test in CATEGORICAL_TESTS,
            f"categorical_test in {list(CATEGORICAL_TESTS)}",
        )
        _require(all(0 < t < math.inf for t in merged.values()), "finite thresholds above 0")
        _require(1 <= self.min_samples <= self.window, "1 <= min_samples <= window")
        _require(self.check_every >= 1 and self.cooldown >= 0, "check_every >= 1, cooldown >= 0")
        _require(0 <= self.rearm_ratio <= 1, "0 <= rearm_ratio <= 1")
        _require(self.warmup >= 0, "warmup >= 0")
        _require(self.max_features >= 1, "max_features >= 1")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"DriftConfig needs {message}")


DEFAULT_CONFIG = DriftConfig()


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's most severe test at the check where it drifted."""

    feature: str
    test: str
    statistic: float
    threshold: float

    @property
    def severity(self) -> float:
        """How many thresholds the statistic is: above 1 means drifted."""
        return self.statistic / self.threshold

    def describe(self) -> str:
        return (
            f"{self.feature}: {self.test} {self.statistic:.3f} > {self.threshold:.3f}"
            f" (x{self.severity:.2f})"
        )


class _Track:
    """One feature's windows and alert state. Values are floats in a numeric track and
    strings in a categorical one (:meth:`DataDriftMonitor.update` sees to it)."""

    def __init__(self, name: str, kind: str, window: int) -> None:
        self.name, self.kind, self.window = name, kind, window
        self.reference: list[Any] = []
        self.current: deque[Any] = deque(maxlen=window)
        self.armed = True
        self.last_alert_at: int | None = None
        self.latest: dict[str, float] = {}
        self._prepared: Reference | None = None  # of `reference`, until it changes
        # `current` of a numeric track as an array, kept as values come (None: stale)
        self._array: FloatArray | None = None

    def add(self, value: float | str) -> None:
        # The reference fills first; only then does the current window slide.
        if len(self.reference) < self.window:
            self.reference.append(value)
            self._prepared = None
        else:
            self.current.append(value)
            self._array = None

    def add_many(self, values: Sequence[float | str]) -> None:
        room = self.window - len(self.reference)
        if room > 0:
            self.reference.extend(values[:room])
            self._prepared = None
            values = values[room:]
        if not values:
            return
        self.current.extend(values)
        if self._array is not None:
            added = np.asarray(values, dtype=np.float64)
            self._array = np.concatenate((self._array, added))[-self.window :]

    def measure(self, config: DriftConfig) -> dict[str, float]:
        if self.kind == NUMERIC:
            if self._prepared is None:
                self._prepared = Reference.of(self.reference)
            if self._array is None:
                self._array = np.fromiter(self.current, dtype=np.float64, count=len(self.current))
            current = self._array
            return {
                name: WINDOW_TESTS[name](self._prepared, current)
                if name in WINDOW_TESTS
                else NUMERIC_TESTS[name](self._prepared, current)
                for name in config.numeric_tests
            }
        test = CATEGORICAL_TESTS[config.categorical_test]
        return {config.categorical_test: test(Counter(self.reference), Counter(self.current))}

    def check(self, config: DriftConfig, now: int) -> FeatureDrift | None:
        """Test the windows; the drift to report now, if any (updates the alert state)."""
        if min(len(self.reference), len(self.current)) < config.min_samples:
            return None
        self.latest = self.measure(config)
        thresholds = config.thresholds
        if not self.armed:
            self.armed = all(
                statistic < thresholds[test] * config.rearm_ratio
                for test, statistic in self.latest.items()
            )
            return None
        # The most severe test (first on ties), as FeatureDrift.severity ranks them; the
        # finding is built only when it is reported.
        test, statistic = max(self.latest.items(), key=lambda item: item[1] / thresholds[item[0]])
        cooling = self.last_alert_at is not None and now - self.last_alert_at < config.cooldown
        if statistic / thresholds[test] <= 1 or cooling:
            return None
        self.armed, self.last_alert_at = False, now
        return FeatureDrift(self.name, test, statistic, thresholds[test])

    def __getstate__(self) -> dict[str, Any]:
        # The prepared reference and the array are caches: rebuilt on first use, never
        # checkpointed (so a checkpoint does not depend on their layout).
        return {**self.__dict__, "_prepared": None, "_array": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints from before 2026-11-25 pickled an older Reference layout: rebuild.
        self.__dict__.update({**state, "_prepared": None, "_array": None})

    def rebase(self) -> None:
        if self.current:
            self.reference = list(self.current)
            self._prepared = self._array = None
            self.current.clear()
        self.armed, self.latest = True, {}

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reference": list(self.reference),
            "current": list(self.current),
            "armed": self.armed,
            "last_alert_at": self.last_alert_at,
            "latest": dict(self.latest),
        }

    @classmethod
    def from_state(cls, name: str, window: int, state: Mapping[str, Any]) -> _Track:
        kind = state["kind"]
        if kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"feature {name!r} has unknown kind {kind!r}")
        coerce: Callable[[Any], float | str] = float if kind == NUMERIC else str
        track = cls(name, kind, window)
        track.reference = [coerce(value) for value in state["reference"]][:window]
        track.current.extend(coerce(value) for value in state["current"])
        track.armed = bool(state["armed"])
        last = state["last_alert_at"]
        track.last_alert_at = None if last is None else int(last)
        track.latest = {str(test): float(value) for test, value in state["latest"].items()}
        return track


def _columns(
    rows: Sequence[Mapping[str, FeatureInput]], ignore: Collection[str] = ()
) -> dict[str, list[FeatureInput]]:
    """Each feature's values in row order, None and the features ``ignore`` names left out.

    >>> _columns([{"a": 1, "b": None, "c": 2}, {"a": 3, "b": 4, "c": 5}], ignore={"c"})
    {'a': [1, 3], 'b': [4]}
    """
    if not rows:
        return {}
    names = rows[0].keys()
    if all(row.keys() == names for row in rows):  # the usual case: one comprehension each
        columns = {name: [row[name] for row in rows] for name in names if name not in ignore}
        return {
            name: [v for v in column if v is not None] if None in column else column
            for name, column in columns.items()
        }
    ragged: dict[str, list[FeatureInput]] = {}
    for row in rows:
        for name, value in row.items():
            if value is not None and name not in ignore:
                ragged.setdefault(name, []).append(value)
    return ragged


def _fast_numbers(column: list[FeatureInput]) -> list[float | str] | None:
    """The column as floats when it is plainly numeric and finite (the common case,
    checked with one array operation); None when it needs the value-by-value path."""
    if not _PLAIN_NUMBERS.issuperset(map(type, column)):
        return None
    try:
        numbers = np.asarray(column, dtype=float)
    except OverflowError:
        return None
    if not np.isfinite(numbers).all():
        return None
    return list(numbers.tolist())


_PLAIN_NUMBERS = frozenset({float, int, bool})


def _as_value(feature: str, value: FeatureInput) -> float | str:
    if isinstance(value, str):
        return value
    if isinstance(value, Real):  # also numpy scalars; bools are 0/1
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"feature {feature!r}: {value!r} is not a finite number")
        return number
    raise TypeError(f"feature {feature!r}: unsupported value type {type(value).__name__}")


class DataDriftMonitor:
    """Per-feature monitor: the first `window` values of each feature form its reference;
    afterwards a sliding current window of the last `window` values is compared with it.

    Prediction drift is the same monitor fed ``{"prediction": value}``.
    """

    def __init__(self, config: DriftConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self._updates = 0
        self._tracks: dict[str, _Track] = {}
        self.refused = 0  # values update_many skipped (see there)
        self.untracked = 0  # values of features past config.max_features, not tracked

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Checkpoints from before the cap: no count, and perhaps tracks past it (a dict
        # keeps its order through pickling, so the first names seen stay).
        self.__dict__.update({"untracked": 0, **state})
        if len(self._tracks) > self.config.max_features:
            kept = list(self._tracks.items())[: self.config.max_features]
            self._tracks = dict(kept)

    def _tracks_room_for(self, name: str, values: int) -> bool:
        """True if ``name`` is tracked or can be; else its ``values`` count as untracked.

        >>> monitor = DataDriftMonitor(DriftConfig(window=2, min_samples=1, max_features=1))
        >>> monitor.update_many([{"a": 1.0, "b": 2.0}, {"b": 3.0}])
        []
        >>> monitor.statistics(), monitor.untracked
        ({}, 2)
        """
        if name in self._tracks or len(self._tracks) < self.config.max_features:
            return True
        self.untracked += values
        return False

    @property
    def updates(self) -> int:
        """Observations seen so far (the clock of ``check_every`` and ``cooldown``)."""
        return self._updates

    def update(self, x: Mapping[str, FeatureInput]) -> list[FeatureDrift]:
        """Add one observation (numeric features: int/float, bools as 0/1; strings are
        categorical; None ignored).

        Returns the features that newly drifted at this update (empty most of the time),
        ranked by severity, most severe first. A NaN, an infinity, an unsupported type or
        a feature changing kind (from its first value's) raises before anything is
        recorded.
        """
        if self._updates < self.config.warmup:
            self._updates += 1
            return []
        values = {name: _as_value(name, value) for name, value in x.items() if value is not None}
        kinds = {name: CATEGORICAL if isinstance(v, str) else NUMERIC for name, v in values.items()}
        for name, kind in kinds.items():
            if name in self._tracks and self._tracks[name].kind != kind:
                raise ValueError(f"feature {name!r} is {self._tracks[name].kind}, not {kind}")
        for name, value in values.items():
            if not self._tracks_room_for(name, 1):
                continue
            if name not in self._tracks:
                self._tracks[name] = _Track(name, kinds[name], self.config.window)
            self._tracks[name].add(value)
        self._updates += 1
        if self._updates % self.config.check_every:
            return []
        return self._check()

    def update_many(
        self,
        rows: Sequence[Mapping[str, FeatureInput]],
        ignore: Collection[str] = (),
    ) -> list[tuple[int, list[FeatureDrift]]]:
        """Add many observations in order, leaving out the features ``ignore`` names:
        the learner's batch path.

        Returns ``(position in rows, drifts)`` wherever :meth:`update` would have
        returned drifts, with the same drifts. One difference: a value that
        :meth:`update` refuses (non-finite, unsupported, of the other kind than its
        feature's) is skipped and counted in :attr:`refused` instead of raising, so one
        odd value cannot stop a learner.
        """
        found: list[tuple[int, list[FeatureDrift]]] = []
        every = self.config.check_every
        start = min(len(rows), max(0, self.config.warmup - self._updates))
        self._updates += start  # warm-up observations: counted, not evidence
        first = start
        # The usual batch's columns are split and checked once, not once per check in it.
        aligned = self._aligned_columns(rows[start:], ignore)
        while start < len(rows):
            end = min(len(rows), start + every - self._updates % every)
            if aligned is None:
                self._add_columns(rows[start:end], ignore)
            else:
                for name, values in aligned.items():
                    self._add_values(name, values[start - first : end - first])
            self._updates += end - start
            if self._updates % every == 0:
                drifts = self._check()
                if drifts:
                    found.append((end - 1, drifts))
            start = end
        return found

    def _aligned_columns(
        self, rows: Sequence[Mapping[str, FeatureInput]], ignore: Collection[str]
    ) -> dict[str, list[float | str]] | None:
        """Each feature's values, one per row, when every feature has a value in every
        row and all of them are accepted as they are (plain finite numbers or strings,
        of the feature's kind); None otherwise (:meth:`_add_columns` then takes the rows
        a check at a time)."""
        aligned: dict[str, list[float | str]] = {}
        for name, column in _columns(rows, ignore).items():
            if len(column) != len(rows):
                return None
            numbers = _fast_numbers(column)
            strings = [] if numbers is not None else [v for v in column if isinstance(v, str)]
            if numbers is not None:
                values, kind = numbers, NUMERIC
            elif len(strings) == len(column):
                values, kind = list[float | str](strings), CATEGORICAL
            else:
                return None
            track = self._tracks.get(name)
            if track is not None and track.kind != kind:
                return None
            aligned[name] = values
        return aligned

    def _add_columns(
        self, rows: Sequence[Mapping[str, FeatureInput]], ignore: Collection[str]
    ) -> None:
        for name, column in _columns(rows, ignore).items():
            values = _fast_numbers(column)
            if values is None:
                values = self._one_by_one(name, column)
            elif name in self._tracks and self._tracks[name].kind != NUMERIC:
                self.refused += len(values)
                continue
            self._add_values(name, values)

    def _add_values(self, name: str, values: list[float | str]) -> None:
        """Add a feature's accepted values (of its kind), tracking it if there is room."""
        if not values or not self._tracks_room_for(name, len(values)):
            return
        if name not in self._tracks:
            kind = CATEGORICAL if isinstance(values[0], str) else NUMERIC
            self._tracks[name] = _Track(name, kind, self.config.window)
        self._tracks[name].add_many(values)

    def _one_by_one(self, name: str, column: list[FeatureInput]) -> list[float | str]:
        """The column's acceptable values, in order (the kind set by the first one)."""
        track = self._tracks.get(name)
        kind = track.kind if track is not None else None
        accepted: list[float | str] = []
        for raw in column:
            try:
                value = _as_value(name, raw)
            except (TypeError, ValueError):
                self.refused += 1
                continue
            value_kind = CATEGORICAL if isinstance(value, str) else NUMERIC
            kind = kind or value_kind
            if value_kind != kind:
                self.refused += 1
                continue
            accepted.append(value)
        return accepted

    def _check(self) -> list[FeatureDrift]:
        checked = (
            self._tracks[name].check(self.config, self._updates) for name in sorted(self._tracks)
        )
        drifts = [drift for drift in checked if drift is not None]
        return sorted(drifts, key=lambda drift: (-drift.severity, drift.feature))

    def statistics(self) -> dict[str, dict[str, float]]:
        """The latest statistic per feature per test (features tested at least once
        since the last reset)."""
        return {name: dict(t.latest) for name, t in sorted(self._tracks.items()) if t.latest}

    def reset_reference(self) -> None:
        """After a retrain: each feature's current window becomes its reference (topped up
        to `window` by the next values if shorter), and every feature is re-armed.
        Cooldowns still run, so a retrain cannot cause an alert flood."""
        for track in self._tracks.values():
            track.rebase()

    def state(self) -> dict[str, Any]:
        """JSON-serialisable full state (for checkpoints); every float is finite."""
        return {
            "version": STATE_VERSION,
            "updates": self._updates,
            "features": {name: track.state() for name, track in sorted(self._tracks.items())},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: DriftConfig) -> DataDriftMonitor:
        """Rebuild a monitor from :meth:`state`; with the same ``config`` its future
        alerts and statistics are those the original would have produced."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported drift state version {state.get('version')!r}")
        monitor = cls(config)
        monitor._updates = int(state["updates"])
        for name, track_state in state["features"].items():
            monitor._tracks[name] = _Track.from_state(name, config.window, track_state)
        return monitor
