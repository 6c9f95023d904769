"""Concept drift detectors by name: the only module that imports ``river.drift``.

Why: a model's prequential error stream is the most direct evidence that its concept
has changed, and River ships the classic detectors for it. River's detector API has
changed across releases (``update`` used to return ``(in_drift, in_warning)``; it now
returns ``None`` and exposes ``drift_detected`` / ``warning_detected``; the binary
detectors moved to ``drift.binary``), and the evidence behind a detection lives in
private attributes. This adapter pins those details in one place: the rest of Eddy asks
:func:`make_detector` for a detector by name and gets a :class:`DriftSignal` back from
every :meth:`~ConceptDriftMonitor.update`.

What to feed (the prequential error of one model, scored before it learns):

- classification: ``1.0`` if the prediction was wrong else ``0.0`` (any detector);
- regression: the absolute error, to ``adwin``, ``page_hinkley`` or ``kswin`` only.

``ddm``, ``eddm``, ``hddm_a`` and ``hddm_w`` (River's ``drift.binary``) model a Bernoulli
error rate: they accept only ``0.0``/``1.0`` and raise ``ValueError`` for anything else
(``eddm`` would silently treat every value other than 1 as "no error"). NaN and
infinities are rejected for every detector: one would poison River's running sums for
good, so it is a bug to surface, not data to feed.

What each :class:`DriftSignal` carries, per detector (the threshold is always the
configured parameter on the statistic's own scale, or ``None`` when there is none):

============  ===========  =====================================  ==================  =====
name          input        statistic                              threshold           fires
============  ===========  =====================================  ==================  =====
adwin         real         mean of the adaptive window            None (``delta`` is  cut
                                                                  a significance)     test
page_hinkley  real         PH cumulative increase (mode ``up``)   ``threshold``       ``>``
ddm           0/1          (p + s - p_min) / s_min                ``drift_threshold`` ``>``
eddm          0/1          (p' + 2s') / max(p' + 2s')             ``beta``            ``<``
hddm_a        0/1          error-rate increase since the cut      None (bound varies) bound
hddm_w        0/1          EWMA error-rate increase since cut     None (bound varies) bound
kswin         real         p-value of the last KS test            ``alpha``           ``<=``
============  ===========  =====================================  ==================  =====

The statistic is ``None`` while a detector is warming up (and for ``ddm`` while its
minimum standard deviation is zero); when present it is finite. ``kswin`` also requires a
KS distance above 0.1 (hard-coded in River). ``adwin`` checks for a cut every ``clock``
(32) updates, so its detections land on that grid.

**One-sided.** Only a *rising* error is evidence of a harmful change: a falling one is a
model still learning, or a world that got easier. ``page_hinkley`` runs in mode ``up``;
the binary detectors model an error-rate increase (``hddm_*`` one-sided, River's
default); ``adwin`` and ``kswin`` test both sides, so a detection counts only when the
part of the window they keep (the newer one) has a higher mean error than the part they
drop. A two-sided cut whose newer side is better is no detection at all.

**Where the change lies.** On a detection, ``change_age`` says how many updates ago the
detector estimates the change began (this update included): ``adwin``'s kept window,
``kswin``'s recent sample, ``page_hinkley``'s onset (the update where its cumulative
increase was lowest); ``None`` for the binary detectors. A retrain after a concept drift
learns from the examples after that point. ``baseline`` is the mean error of the dropped
part (``adwin``, ``kswin``): the level the model had before the change.

>>> import random
>>> rng = random.Random(7)
>>> errors = [float(rng.random() < 0.1) for _ in range(1_000)]
>>> errors += [float(rng.random() < 0.6) for _ in range(1_000)]
>>> monitor = make_detector(DEFAULT_DETECTOR)
>>> [i for i, e in enumerate(errors) if monitor.update(e).drifted]
[1055]
>>> signal = make_detector("ddm").update(1.0)
>>> signal.drifted, signal.warning, signal.detector, signal.statistic
(False, False, 'ddm', None)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from river import drift

ADWIN = "adwin"
PAGE_HINKLEY = "page_hinkley"
DDM = "ddm"
EDDM = "eddm"
HDDM_A = "hddm_a"
HDDM_W = "hddm_w"
KSWIN = "kswin"

DETECTORS: tuple[str, ...] = (ADWIN, PAGE_HINKLEY, DDM, EDDM, HDDM_A, HDDM_W, KSWIN)
DEFAULT_DETECTOR = ADWIN
BINARY_INPUT_DETECTORS: frozenset[str] = frozenset({DDM, EDDM, HDDM_A, HDDM_W})
"""Detectors that model a Bernoulli error rate and accept only 0.0 or 1.0."""

PAGE_HINKLEY_MODE = "up"
"""Only error *increases* alarm: a falling error means the model is improving."""

BINARY_VALUES = (0.0, 1.0)

Probe = Callable[[Any], tuple[float | None, float | None]]


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """What one update of a concept drift detector says (see the module table).

    ``warning`` is False whenever ``drifted`` is True: a detection supersedes the
    warning zone, whatever the underlying River detector leaves in its flag.
    """

    drifted: bool
    warning: bool
    detector: str
    statistic: float | None
    threshold: float | None
    change_age: int | None = None  # on drift: updates since the estimated change, this one included
    baseline: float | None = None  # on drift: the mean error before the change, where known


class ConceptDriftMonitor(Protocol):
    """A drift detector fed one prequential error per labelled example."""

    name: str

    def update(self, value: float) -> DriftSignal: ...

    def update_many(self, values: Sequence[float]) -> list[tuple[int, DriftSignal]]: ...


@dataclass(frozen=True)
class _Param:
    """One settable River parameter: its type and the range River silently assumes."""

    kind: type  # int or float
    low: float
    high: float = math.inf
    open_low: bool = False  # exclude ``low`` itself (probabilities and scales)

    def check(self, detector: str, key: str, value: float) -> int | float:
        """``value`` as River wants it, or a clear ``ValueError``."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{detector}: parameter {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{detector}: parameter {key} must be finite, got {value!r}")
        if self.kind is int and value != int(value):
            raise ValueError(f"{detector}: parameter {key} must be an integer, got {value!r}")
        below = value <= self.low if self.open_low else value < self.low
        if below or value > self.high:
            bracket = "(" if self.open_low else "["
            raise ValueError(
                f"{detector}: parameter {key} must be in {bracket}{self.low}, {self.high}], "
                f"got {value!r}"
            )
        return int(value) if self.kind is int else float(value)


_COUNT = _Param(int, 1)
_NON_NEGATIVE_COUNT = _Param(int, 0)
_PROBABILITY = _Param(float, 0.0, 1.0, open_low=True)
_POSITIVE = _Param(float, 0.0, open_low=True)
_NON_NEGATIVE = _Param(float, 0.0)


@dataclass(frozen=True)
class _Spec:
    """How to build one River detector and read its evidence."""

    build: Callable[..., Any]
    params: Mapping[str, _Param]  # the River parameters Eddy lets callers set
    probe: Probe
    fixed: Mapping[str, object] = field(default_factory=dict)  # set by Eddy, not by callers
    seeded: bool = False


def _adwin_probe(detector: Any) -> tuple[float | None, float | None]:
    return float(detector.estimation), None


def _page_hinkley_probe(detector: Any) -> tuple[float | None, float | None]:
    threshold = float(detector.threshold)
    if detector._x_mean.n < detector.min_instances:
        return None, threshold
    increase = float(detector._sum_increase - detector._min_increase)
    decrease = float(detector._max_decrease - detector._sum_decrease)
    by_mode = {"up": increase, "down": decrease, "both": max(increase, decrease)}
    return by_mode[detector.mode], threshold


def _ddm_probe(detector: Any) -> tuple[float | None, float | None]:
    threshold = float(detector.drift_threshold)
    if detector._p_min is None or detector._s_min == 0:
        return None, threshold
    p = float(detector._p.get())
    s = math.sqrt(p * (1 - p) / detector._p.n)
    return (p + s - detector._p_min) / detector._s_min, threshold


def _eddm_probe(detector: Any) -> tuple[float | None, float | None]:
    threshold = float(detector.beta)
    if detector._n_errors <= detector.warm_start or detector._p2s_prime_max <= 0:
        return None, threshold
    distances = detector._error_distances
    p2s = distances.mean.get() + 2 * distances.get() ** 0.5
    return float(p2s / detector._p2s_prime_max), threshold


def _hddm_a_probe(detector: Any) -> tuple[float | None, float | None]:
    if detector._x_min.n == detector._z.n:
        return None, None
    return float(detector._z.get() - detector._x_min.get()), None


def _hddm_w_probe(detector: Any) -> tuple[float | None, float | None]:
    before, after = detector._s1_incr, detector._s2_incr
    if not (before._is_init and after._is_init):
        return None, None
    return float(after.ewma - before.ewma), None


def _kswin_probe(detector: Any) -> tuple[float | None, float | None]:
    threshold = float(detector.alpha)
    if detector.n < detector.window_size:
        return None, threshold
    return float(detector.p_value), threshold


_SPECS: Mapping[str, _Spec] = MappingProxyType(
    {
        ADWIN: _Spec(
            drift.ADWIN,
            {
                "delta": _PROBABILITY,
                "clock": _COUNT,
                "max_buckets": _COUNT,
                "min_window_length": _COUNT,
                "grace_period": _NON_NEGATIVE_COUNT,
            },
            _adwin_probe,
        ),
        PAGE_HINKLEY: _Spec(
            drift.PageHinkley,
            {
                "min_instances": _COUNT,
                "delta": _NON_NEGATIVE,
                "threshold": _POSITIVE,
                "alpha": _PROBABILITY,
            },
            _page_hinkley_probe,
            fixed={"mode": PAGE_HINKLEY_MODE},
        ),
        DDM: _Spec(
            drift.binary.DDM,
            {
                "warm_start": _NON_NEGATIVE_COUNT,
                "warning_threshold": _POSITIVE,
                "drift_threshold": _POSITIVE,
            },
            _ddm_probe,
        ),
        EDDM: _Spec(
            drift.binary.EDDM,
            {"warm_start": _NON_NEGATIVE_COUNT, "alpha": _PROBABILITY, "beta": _PROBABILITY},
            _eddm_probe,
        ),
        HDDM_A: _Spec(
            drift.binary.HDDMA,
            {"drift_confidence": _PROBABILITY, "warning_confidence": _PROBABILITY},
            _hddm_a_probe,
        ),
        HDDM_W: _Spec(
            drift.binary.HDDMW,
            {
                "drift_confidence": _PROBABILITY,
                "warning_confidence": _PROBABILITY,
                "lambda_val": _PROBABILITY,
            },
            _hddm_w_probe,
        ),
        KSWIN: _Spec(
            drift.KSWIN,
            {"alpha": _PROBABILITY, "window_size": _COUNT, "stat_size": _COUNT},
            _kswin_probe,
            seeded=True,
        ),
    }
)


class RiverDriftMonitor:
    """One River detector behind Eddy's :class:`ConceptDriftMonitor` protocol.

    Picklable (checkpoints seal it with the model): the state is the Eddy name, the
    River detector (whose own pickle carries its windows and, for ``kswin``, its RNG)
    and the update count with ``page_hinkley``'s onset.
    """

    # Class-level defaults: monitors pickled before these existed restore with them.
    _seen = 0
    _onset = 0

    def __init__(self, name: str, detector: Any) -> None:
        self.name = name
        self._detector = detector

    def update(self, value: float) -> DriftSignal:
        """Feed one prequential error; say whether the detector fired on it."""
        self._check((value,))
        drifted, change_age, baseline = self._feed(float(value))
        warning = bool(getattr(self._detector, "warning_detected", False)) and not drifted
        statistic, threshold = _SPECS[self.name].probe(self._detector)
        return DriftSignal(drifted, warning, self.name, statistic, threshold, change_age, baseline)

    def update_many(self, values: Sequence[float]) -> list[tuple[int, DriftSignal]]:
        """Feed many errors in order; the positions where the detector fired, with the
        signal :meth:`update` would have returned there. Checked first, so a bad value
        feeds nothing. The learner's batch path: the evidence is probed only on firing.
        """
        self._check(values)
        fired: list[tuple[int, DriftSignal]] = []
        probe = _SPECS[self.name].probe
        for i, value in enumerate(values):
            drifted, change_age, baseline = self._feed(float(value))
            if drifted:
                statistic, threshold = probe(self._detector)
                signal = DriftSignal(
                    True, False, self.name, statistic, threshold, change_age, baseline
                )
                fired.append((i, signal))
        return fired

    def _check(self, values: Sequence[float]) -> None:
        if not all(map(math.isfinite, values)):  # one pass in C over the learner's batch
            bad = next(value for value in values if not math.isfinite(value))
            raise ValueError(f"{self.name}: error value must be finite, got {bad!r}")
        if self.name in BINARY_INPUT_DETECTORS and not set(values) <= set(BINARY_VALUES):
            odd = next(v for v in values if v not in BINARY_VALUES)
            raise ValueError(
                f"{self.name} takes 0/1 error indicators (1.0 = wrong prediction), "
                f"got {odd!r}; use adwin, page_hinkley or kswin for absolute errors"
            )

    def _feed(self, value: float) -> tuple[bool, int | None, float | None]:
        """Update the detector: (fired on a rising error, change age, baseline)."""
        detector = self._detector
        self._seen += 1
        if self.name == ADWIN:
            width, total = float(detector.width), float(detector.total)
            detector.update(value)
            if not detector.drift_detected:
                return False, None, None
            kept = float(detector.width)
            dropped = width + 1 - kept
            kept_mean = float(detector.total) / kept if kept else 0.0
            dropped_mean = (total + value - float(detector.total)) / dropped if dropped else 0.0
            return kept_mean > dropped_mean, int(kept), dropped_mean
        if self.name == KSWIN:
            before = list(detector.window)
            detector.update(value)
            if not detector.drift_detected:
                return False, None, None
            tested = ([*before, value])[-detector.window_size :]
            recent, older = tested[-detector.stat_size :], tested[: -detector.stat_size]
            older_mean = sum(older) / len(older)
            return sum(recent) / len(recent) > older_mean, len(recent), older_mean
        detector.update(value)
        if self.name == PAGE_HINKLEY:
            if detector._sum_increase <= detector._min_increase:
                self._onset = self._seen
            if detector.drift_detected:
                return True, max(1, self._seen - self._onset), None
            return False, None, None
        return bool(detector.drift_detected), None, None

    def __repr__(self) -> str:
        return f"RiverDriftMonitor({self.name!r}, {self._detector!r})"


def make_detector(name: str, *, seed: int = 42, **params: float) -> ConceptDriftMonitor:
    """Build a River detector by Eddy's name, with River's parameter names.

    Feed 0/1 error indicators (classification) to any detector; absolute errors
    (regression) only to ``adwin``, ``page_hinkley`` or ``kswin`` (the binary ones raise
    on anything but 0/1). ``seed`` fixes ``kswin``'s subsampling (River's default is an
    unseeded RNG, so runs would differ); the other detectors are deterministic and ignore
    it. Integer parameters accept integral floats. Unknown names and parameters raise
    ``ValueError`` listing what is accepted, and so do values out of the range River
    assumes without checking (``adwin``'s ``delta=2`` would silently never fire).

    >>> make_detector("kswin", alpha=0.001).name
    'kswin'
    >>> make_detector("cusum")
    Traceback (most recent call last):
    ...
    ValueError: unknown drift detector 'cusum'; known: adwin, page_hinkley, ddm, eddm, \
hddm_a, hddm_w, kswin
    """
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown drift detector {name!r}; known: {', '.join(DETECTORS)}")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for drift detector {name!r}; "
            f"accepted: {', '.join(spec.params)}"
        )
    kwargs: dict[str, object] = {
        key: spec.params[key].check(name, key, params[key]) for key in params
    }
    kwargs.update(spec.fixed)
    if spec.seeded:
        kwargs["seed"] = seed
    detector = spec.build(**kwargs)
    if name == KSWIN and 2 * detector.stat_size > detector.window_size:
        # River accepts this, then raises "Sample larger than population" on the
        # window_size-th update: it samples stat_size of the older window_size - stat_size.
        raise ValueError(
            f"kswin: stat_size ({detector.stat_size}) must be at most half of window_size "
            f"({detector.window_size})"
        )
    return RiverDriftMonitor(name, detector)
