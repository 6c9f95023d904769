"""Properties of eddy.streams.drift.data, checked from the outside.

The statistics: zero for identical samples, growing with the size of a shift, exact on
tiny hand-computed inputs, refusing bad input. The monitor: silent on a stationary
stream, naming the shifted feature quickly and only it, one alert per drift (cooldown
and hysteresis), categorical shifts, ``min_samples``, the checkpoint round trip and the
refusal of NaN. Randomness comes from seeded ``numpy.random.Generator`` instances only.
"""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np
import pytest

from eddy.streams.drift.data import (
    CATEGORICAL_TESTS,
    DEFAULT_THRESHOLDS,
    NUMERIC_TESTS,
    PSI_EPSILON,
    DataDriftMonitor,
    DriftConfig,
    FeatureDrift,
    FeatureInput,
    Reference,
    chi_square,
    jensen_shannon,
    ks_statistic,
    l_infinity,
    psi,
    wasserstein,
)

Row = dict[str, FeatureInput]

SHIFTS_IN_SIGMA = (0.0, 0.5, 1.0, 2.0)
LARGE_SAMPLE = 2_000
STREAM_LENGTH = 20_000
SHIFT_AT = 5_000
AFTER_SHIFT = 10_000
PLANS = ("free", "basic", "pro", "team")
PLAN_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
SHIFTED_PLAN_WEIGHTS = (0.1, 0.2, 0.3, 0.4)
LOG_MU, LOG_SIGMA = 3.0, 0.5  # "amount" is lognormal: skewed, on another scale
UNIT_BOUNDED = ("ks", "jensen_shannon", "chi_square", "l_infinity")


# --- helpers ---------------------------------------------------------------------------


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _counts(values: Sequence[str]) -> dict[str, int]:
    return dict(Counter(values))


def _stream(
    seed: int,
    length: int,
    shifted: Mapping[str, float] | None = None,
    shift_at: int = SHIFT_AT,
    starts: Mapping[str, int] | None = None,
) -> list[Row]:
    """Three numeric features of different shapes and scales plus a categorical one.

    ``shifted`` maps a feature to its mean shift in its own standard deviations from
    ``shift_at`` (or its own entry in ``starts``) on; ``{"plan": 1}`` swaps the plan
    frequencies instead.
    """
    rng, shifted, starts = _rng(seed), shifted or {}, starts or {}
    index = np.arange(length)

    def after(name: str) -> np.ndarray:
        return np.asarray(index >= starts.get(name, shift_at))

    def shift(name: str, sigma: float) -> np.ndarray:
        return np.where(after(name), shifted.get(name, 0.0) * sigma, 0.0)

    amount_sigma = math.sqrt(math.expm1(LOG_SIGMA**2) * math.exp(2 * LOG_MU + LOG_SIGMA**2))
    columns = {
        "age": rng.normal(40.0, 12.0, length) + shift("age", 12.0),
        "amount": rng.lognormal(LOG_MU, LOG_SIGMA, length) + shift("amount", amount_sigma),
        "visits": rng.poisson(3.0, length) + shift("visits", math.sqrt(3.0)),
    }
    plan_before = rng.choice(PLANS, length, p=PLAN_WEIGHTS)
    plan_after = rng.choice(PLANS, length, p=SHIFTED_PLAN_WEIGHTS)
    plans = np.where(after("plan") & bool(shifted.get("plan")), plan_after, plan_before)
    rows: list[Row] = [
        {name: float(col[i]) for name, col in columns.items()} for i in range(length)
    ]
    for row, plan in zip(rows, plans.tolist(), strict=True):
        row["plan"] = plan
    return rows


def _run(monitor: DataDriftMonitor, rows: Sequence[Row]) -> list[tuple[int, list[FeatureDrift]]]:
    """Feed ``rows``; every non-empty alert list with the update count it came at."""
    alerts = []
    for row in rows:
        drifts = monitor.update(row)
        if drifts:
            alerts.append((monitor.updates, drifts))
    return alerts


def _mixture_counts(rng: np.random.Generator, weight: float, size: int) -> dict[str, int]:
    """Plan counts from a mixture moving ``weight`` of the way to the shifted weights."""
    p = (1 - weight) * np.array(PLAN_WEIGHTS) + weight * np.array(SHIFTED_PLAN_WEIGHTS)
    return _counts(rng.choice(PLANS, size, p=p).tolist())


# --- statistics ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NUMERIC_TESTS))
def test_numeric_statistic_is_zero_for_identical_samples(name: str) -> None:
    sample = _rng(1).normal(size=LARGE_SAMPLE).tolist()
    assert NUMERIC_TESTS[name](sample, sample) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(CATEGORICAL_TESTS))
def test_categorical_statistic_is_zero_for_identical_counts(name: str) -> None:
    counts = _mixture_counts(_rng(2), 0.0, LARGE_SAMPLE)
    assert CATEGORICAL_TESTS[name](counts, counts) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(NUMERIC_TESTS))
def test_numeric_statistic_grows_with_the_mean_shift(name: str) -> None:
    rng = _rng(3)
    reference = rng.normal(size=LARGE_SAMPLE).tolist()
    values = [
        NUMERIC_TESTS[name](reference, rng.normal(shift, 1.0, LARGE_SAMPLE).tolist())
        for shift in SHIFTS_IN_SIGMA
    ]
    assert all(a < b for a, b in pairwise(values)), values
    assert values[0] < DEFAULT_THRESHOLDS[name] / 2 < DEFAULT_THRESHOLDS[name] < values[2]


@pytest.mark.parametrize("name", sorted(CATEGORICAL_TESTS))
def test_categorical_statistic_grows_with_the_frequency_shift(name: str) -> None:
    rng = _rng(4)
    reference = _mixture_counts(rng, 0.0, LARGE_SAMPLE)
    values = [
        CATEGORICAL_TESTS[name](reference, _mixture_counts(rng, weight, LARGE_SAMPLE))
        for weight in (0.0, 0.25, 0.5, 1.0)
    ]
    assert all(a < b for a, b in pairwise(values)), values
    assert values[0] < DEFAULT_THRESHOLDS[name] / 2 < DEFAULT_THRESHOLDS[name] < values[-1]


@pytest.mark.parametrize("name", sorted(NUMERIC_TESTS))
def test_default_threshold_sits_near_a_half_sigma_shift(name: str) -> None:
    """The documented calibration: a 0.3 sigma shift stays below, 0.8 sigma goes above."""
    rng = _rng(5)
    reference = rng.normal(size=20 * LARGE_SAMPLE).tolist()
    small, large = (
        NUMERIC_TESTS[name](reference, rng.normal(shift, 1.0, 20 * LARGE_SAMPLE).tolist())
        for shift in (0.3, 0.8)
    )
    assert small < DEFAULT_THRESHOLDS[name] < large


def test_ks_known_values() -> None:
    assert ks_statistic([1.0, 2.0, 3.0], [4.0, 5.0]) == 1.0
    assert ks_statistic([4.0, 5.0], [1.0, 2.0, 3.0]) == 1.0
    # CDF gaps at 1, 2, 3, 4: 1/3, 1/3, 1/3, 0.
    assert ks_statistic([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_ks_agrees_with_scipy_including_ties_and_a_prepared_reference(seed: int) -> None:
    from scipy.stats import ks_2samp

    rng = _rng(seed)
    reference = np.round(rng.normal(0.0, 1.0, 500), 1).tolist()  # many ties
    current = np.round(rng.normal(0.3, 1.2, 317), 1).tolist()
    expected = ks_2samp(reference, current).statistic
    assert ks_statistic(reference, current) == pytest.approx(expected)
    assert ks_statistic(Reference.of(reference), current) == pytest.approx(expected)
    prepared = Reference.of(reference)
    for test in (psi, jensen_shannon):
        assert test(prepared, current) == test(reference, current)


@pytest.mark.parametrize("seed", range(5))
def test_ks_agrees_with_scipy_on_distinct_values_and_on_one_shared_value(seed: int) -> None:
    """Distinct values take the one-lookup path; one value in both samples must not."""
    from scipy.stats import ks_2samp

    rng = _rng(seed)
    reference = rng.normal(0.0, 1.0, 500).tolist()
    prepared = Reference.of(reference)
    for size, shift in ((500, 0.0), (317, 0.4), (1, 0.0), (40, 9.0), (40, -9.0)):
        current = rng.normal(shift, 1.0, size).tolist()
        expected = ks_2samp(reference, current).statistic
        assert ks_statistic(prepared, current) == pytest.approx(expected, abs=1e-12)
        # Where both samples hold a value, both CDFs jump there, which the one-lookup
        # path would take as the reference's jump coming first.
        shared = [*current, reference[size // 2]]
        expected = ks_2samp(reference, shared).statistic
        assert ks_statistic(prepared, shared) == pytest.approx(expected, abs=1e-12)
    # Gaps at 1, 2, 3, 5: 1/3, 1/6, 1/2, 0 (counting 2 as the reference's first: 2/3).
    assert ks_statistic([1.0, 2.0, 3.0], [2.0, 5.0]) == pytest.approx(1 / 2)


def test_psi_and_jensen_shannon_known_values() -> None:
    # Two bins cut at the reference median 2.5: reference (1/2, 1/2), current (3/4, 1/4).
    reference, current = [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 4.0]
    expected_psi = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert psi(reference, current, bins=2) == pytest.approx(expected_psi)
    m = (0.625, 0.375)
    divergence = 0.5 * sum(p * math.log2(p / mi) for p, mi in zip((0.5, 0.5), m, strict=True))
    divergence += 0.5 * sum(q * math.log2(q / mi) for q, mi in zip((0.75, 0.25), m, strict=True))
    assert jensen_shannon(reference, current, bins=2) == pytest.approx(math.sqrt(divergence))
    # An empty bin is smoothed to PSI_EPSILON: large but finite.
    smoothed = 0.5 * math.log(2.0) + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    assert psi(reference, [1.0, 1.0, 1.0, 1.0], bins=2) == pytest.approx(smoothed)
    # A constant reference has one edge: below it is a bin of its own, disjoint from it.
    assert jensen_shannon([0.0] * 10, [-1.0] * 10, bins=2) == 1.0


def test_wasserstein_known_values() -> None:
    # Every unit of mass moves by 1; reference std is 1, then 0.5.
    assert wasserstein([0.0, 2.0], [1.0, 3.0]) == pytest.approx(1.0)
    assert wasserstein([0.0, 1.0], [1.0, 2.0]) == pytest.approx(2.0)
    # A constant reference: 0 when equal, otherwise scaled by the pooled std (0.5).
    assert wasserstein([5.0, 5.0], [5.0, 5.0, 5.0]) == 0.0
    assert wasserstein([0.0, 0.0], [1.0, 1.0]) == pytest.approx(2.0)
    # Scale-free: the same shift in other units gives the same value.
    rng = _rng(6)
    reference, current = rng.normal(size=500), rng.normal(0.7, 1.0, 500)
    assert wasserstein((1000 * reference).tolist(), (1000 * current).tolist()) == pytest.approx(
        wasserstein(reference.tolist(), current.tolist())
    )


def test_categorical_known_values() -> None:
    assert l_infinity({"a": 1}, {"b": 1}) == 1.0
    assert l_infinity({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert chi_square({"a": 100}, {"b": 100}) == pytest.approx(1.0)
    # Table [[50, 50], [100, 0]]: chi2 = 200/3, so phi^2 = 1/3; bias-corrected with n = 200.
    n = 200
    expected = math.sqrt((1 / 3 - 1 / (n - 1)) / (1 - 1 / (n - 1)))
    assert chi_square({"a": 50, "b": 50}, {"a": 100}) == pytest.approx(expected)
    assert chi_square({"a": 5}, {"a": 7}) == 0.0  # one category: nothing can differ


def test_chi_square_noise_does_not_grow_with_cardinality() -> None:
    """Plain Cramér's V of same-distribution windows is ~sqrt((k-1)/n) (0.38 for 100
    categories and 700 values); the corrected, rare-pooled statistic stays below 0.2."""
    rng, categories = _rng(7), [f"c{i}" for i in range(100)]
    for _ in range(20):
        reference = _counts(rng.choice(categories, 500).tolist())
        current = _counts(rng.choice(categories, 200).tolist())
        assert chi_square(reference, current) < DEFAULT_THRESHOLDS["chi_square"]


@pytest.mark.parametrize("name", UNIT_BOUNDED)
def test_bounded_statistics_stay_in_the_unit_interval(name: str) -> None:
    rng = _rng(8)
    for shift in (0.0, 3.0, 100.0):
        if name in NUMERIC_TESTS:
            value = NUMERIC_TESTS[name](
                rng.normal(size=50).tolist(), (shift + rng.normal(size=30)).tolist()
            )
        else:
            weight = min(shift, 1.0)
            value = CATEGORICAL_TESTS[name](
                _mixture_counts(rng, 0, 50), _mixture_counts(rng, weight, 30)
            )
        assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("name", sorted(NUMERIC_TESTS))
@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [1.0, math.inf]])
def test_numeric_statistics_refuse_empty_or_non_finite_samples(name: str, bad: list[float]) -> None:
    with pytest.raises(ValueError, match="finite"):
        NUMERIC_TESTS[name]([1.0, 2.0, 3.0], bad)
    with pytest.raises(ValueError, match="finite"):
        NUMERIC_TESTS[name](bad, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("name", sorted(CATEGORICAL_TESTS))
def test_categorical_statistics_refuse_bad_counts(name: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        CATEGORICAL_TESTS[name]({"a": 1}, {"a": -1})
    with pytest.raises(ValueError, match="at least one"):
        CATEGORICAL_TESTS[name]({"a": 0}, {"a": 3})


# --- configuration ---------------------------------------------------------------------


def test_config_merges_thresholds_over_the_defaults() -> None:
    config = DriftConfig(thresholds={"psi": 0.3})
    assert config.thresholds["psi"] == 0.3
    assert config.thresholds["ks"] == DEFAULT_THRESHOLDS["ks"]
    assert DriftConfig() == DriftConfig()


@pytest.mark.parametrize(
    "bad",
    [
        {"numeric_tests": ()},
        {"numeric_tests": ("psi", "t_test")},
        {"categorical_test": "g_test"},
        {"thresholds": {"ks": 0.0}},
        {"thresholds": {"ks": math.inf}},
        {"window": 100, "min_samples": 200},
        {"min_samples": 0},
        {"check_every": 0},
        {"cooldown": -1},
        {"rearm_ratio": 1.5},
        {"warmup": -1},
    ],
)
def test_config_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="DriftConfig needs"):
        DriftConfig(**bad)  # type: ignore[arg-type]


# --- the monitor -----------------------------------------------------------------------


def test_stationary_stream_gives_no_alert() -> None:
    monitor = DataDriftMonitor()
    assert _run(monitor, _stream(seed=10, length=STREAM_LENGTH)) == []
    statistics = monitor.statistics()
    assert sorted(statistics) == ["age", "amount", "plan", "visits"]
    assert set(statistics["age"]) == {"psi", "ks"}
    assert set(statistics["plan"]) == {"chi_square"}


def test_a_one_sigma_shift_is_named_first_quickly_and_alone() -> None:
    config = DriftConfig()
    monitor = DataDriftMonitor(config)
    rows = _stream(seed=11, length=SHIFT_AT + 3 * config.window, shifted={"amount": 1.0})
    alerts = _run(monitor, rows)
    assert alerts, "the shift was not detected"
    at, first = alerts[0]
    assert SHIFT_AT < at <= SHIFT_AT + config.window + config.check_every
    assert first[0].feature == "amount"
    assert first[0].severity > 1
    assert {drift.feature for _, drifts in alerts for drift in drifts} == {"amount"}


def test_persistent_shift_gives_one_alert_per_feature() -> None:
    monitor = DataDriftMonitor()
    shifted = {"age": 1.0, "visits": 2.0, "plan": 1.0}
    rows = _stream(seed=12, length=SHIFT_AT + AFTER_SHIFT, shifted=shifted)
    alerts = _run(monitor, rows)
    named = Counter(drift.feature for _, drifts in alerts for drift in drifts)
    assert named == dict.fromkeys(shifted, 1)
    assert all(at > SHIFT_AT for at, _ in alerts)


def test_alerts_at_one_check_are_ranked_by_severity() -> None:
    # The first check sees full windows, so both shifts are fully in view at once.
    config = DriftConfig(window=300, min_samples=300, check_every=600)
    rows = _stream(seed=13, length=600, shifted={"age": 1.0, "visits": 3.0}, shift_at=300)
    monitor = DataDriftMonitor(config)
    alerts = _run(monitor, rows)
    assert [at for at, _ in alerts] == [600]
    drifts = alerts[0][1]
    assert [drift.feature for drift in drifts] == ["visits", "age"]
    assert drifts[0].severity > drifts[1].severity > 1
    statistics = monitor.statistics()
    for drift in drifts:  # each is its feature's most severe test
        tests = statistics[drift.feature]
        assert drift.severity == max(v / config.thresholds[t] for t, v in tests.items())
        assert drift.statistic == tests[drift.test] > drift.threshold


def _mechanics(cooldown: int, rearm_ratio: float = 0.5) -> DriftConfig:
    """Small windows for the alert mechanics, with 5-sigma shifts: KS only, its threshold
    far above its noise for 50 vs 100 values (the defaults assume windows of hundreds)."""
    return DriftConfig(
        numeric_tests=("ks",),
        thresholds={"ks": 0.5},
        window=100,
        min_samples=50,
        check_every=10,
        cooldown=cooldown,
        rearm_ratio=rearm_ratio,
    )


def _alternating(seed: int, segments: Sequence[tuple[int, float]]) -> list[Row]:
    """``x`` from N(shift, 1) for each (length, shift) segment in turn."""
    rng = _rng(seed)
    return [{"x": float(v)} for n, shift in segments for v in rng.normal(shift, 1.0, n)]


def test_cooldown_delays_a_second_alert() -> None:
    # No hysteresis (rearm_ratio 1): only the cooldown keeps the second shift quiet.
    config = _mechanics(cooldown=1000, rearm_ratio=1.0)
    rows = _alternating(14, [(300, 0.0), (100, 5.0), (200, 0.0), (1000, 5.0)])
    alerts = _run(DataDriftMonitor(config), rows)
    assert len(alerts) == 2
    (first, _), (second, _) = alerts
    assert 300 < first < 400
    assert second == first + config.cooldown


def test_hysteresis_rearms_only_after_the_statistic_falls_back() -> None:
    config = _mechanics(cooldown=0)
    # Shift, partial recovery to 1.2 sigma (KS about 0.45: between the re-arm level 0.25
    # and the threshold 0.5), shift again: still one alert.
    partial = _alternating(15, [(300, 0.0), (300, 5.0), (300, 1.2), (300, 5.0)])
    assert len(_run(DataDriftMonitor(config), partial)) == 1
    # Shift, full recovery, shift: the feature re-arms and alerts again.
    full = _alternating(15, [(300, 0.0), (300, 5.0), (300, 0.0), (300, 5.0)])
    assert len(_run(DataDriftMonitor(config), full)) == 2


@pytest.mark.parametrize("test", sorted(CATEGORICAL_TESTS))
def test_categorical_shift_is_detected(test: str) -> None:
    config = DriftConfig(categorical_test=test)
    rows = _stream(seed=16, length=SHIFT_AT + 2 * config.window, shifted={"plan": 1.0})
    alerts = _run(DataDriftMonitor(config), rows)
    assert len(alerts) == 1
    at, drifts = alerts[0]
    assert SHIFT_AT < at <= SHIFT_AT + config.window + config.check_every
    assert [(d.feature, d.test) for d in drifts] == [("plan", test)]


def test_prediction_drift_uses_the_same_monitor() -> None:
    """Boolean predictions are numeric 0/1: a jump of the positive rate is drift."""
    rng, config = _rng(17), DriftConfig()
    rates = np.where(np.arange(4_000) < 2_000, 0.1, 0.4)
    alerts = _run(DataDriftMonitor(config), [{"prediction": bool(rng.random() < r)} for r in rates])
    assert [drift.feature for _, drifts in alerts for drift in drifts] == ["prediction"]


def test_min_samples_is_respected() -> None:
    config = DriftConfig(window=300, min_samples=250, check_every=10)
    monitor = DataDriftMonitor(config)
    rng = _rng(18)
    reference: list[Row] = [{"x": float(v)} for v in rng.normal(0.0, 1.0, config.window)]
    shifted: list[Row] = [{"x": float(v)} for v in rng.normal(10.0, 1.0, config.window)]
    assert _run(monitor, reference) == []
    for row in shifted[: config.min_samples - 1]:
        assert monitor.update(row) == []
        assert monitor.statistics() == {}
    drifts = monitor.update(shifted[config.min_samples - 1])
    assert monitor.updates == config.window + config.min_samples
    assert [d.feature for d in drifts] == ["x"]
    assert monitor.statistics()["x"]["ks"] == 1.0


def test_reset_reference_makes_the_new_regime_the_baseline() -> None:
    config = _mechanics(cooldown=0)
    monitor = DataDriftMonitor(config)
    assert len(_run(monitor, _alternating(19, [(300, 0.0), (300, 5.0)]))) == 1
    monitor.reset_reference()
    assert monitor.statistics() == {}
    assert _run(monitor, _alternating(20, [(1000, 5.0)])) == []
    # Re-armed: the next shift is reported.
    assert len(_run(monitor, _alternating(21, [(300, 0.0)]))) == 1


@pytest.mark.parametrize("snapshot_at", [4_321, 5_678])
def test_state_round_trip_gives_identical_future(snapshot_at: int) -> None:
    """Snapshots before any alert and after the first one (a disarmed, cooling feature)."""
    config = DriftConfig()
    shifted, starts = {"age": 1.0, "plan": 1.0}, {"plan": SHIFT_AT + 1_000}
    rows = _stream(seed=22, length=SHIFT_AT + 3_000, shifted=shifted, starts=starts)
    original = DataDriftMonitor(config)
    assert bool(_run(original, rows[:snapshot_at])) == (snapshot_at > SHIFT_AT)
    checkpoint = json.dumps(original.state(), allow_nan=False)
    restored = DataDriftMonitor.from_state(json.loads(checkpoint), config)
    assert restored.statistics() == original.statistics()
    expected = _run(original, rows[snapshot_at:])
    assert expected, "the scenario should alert after the snapshot"
    assert _run(restored, rows[snapshot_at:]) == expected
    assert restored.state() == original.state()
    assert restored.statistics() == original.statistics()


def test_state_of_another_version_is_refused() -> None:
    state = DataDriftMonitor().state() | {"version": 0}
    with pytest.raises(ValueError, match="version"):
        DataDriftMonitor.from_state(state, DriftConfig())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400])
def test_non_finite_values_are_refused_without_side_effects(bad: float) -> None:
    monitor = DataDriftMonitor()
    _run(monitor, _stream(seed=23, length=50))
    before = monitor.state()
    with pytest.raises(ValueError, match="finite"):
        monitor.update({"age": 30.0, "amount": bad})
    assert monitor.state() == before


def test_kind_changes_and_unknown_types_are_refused() -> None:
    monitor = DataDriftMonitor()
    monitor.update({"x": 1.0, "plan": "free"})
    with pytest.raises(ValueError, match="numeric"):
        monitor.update({"x": "one"})
    with pytest.raises(ValueError, match="categorical"):
        monitor.update({"plan": 1})
    with pytest.raises(TypeError, match="list"):
        monitor.update({"y": [1.0]})  # type: ignore[dict-item]
    assert monitor.updates == 1


def test_none_is_ignored_and_bools_count_as_numbers() -> None:
    monitor = DataDriftMonitor()
    monitor.update({"x": None, "flag": True})
    monitor.update({"x": None, "flag": False})
    monitor.update({"x": None, "flag": np.int64(2)})  # type: ignore[dict-item]
    features = monitor.state()["features"]
    assert sorted(features) == ["flag"]
    assert features["flag"]["kind"] == "numeric"
    assert features["flag"]["reference"] == [1.0, 0.0, 2.0]
    assert monitor.updates == 3


def test_feature_drift_explains_itself() -> None:
    drift = FeatureDrift("amount", "psi", 0.5, 0.25)
    assert drift.severity == 2.0
    assert drift.describe() == "amount: psi 0.500 > 0.250 (x2.00)"


def test_a_drift_track_pickled_with_an_old_prepared_reference_is_rebuilt() -> None:
    config = DriftConfig(window=50, min_samples=20, check_every=10)
    monitor = DataDriftMonitor(config)
    monitor.update_many([{"x": float(i % 7)} for i in range(120)])
    track = monitor._tracks["x"]
    old_state = {**track.__dict__, "_prepared": object()}  # an older checkpoint's cache
    restored = type(track).__new__(type(track))
    restored.__setstate__(old_state)
    assert restored.measure(config)


def test_a_cold_start_within_the_warmup_is_no_evidence() -> None:
    # The first values differ (new entities, a model still learning), then the stream
    # settles. Taken into the reference, the cold start reads as drift; warmed up, not.
    rng = np.random.default_rng(21)
    cold = [{"gap": rng.normal(5.0, 1.0)} for _ in range(300)]
    steady = [{"gap": rng.normal(0.0, 1.0)} for _ in range(2500)]
    config = DriftConfig(window=500, min_samples=200)
    assert _run(DataDriftMonitor(config), cold + steady), "cold start taken as evidence"
    warmed = DataDriftMonitor(DriftConfig(window=500, min_samples=200, warmup=300))
    assert _run(warmed, cold + steady) == []
    assert warmed.updates == 2800


def test_ever_new_feature_names_do_not_grow_the_monitor_past_its_cap() -> None:
    """A fuzz of valid examples with mangled names once gave the learner 20,038 tracks and
    an 8 MB checkpoint that took a second to write, every second."""
    monitor = DataDriftMonitor(DriftConfig(window=10, min_samples=5, check_every=5))
    rows = [{"amount": float(i % 7), f"junk_{i}": float(i)} for i in range(2_000)]
    monitor.update_many(rows)
    tracked = monitor.state()["features"]
    assert len(tracked) == DriftConfig().max_features
    assert "amount" in tracked, "the first names seen keep their tracks"
    assert monitor.untracked == 2_000 - (DriftConfig().max_features - 1)
    untracked = monitor.untracked
    for i in range(50):
        monitor.update({"amount": 1.0, f"late_{i}": 2.0})
    assert len(monitor.state()["features"]) == DriftConfig().max_features
    assert monitor.untracked == untracked + 50


def test_a_monitor_restored_from_before_the_cap_keeps_the_first_names_it_saw() -> None:
    monitor = DataDriftMonitor(DriftConfig(window=10, min_samples=5, max_features=600))
    monitor.update_many([{f"name_{i:03d}": 1.0 for i in range(600)}])
    # As a checkpoint from before the cap: its config (pickled without the field) reads
    # the default, and the monitor has no untracked count.
    monitor.config = DriftConfig(window=10, min_samples=5)
    del monitor.untracked
    restored = pickle.loads(pickle.dumps(monitor))
    assert list(restored.state()["features"]) == [f"name_{i:03d}" for i in range(512)]
    assert restored.untracked == 0


@pytest.mark.parametrize("seed", range(6))
def test_a_monitor_tests_its_kept_window_exactly_as_the_tests_do_a_fresh_sample(seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = DriftConfig(
        numeric_tests=("psi", "ks", "jensen_shannon", "wasserstein"),
        window=60,
        min_samples=30,
        check_every=7,
    )
    monitor = DataDriftMonitor(config)
    discrete = seed % 2 == 0  # ties, in both windows and across them
    for start in range(0, 400, 23):  # batches across checks and window turns
        rows = [
            {"x": float(rng.integers(0, 6)) if discrete else float(rng.normal(start / 200, 1))}
            for _ in range(23)
        ]
        monitor.update_many(rows)
        track = monitor._tracks["x"]
        if len(track.current) < config.min_samples:
            continue
        kept = track.measure(config)
        fresh = pickle.loads(pickle.dumps(track))  # no cached array, nor prepared reference
        assert fresh._array is None
        assert kept == fresh.measure(config)
        reference, current = list(track.reference), list(track.current)
        assert kept == {name: NUMERIC_TESTS[name](reference, current) for name in kept}
