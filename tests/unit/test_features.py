"""Properties of eddy.streams.features.compute, checked from the outside.

Each test states one promise of the module (idempotence, order-freedom, exactness,
windows, the event-time guard, point-in-time reads, ratios, freshness, the state
codec, pruning, definitions, distinct overflow) and checks it against values computed
here directly. Randomness comes from seeded ``random.Random`` instances only.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from fractions import Fraction

import orjson
import pytest

from eddy.streams.features.compute import (
    AGGREGATE_OPS,
    DISTINCT_CAP,
    MAX_ENTITY_FEATURES,
    OTHER_CATEGORY,
    TIME_SINCE_LAST,
    Aggregate,
    Applied,
    Categories,
    EntityState,
    FeatureSet,
    FeatureValue,
    Ratio,
    Window,
    apply_event,
    decode_state,
    encode_state,
    feature_vector,
    freshness,
    sliding,
    tumbling,
)
from eddy.streams.messages.contracts import SourceOffset, TrainingExample

Event = tuple[str, float, dict[str, FeatureValue]]

HOUR = 3600
# An hour boundary: every test's timeline is placed around it.
H = 472_223 * HOUR  # 1_700_002_800 = 2023-11-14T23:00:00Z
SHUFFLE_SEEDS = (1, 2, 3, 4, 5)
# Below this magnitude a double has bits finer than 2**-64, which the module documents
# as the one place its fixed-point sums are not exact ("all but tiny fractions").
SMALLEST_EXACT = 2.0**-12


# --- helpers ---------------------------------------------------------------------------


def _rng(seed: int) -> random.Random:
    """Seeded, reproducible test data (not cryptography)."""
    return random.Random(seed)


def _apply_all(
    fs: FeatureSet, events: Iterable[Event], state: EntityState | None = None
) -> EntityState:
    """Apply ``events`` in the given order, asserting that each is new."""
    state = EntityState() if state is None else state
    for event_id, event_time, raw in events:
        assert apply_event(state, fs, event_id, event_time, raw) is Applied.NEW, event_id
    return state


def _shuffled(events: Sequence[Event], seed: int) -> list[Event]:
    copy = list(events)
    _rng(seed).shuffle(copy)
    return copy


def _canonical(vector: dict[str, FeatureValue]) -> bytes:
    """A vector as bytes, so that 0.0 and -0.0 or 1 and 1.0 count as different."""
    return orjson.dumps(vector, option=orjson.OPT_SORT_KEYS)


def _random_values(rng: random.Random, n: int, low: float, high: float) -> list[float]:
    values: list[float] = []
    while len(values) < n:
        value = rng.uniform(low, high)
        if abs(value) >= SMALLEST_EXACT:
            values.append(value)
    return values


def _all_ops(source: str, window: Window) -> Aggregate:
    return Aggregate(source, AGGREGATE_OPS, window)


def _mixed_events(rng: random.Random, n: int = 120) -> list[Event]:
    """Events within 3000 s (under the default lateness) around the hour boundary ``H``,
    with values whose naive float sum depends on the order of addition."""
    amounts: list[FeatureValue] = [
        0.1,
        0.2,
        1e6 + 0.3,
        -7.25,
        -0.1,
        3,
        -12,
        True,
        False,
        "n/a",
        None,
        2.5e5,
        1e-3,
        -1e6 - 0.7,
    ]
    countries = ["NL", "DE", "FR", "BE"]
    events: list[Event] = []
    for i in range(n):
        raw: dict[str, FeatureValue] = {
            "amount": amounts[i % len(amounts)],
            "country": rng.choice(countries),
        }
        if i % 3 == 0:
            raw["mobile"] = bool(rng.getrandbits(1))
        events.append((f"e{i:03d}", H - 2000 + rng.uniform(0, 3000), raw))
    # Two events at the very same time: the event id breaks the tie for "last".
    events.append(("tie-a", H + 500.0, {"amount": 4.0, "country": "NL"}))
    events.append(("tie-b", H + 500.0, {"amount": 5.0, "country": "DE"}))
    return events


MIXED_FS = FeatureSet(
    aggregates=(
        _all_ops("amount", tumbling(HOUR)),
        _all_ops("amount", sliding(600, 60)),
        Aggregate("country", ("count", "distinct", "last"), tumbling(HOUR)),
    ),
    ratios=(Ratio("amount_avg_1h", "amount_sum_1h", "amount_count_1h"),),
)


# --- 1. idempotence --------------------------------------------------------------------


def test_applying_the_same_events_twice_leaves_the_state_bytes_unchanged() -> None:
    events = _mixed_events(_rng(11))
    state = _apply_all(MIXED_FS, events)
    once = encode_state(state)

    for event_id, event_time, raw in _shuffled(events, seed=12):
        assert apply_event(state, MIXED_FS, event_id, event_time, raw) is Applied.DUPLICATE
    # A redelivery with a different payload is still the same event.
    event_id, event_time, _ = events[0]
    altered: dict[str, FeatureValue] = {"amount": 999.0}
    assert apply_event(state, MIXED_FS, event_id, event_time, altered) is Applied.DUPLICATE

    assert encode_state(state) == once


# --- 2. order-freedom ------------------------------------------------------------------


def test_any_arrival_order_within_the_lateness_gives_identical_state_and_vector() -> None:
    events = _mixed_events(_rng(21))
    times = [t for _, t, _ in events]
    assert max(times) - min(times) <= MIXED_FS.allowed_lateness_s
    numbers = [_as_float(raw["amount"]) for _, _, raw in events if _is_number(raw["amount"])]
    naive_sums = {sum(numbers[i] for i in _permutation(len(numbers), s)) for s in SHUFFLE_SEEDS}
    assert len(naive_sums) > 1, "the data should make naive float summation order-dependent"

    in_order = _apply_all(MIXED_FS, sorted(events, key=lambda e: e[1]))
    expected_bytes = encode_state(in_order)
    as_ofs = (H + 1000.0, H - 1.0, H + 500.0)
    expected_vectors = [_canonical(feature_vector(in_order, MIXED_FS, t)) for t in as_ofs]

    for seed in SHUFFLE_SEEDS:
        state = _apply_all(MIXED_FS, _shuffled(events, seed))
        assert encode_state(state) == expected_bytes, f"seed {seed}"
        for as_of, expected in zip(as_ofs, expected_vectors, strict=True):
            assert _canonical(feature_vector(state, MIXED_FS, as_of)) == expected, seed


def _is_number(value: FeatureValue) -> bool:
    return isinstance(value, int | float)


def _as_float(value: FeatureValue) -> float:
    assert isinstance(value, int | float), value
    return float(value)


def _permutation(n: int, seed: int) -> list[int]:
    order = list(range(n))
    _rng(seed).shuffle(order)
    return order


def test_signed_zeros_in_any_order_give_identical_state() -> None:
    fs = FeatureSet(aggregates=(_all_ops("amount", tumbling(HOUR)),))
    events: list[Event] = [
        ("pos", H + 10.0, {"amount": 0.0}),
        ("neg", H + 20.0, {"amount": -0.0}),
        ("one", H + 30.0, {"amount": 1.0}),
        ("minus", H + 40.0, {"amount": -1.0}),
        ("pos2", H + 50.0, {"amount": 0.0}),
    ]
    zeros_only = [e for e in events if e[0] in {"pos", "neg"}]
    for subset in (events, zeros_only):
        expected = encode_state(_apply_all(fs, subset))
        assert encode_state(_apply_all(fs, list(reversed(subset)))) == expected
        for seed in SHUFFLE_SEEDS:
            assert encode_state(_apply_all(fs, _shuffled(subset, seed))) == expected, seed


# --- 3. exactness against a direct computation -----------------------------------------


def _window_dataset(name: str) -> list[float]:
    rng = _rng(31)
    if name == "centred":
        return _random_values(rng, 200, -1000.0, 1000.0)
    if name == "wide range":
        scaled = [v * 10.0 ** rng.randint(-3, 9) for v in _random_values(rng, 200, -1.0, 1.0)]
        return [v for v in scaled if abs(v) >= SMALLEST_EXACT]
    if name == "decimals":
        return [round(v, 2) for v in _random_values(rng, 200, -100.0, 100.0) if round(v, 2)]
    if name == "large offset":
        return [1e6 + v for v in _random_values(rng, 200, 0.0, 1.0)]
    if name == "constant":
        return [1e6 + 0.1] * 7
    if name == "single value":
        return [0.1]
    raise AssertionError(name)


DATASETS = ("centred", "wide range", "decimals", "large offset", "constant", "single value")


def _windowed(values: Sequence[float]) -> tuple[FeatureSet, EntityState, list[Event]]:
    """``values`` in the hour starting at ``H``, plus noise in the hours around it."""
    rng = _rng(32)
    fs = FeatureSet(aggregates=(_all_ops("x", tumbling(HOUR)),))
    inside: list[Event] = [
        (f"in{i:04d}", H + rng.uniform(0, HOUR - 1), {"x": v}) for i, v in enumerate(values)
    ]
    before: list[Event] = [
        (f"before{i}", H - rng.uniform(1, 1800), {"x": rng.uniform(-5e5, 5e5)}) for i in range(20)
    ]
    events = sorted(before + inside, key=lambda e: e[1])
    state = _apply_all(fs, events)
    return fs, state, inside


@pytest.mark.parametrize("dataset", DATASETS)
def test_window_sum_mean_min_max_count_last_distinct_are_exact(dataset: str) -> None:
    values = _window_dataset(dataset)
    fs, state, inside = _windowed(values)
    vector = feature_vector(state, fs, as_of=H + HOUR - 1)
    n = len(values)
    exact_sum = sum(Fraction(v) for v in values)

    assert vector["x_count_1h"] == n
    # The sum is kept exactly and rounded once, like math.fsum.
    assert vector["x_sum_1h"] == math.fsum(values)
    # The mean is the exact mean rounded once, so within 1 ulp of fsum / n.
    mean = vector["x_mean_1h"]
    assert isinstance(mean, float)
    assert mean == float(exact_sum / n)
    assert abs(mean - math.fsum(values) / n) <= math.ulp(mean)
    assert vector["x_min_1h"] == min(values)
    assert vector["x_max_1h"] == max(values)
    # One bucket here, so the distinct count is exact up to the documented cap.
    assert vector["x_distinct_1h"] == min(len(set(values)), DISTINCT_CAP)
    newest_inside = max(inside, key=lambda e: (e[1], e[0]))
    assert vector["x_last_1h"] == newest_inside[2]["x"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_window_std_is_the_population_std(dataset: str) -> None:
    values = _window_dataset(dataset)
    fs, state, _ = _windowed(values)
    std = feature_vector(state, fs, as_of=H + HOUR - 1)["x_std_1h"]
    expected = statistics.pstdev(values)
    assert isinstance(std, float)
    scale = max(abs(v) for v in values)
    assert math.isclose(std, expected, rel_tol=1e-9, abs_tol=1e-12 * scale), (
        f"std {std!r}, pstdev {expected!r}"
    )


def test_large_finite_values_are_aggregated() -> None:
    fs = FeatureSet(aggregates=(Aggregate("x", ("count", "sum", "min", "max"), tumbling(HOUR)),))
    state = EntityState()
    values = [1.5e19, -3e18, 2.0]  # within the contracts' ±2⁶⁴
    for i, value in enumerate(values):
        assert apply_event(state, fs, f"e{i}", H + i, {"x": value}) is Applied.NEW
    vector = feature_vector(state, fs, as_of=H + 10)
    assert vector["x_count_1h"] == 3
    assert vector["x_sum_1h"] == math.fsum(values)
    assert vector["x_min_1h"] == -3e18
    assert vector["x_max_1h"] == 1.5e19


def test_a_sum_past_the_contracts_bound_is_none_and_the_example_still_valid() -> None:
    """Two amounts each within ±2⁶⁴ sum past it: a training example refused the sum, and
    the feature worker restarted on that event for ever (found by the long fuzz)."""
    fs = FeatureSet(aggregates=(Aggregate("x", ("count", "sum", "mean", "std"), tumbling(HOUR)),))
    state = EntityState()
    for i in range(2):
        assert apply_event(state, fs, f"e{i}", H + i, {"x": 1.4e19}) is Applied.NEW
    vector = feature_vector(state, fs, as_of=H + 10)
    assert vector["x_sum_1h"] is None
    assert vector["x_mean_1h"] == 1.4e19
    assert vector["x_count_1h"] == 2
    example = TrainingExample(
        example_id="e1",
        entity_id="u",
        event_time=datetime.fromtimestamp(H + 1, UTC),
        label=True,
        features=vector,
        feature_set=fs.fingerprint(),
        source=SourceOffset(topic="events", partition=0, offset=1),
    )
    assert example.features["x_sum_1h"] is None


# --- 4. windows ------------------------------------------------------------------------


def test_tumbling_window_resets_at_its_boundary() -> None:
    fs = FeatureSet(aggregates=(Aggregate("amount", ("count", "sum"), tumbling(HOUR)),))
    state = _apply_all(
        fs,
        [
            ("a", H - 10.0, {"amount": 1.0}),
            ("b", H - 1.0, {"amount": 2.0}),
            ("c", H + 0.0, {"amount": 4.0}),
            ("d", H + 50.0, {"amount": 8.0}),
        ],
    )
    after = feature_vector(state, fs, as_of=H + 50.0)
    assert (after["amount_count_1h"], after["amount_sum_1h"]) == (2, 12.0)
    before = feature_vector(state, fs, as_of=H - 1.0)
    assert (before["amount_count_1h"], before["amount_sum_1h"]) == (2, 3.0)
    at_boundary = feature_vector(state, fs, as_of=float(H))
    assert (at_boundary["amount_count_1h"], at_boundary["amount_sum_1h"]) == (2, 12.0)
    next_hour = feature_vector(state, fs, as_of=H + HOUR + 5.0)
    assert (next_hour["amount_count_1h"], next_hour["amount_sum_1h"]) == (0, 0.0)


def test_sliding_window_covers_exactly_the_last_ten_one_minute_buckets() -> None:
    rng = _rng(41)
    fs = FeatureSet(
        aggregates=(Aggregate("amount", ("count", "sum", "min", "max"), sliding(600, 60)),)
    )
    events: list[Event] = [
        (f"e{i:03d}", H + rng.uniform(0, 1800), {"amount": float(rng.randint(-50, 50))})
        for i in range(300)
    ]
    state = _apply_all(fs, sorted(events, key=lambda e: e[1]))

    for as_of in [H + 1800.0, H + 900.0, H + 930.5, H + 599.0, H + 60.0, H + 1200.25]:
        first = math.floor(as_of / 60) * 60 - 540
        values = [
            _as_float(raw["amount"])
            for _, t, raw in events
            if first <= math.floor(t / 60) * 60 <= as_of
        ]
        vector = feature_vector(state, fs, as_of=as_of)
        assert vector["amount_count_10m_every_1m"] == len(values), as_of
        assert vector["amount_sum_10m_every_1m"] == math.fsum(values), as_of
        assert vector["amount_min_10m_every_1m"] == min(values), as_of
        assert vector["amount_max_10m_every_1m"] == max(values), as_of


def test_empty_windows_give_zero_counts_and_no_statistics() -> None:
    fs = FeatureSet(
        aggregates=(_all_ops("amount", tumbling(HOUR)), _all_ops("amount", sliding(600, 60)))
    )
    expected: dict[str, FeatureValue] = {
        "count": 0,
        "sum": 0.0,
        "mean": None,
        "min": None,
        "max": None,
        "std": None,
        "last": None,
        "distinct": 0,
    }
    new_entity = EntityState()
    old_events = _apply_all(fs, [("a", H - 100.0, {"amount": 3.0})])
    for state, as_of in ((new_entity, float(H)), (old_events, H + 700.0)):
        vector = feature_vector(state, fs, as_of=as_of)
        for window in ("1h", "10m_every_1m"):
            for op, value in expected.items():
                actual = vector[f"amount_{op}_{window}"]
                assert actual == value, (op, window)
                assert type(actual) is type(value), (op, window)


# --- 5. event-time guard ---------------------------------------------------------------


def test_an_event_older_than_the_lateness_is_refused_and_changes_nothing() -> None:
    fs = FeatureSet(aggregates=(_all_ops("amount", tumbling(HOUR)),), allowed_lateness_s=600)
    state = _apply_all(fs, [("new", H + 100.0, {"amount": 2.0, "country": "NL"})])
    before = encode_state(state)

    late = apply_event(state, fs, "old", H + 100.0 - 601, {"amount": 9.0, "country": "DE"})
    assert late is Applied.TOO_LATE
    assert encode_state(state) == before
    # Refused, not remembered: a redelivery is refused again.
    assert apply_event(state, fs, "old", H - 501.0, {"amount": 9.0}) is Applied.TOO_LATE
    assert encode_state(state) == before
    # Exactly at the limit is still accepted.
    assert apply_event(state, fs, "edge", H + 100.0 - 600, {"amount": 1.0}) is Applied.NEW


def test_an_event_within_the_lateness_lands_in_its_own_earlier_window() -> None:
    fs = FeatureSet(
        aggregates=(Aggregate("amount", ("count", "sum", "last"), tumbling(HOUR)),),
        allowed_lateness_s=600,
    )
    state = _apply_all(fs, [("new", H + 100.0, {"amount": 2.0})])
    assert apply_event(state, fs, "late", H - 200.0, {"amount": 5.0}) is Applied.NEW

    previous_hour = feature_vector(state, fs, as_of=H - 1.0)
    assert previous_hour["amount_count_1h"] == 1
    assert previous_hour["amount_sum_1h"] == 5.0
    assert previous_hour["amount_last_1h"] == 5.0
    this_hour = feature_vector(state, fs, as_of=H + 100.0)
    assert this_hour["amount_count_1h"] == 1
    assert this_hour["amount_sum_1h"] == 2.0


def test_a_late_event_never_overwrites_a_newer_last_value() -> None:
    fs = FeatureSet(
        aggregates=(Aggregate("amount", ("count", "last"), tumbling(HOUR)),),
        allowed_lateness_s=600,
    )
    state = _apply_all(fs, [("new", H + 100.0, {"amount": 2.0, "country": "NL"})])
    # Late, in the same bucket, and with a lexically larger id.
    assert apply_event(state, fs, "zz-late", H + 50.0, {"amount": 1.0, "country": "DE"}) is (
        Applied.NEW
    )
    vector = feature_vector(state, fs, as_of=H + 100.0)
    assert vector["amount"] == 2.0
    assert vector["country"] == "NL"
    assert vector["amount_last_1h"] == 2.0
    assert vector["amount_count_1h"] == 2
    assert state.newest == H + 100.0


# --- 6. point in time ------------------------------------------------------------------


def test_a_vector_as_of_an_event_excludes_buckets_that_start_later() -> None:
    fs = FeatureSet(
        aggregates=(
            Aggregate("amount", ("count", "sum", "last"), tumbling(HOUR)),
            Aggregate("amount", ("count", "sum"), sliding(600, 60)),
        ),
        passthrough=("amount", "country"),
    )
    state = _apply_all(
        fs,
        [
            ("e1", H + 1000.0, {"amount": 1.0, "country": "NL"}),
            ("e3", H + 1300.0, {"amount": 4.0, "country": "DE"}),
        ],
    )
    # e2 arrives late, at H + 1100: its training example is built before applying it.
    e2_raw: dict[str, FeatureValue] = {"amount": 2.0, "country": "FR", "mobile": True}
    before_e2 = feature_vector(state, fs, as_of=H + 1100.0, raw=e2_raw)
    assert before_e2["amount_count_1h"] == 1
    assert before_e2["amount_sum_1h"] == 1.0
    assert before_e2["amount_last_1h"] == 1.0
    assert before_e2["amount_count_10m_every_1m"] == 1
    # The request's own raw features override the stored last values...
    assert before_e2["amount"] == 2.0
    assert before_e2["country"] == "FR"
    # ...but only for features that pass through.
    assert "mobile" not in before_e2

    assert apply_event(state, fs, "e2", H + 1100.0, e2_raw) is Applied.NEW
    after_e2 = feature_vector(state, fs, as_of=H + 1100.0)
    assert after_e2["amount_count_1h"] == 2
    assert after_e2["amount_sum_1h"] == 3.0
    assert after_e2["amount_last_1h"] == 2.0


def test_raw_features_override_stored_last_values() -> None:
    fs = FeatureSet()
    state = _apply_all(fs, [("e1", H + 1.0, {"amount": 1.0, "country": "NL"})])
    assert feature_vector(state, fs, as_of=H + 2.0)["amount"] == 1.0
    vector = feature_vector(state, fs, as_of=H + 2.0, raw={"amount": 7.5, "new": "x"})
    assert vector["amount"] == 7.5
    assert vector["country"] == "NL"
    assert vector["new"] == "x"


# --- 7. ratios -------------------------------------------------------------------------


def test_ratios_divide_two_features_and_are_none_when_undefined() -> None:
    fs = FeatureSet(
        aggregates=(
            Aggregate("amount", ("count", "sum"), tumbling(HOUR)),
            Aggregate("refund", ("count", "sum"), tumbling(HOUR)),
        ),
        ratios=(
            Ratio("avg_amount", "amount_sum_1h", "amount_count_1h"),
            Ratio("share_of_hour", "amount", "amount_sum_1h"),
            Ratio("per_refund", "amount_sum_1h", "refund_count_1h"),
            Ratio("zero_sum", "amount_sum_1h", "refund_sum_1h"),
            Ratio("missing", "amount_sum_1h", "no_such_feature"),
            Ratio("text", "amount_sum_1h", "country"),
        ),
    )
    state = _apply_all(
        fs,
        [
            ("a", H + 1.0, {"amount": 3.0, "country": "NL"}),
            ("b", H + 2.0, {"amount": 4.5, "country": "NL"}),
            ("c", H + 3.0, {"amount": 0.5}),
        ],
    )
    vector = feature_vector(state, fs, as_of=H + 10.0)
    assert vector["avg_amount"] == 8.0 / 3
    assert vector["share_of_hour"] == 0.5 / 8.0
    assert vector["per_refund"] is None
    assert vector["zero_sum"] is None
    assert vector["missing"] is None
    assert vector["text"] is None


# --- 8. freshness ----------------------------------------------------------------------


def test_seconds_since_last_event_is_the_time_since_the_newest_event() -> None:
    fs = FeatureSet(aggregates=(Aggregate("amount", ("count",), tumbling(HOUR)),))
    state = EntityState()
    assert freshness(state, float(H)) is None
    assert feature_vector(state, fs, as_of=float(H))[TIME_SINCE_LAST] is None

    _apply_all(
        fs,
        [
            ("b", H + 250.5, {"amount": 1.0}),
            ("a", H + 100.0, {"amount": 1.0}),  # late: does not move the newest time
        ],
        state,
    )
    assert freshness(state, H + 300.0) == 49.5
    assert feature_vector(state, fs, as_of=H + 1000.5)[TIME_SINCE_LAST] == 750.0

    quiet = FeatureSet(aggregates=fs.aggregates, time_since_last=False)
    assert TIME_SINCE_LAST not in feature_vector(state, quiet, as_of=H + 300.0)


# --- 9. round trip ---------------------------------------------------------------------


def test_decoding_an_encoded_state_gives_the_same_bytes_and_vector() -> None:
    events = _mixed_events(_rng(91))
    state = _apply_all(MIXED_FS, events[:100])
    encoded = encode_state(state)
    decoded = decode_state(encoded)

    assert encode_state(decoded) == encoded
    for as_of in (H + 1000.0, H - 1.0):
        assert _canonical(feature_vector(decoded, MIXED_FS, as_of)) == _canonical(
            feature_vector(state, MIXED_FS, as_of)
        )
    # A decoded state goes on exactly as the original does.
    _apply_all(MIXED_FS, events[100:], state)
    _apply_all(MIXED_FS, events[100:], decoded)
    assert encode_state(decoded) == encode_state(state)


def test_a_state_written_after_every_event_encodes_as_one_written_once() -> None:
    """Buckets keep their encoding between writes; any change must drop it."""
    events = _mixed_events(_rng(92))
    written_often = EntityState()
    for event_id, event_time, raw in events:
        apply_event(written_often, MIXED_FS, event_id, event_time, raw)
        encode_state(written_often)
    written_once = _apply_all(MIXED_FS, events)

    assert encode_state(written_often) == encode_state(written_once) == _spelled_out(written_once)
    decoded = decode_state(encode_state(written_often))
    for event_id, event_time, raw in _mixed_events(_rng(93)):
        apply_event(decoded, MIXED_FS, event_id, event_time, raw)
        apply_event(written_once, MIXED_FS, event_id, event_time, raw)
        assert encode_state(decoded) == encode_state(written_once) == _spelled_out(written_once)


def _spelled_out(state: EntityState) -> bytes:
    """The stored format written field by field, with no kept encodings."""
    buckets = {
        source: {
            str(start): {
                "n": b.count,
                "k": b.numeric_count,
                "s": format(b.sum_fixed, "x"),
                "q": format(b.square_fixed, "x"),
                "lo": b.low,
                "hi": b.high,
                "last": list(b.last) if b.last else None,
                "d": sorted(b.distinct),
                "dx": b.distinct_overflow,
            }
            for start, b in by_start.items()
        }
        for source, by_start in state.buckets.items()
    }
    last = {k: list(v) for k, v in state.last.items()}
    document = {"newest": state.newest, "seen": state.seen, "last": last, "buckets": buckets}
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("raw", [None, b""])
def test_decoding_no_bytes_gives_an_empty_state(raw: bytes | None) -> None:
    state = decode_state(raw)
    assert state == EntityState()
    assert encode_state(state) == encode_state(EntityState())
    assert feature_vector(state, MIXED_FS, as_of=float(H))[TIME_SINCE_LAST] is None


# --- 10. pruning -----------------------------------------------------------------------


def test_state_stays_bounded_as_time_moves_past_the_horizon() -> None:
    lateness = 600
    fs = FeatureSet(
        aggregates=(
            Aggregate("amount", ("count", "sum"), tumbling(HOUR)),
            Aggregate("amount", ("count",), sliding(600, 60)),
        ),
        allowed_lateness_s=lateness,
    )
    assert fs.horizon_s == HOUR + lateness
    width = fs.bucket_widths["amount"]
    assert width == 60
    every = 30
    state = EntityState()
    sizes: list[int] = []
    for day in range(2):
        for i in range(86400 // every):
            t = float(H + day * 86400 + i * every)
            assert apply_event(state, fs, f"d{day}-{i}", t, {"amount": 1.0}) is Applied.NEW
        sizes.append(len(encode_state(state)))

    newest = state.newest
    assert newest is not None
    assert len(state.seen) <= lateness // every + 1
    assert all(t >= newest - lateness for t in state.seen.values())
    buckets = state.buckets["amount"]
    assert len(buckets) <= fs.horizon_s // width + 1
    assert all(start + width > newest - fs.horizon_s for start in buckets)
    assert sizes[1] <= sizes[0] * 1.05

    # What is left still answers the current windows correctly.
    vector = feature_vector(state, fs, as_of=newest)
    hour_start = math.floor(newest / HOUR) * HOUR
    assert vector["amount_count_1h"] == int((newest - hour_start) // every) + 1
    assert vector["amount_count_10m_every_1m"] == 600 // every
    # A redelivery of a forgotten id is refused rather than counted again.
    before = encode_state(state)
    assert apply_event(state, fs, "d0-0", float(H), {"amount": 1.0}) is Applied.TOO_LATE
    assert encode_state(state) == before


def test_the_ids_kept_are_those_within_the_lateness_whatever_the_arrival_order() -> None:
    lateness = 600
    fs = FeatureSet(
        aggregates=(Aggregate("amount", ("count",), tumbling(HOUR)),), allowed_lateness_s=lateness
    )
    rng = _rng(111)
    # Four hours of events, one every 7 s, each arriving up to 15 minutes late: some
    # land among the newest ids, some are refused as too late.
    # Ids in an order of their own: the store keeps them sorted by id, not by time.
    events = [(f"{rng.randrange(10**6):06d}-{i}", float(H + 7 * i)) for i in range(4 * HOUR // 7)]
    arrivals = sorted(events, key=lambda e: e[1] + rng.uniform(0, 900))
    state, applied, verdicts = EntityState(), dict[str, float](), Counter[str]()
    resumed: EntityState | None = None
    for n, (event_id, event_time) in enumerate(arrivals):
        behind = state.newest is not None and event_time < state.newest
        verdict = apply_event(state, fs, event_id, event_time, {"amount": 1.0})
        verdicts[f"{verdict.value}{', behind' if behind else ''}"] += 1
        if verdict is Applied.NEW:
            applied[event_id] = event_time
        assert state.newest is not None
        assert state.seen == {k: t for k, t in applied.items() if t >= state.newest - lateness}
        if n == len(arrivals) // 2:  # a state read back from the store folds on alike
            resumed = decode_state(encode_state(state))
        elif resumed is not None:
            assert apply_event(resumed, fs, event_id, event_time, {"amount": 1.0}) is verdict
            assert resumed.seen == state.seen
    assert verdicts["new, behind"] > 100, verdicts  # late ids put in their place
    assert verdicts["too_late, behind"] > 100, verdicts
    assert resumed is not None
    assert encode_state(resumed) == encode_state(state)


def test_each_source_keeps_its_buckets_only_as_long_as_its_own_windows_reach() -> None:
    lateness = 600
    amount = (  # sliding: as of any time, each reaches back (almost) its whole size
        Aggregate("amount", ("count", "sum", "mean", "min", "max", "std"), sliding(HOUR, 60)),
        Aggregate("amount", ("count",), sliding(600, 60)),
    )
    alone = FeatureSet(aggregates=amount, allowed_lateness_s=lateness)
    beside_a_day = FeatureSet(
        aggregates=(*amount, Aggregate("country", ("distinct",), tumbling(86400))),
        allowed_lateness_s=lateness,
    )
    assert beside_a_day.source_horizons == {"amount": HOUR + lateness, "country": 86400 + lateness}
    rng = _rng(101)
    events: list[Event] = [
        (f"e{i}", float(H + i * 45 - rng.randrange(lateness)), {"amount": float(i % 97)})
        for i in range(4 * 86400 // 45)  # four days, one in every 45 s, up to 10 min late
    ]
    states = {fs: EntityState() for fs in (alone, beside_a_day)}
    admitted: list[float] = []
    for event_id, event_time, raw in events:
        verdicts = {apply_event(st, fs, event_id, event_time, raw) for fs, st in states.items()}
        assert len(verdicts) == 1, event_id  # both admit or refuse alike
        if verdicts == {Applied.NEW}:
            admitted.append(event_time)
    newest = states[alone].newest
    assert newest is not None
    assert states[beside_a_day].newest == newest
    # A day's window of another source keeps no more of amount's buckets than its own do.
    assert states[beside_a_day].buckets["amount"] == states[alone].buckets["amount"]
    assert len(states[alone].buckets["amount"]) <= (HOUR + lateness) // 60 + 1
    for as_of in (newest - lateness, newest, newest + 300.0):
        with_country = feature_vector(states[beside_a_day], beside_a_day, as_of)
        assert {k: with_country[k] for k in feature_vector(states[alone], alone, as_of)} == (
            feature_vector(states[alone], alone, as_of)
        )
        # Nothing a window as of then reads was forgotten: its counts are every event's
        # whose one-minute bucket starts within the window.
        for aggregate in amount:
            start, name = aggregate.window.start(as_of), aggregate.op_names[0]
            expected = sum(1 for t in admitted if start <= math.floor(t / 60) * 60 <= as_of)
            assert with_country[name] == expected, (name, as_of)


def test_only_a_source_counted_distinct_keeps_its_distinct_values() -> None:
    amount = Aggregate("amount", ("count", "sum", "min", "max", "last"), tumbling(HOUR))
    countries = Aggregate("country", ("distinct",), tumbling(HOUR))
    lean = FeatureSet(aggregates=(amount, countries))
    full = FeatureSet(
        aggregates=(amount, countries, Aggregate("amount", ("distinct",), tumbling(HOUR)))
    )
    assert lean.distinct_sources == {"country"}
    assert full.distinct_sources == {"amount", "country"}
    events = _mixed_events(_rng(121))
    lean_state, full_state = _apply_all(lean, events), _apply_all(full, events)

    assert all(not b.distinct for b in lean_state.buckets["amount"].values())
    assert all(b.distinct for b in full_state.buckets["amount"].values())
    assert lean_state.buckets["country"] == full_state.buckets["country"]
    for as_of in (H - 1.0, H + 1000.0):
        lean_vector = feature_vector(lean_state, lean, as_of)
        assert lean_vector == {
            k: v for k, v in feature_vector(full_state, full, as_of).items() if k in lean_vector
        }
    assert lean.state_fingerprint() != full.state_fingerprint()


def test_the_state_fingerprint_names_a_source_kept_shorter_than_the_longest_window() -> None:
    def definitions(amount_window: int) -> FeatureSet:
        return FeatureSet(
            aggregates=(
                Aggregate("amount", ("sum",), tumbling(HOUR)),
                Aggregate("amount", ("count",), tumbling(amount_window)),
                Aggregate("country", ("distinct",), tumbling(86400)),
            )
        )

    # Same bucket widths and the same longest window; amount's buckets kept 2h or a day.
    short, long = definitions(HOUR), definitions(86400)
    assert short.bucket_widths == long.bucket_widths
    assert short.horizon_s == long.horizon_s
    assert short.state_fingerprint() != long.state_fingerprint()


# --- 11. definitions -------------------------------------------------------------------


@pytest.mark.parametrize(("size", "step"), [(600, 70), (3600, 7 * 60), (60, 0), (60, -60)])
def test_a_window_whose_step_does_not_divide_its_size_is_rejected(size: int, step: int) -> None:
    with pytest.raises(ValueError, match="must divide"):
        Window(size, step)


def test_valid_windows_are_named_by_size_and_step() -> None:
    assert tumbling(HOUR).name == "1h"
    assert tumbling(86400).name == "1d"
    assert sliding(600, 60).name == "10m_every_1m"
    assert sliding(90, 30).name == "90s_every_30s"


def test_an_aggregate_with_an_unknown_op_is_rejected() -> None:
    with pytest.raises(ValueError, match="median"):
        Aggregate("amount", ("sum", "median"), tumbling(HOUR))


def test_fingerprint_is_equal_for_equal_definitions_and_changes_with_a_window() -> None:
    def definitions(window: Window) -> FeatureSet:
        return FeatureSet(
            aggregates=(
                Aggregate("amount", ("count", "sum", "mean"), window),
                Aggregate("country", ("distinct",), tumbling(86400)),
            ),
            ratios=(Ratio("avg", "amount_sum_1h", "amount_count_1h"),),
            passthrough=("amount",),
        )

    base = definitions(tumbling(HOUR))
    assert base.fingerprint() == definitions(tumbling(HOUR)).fingerprint()
    assert base.fingerprint() == definitions(Window(HOUR, HOUR)).fingerprint()
    assert base.fingerprint() != definitions(tumbling(1800)).fingerprint()
    assert base.fingerprint() != definitions(sliding(HOUR, 600)).fingerprint()
    longer_lateness = FeatureSet(
        aggregates=base.aggregates,
        ratios=base.ratios,
        passthrough=base.passthrough,
        allowed_lateness_s=7200,
    )
    assert base.fingerprint() != longer_lateness.fingerprint()


# --- 12. distinct overflow -------------------------------------------------------------


def test_distinct_overflow_is_capped_and_still_order_free() -> None:
    rng = _rng(121)
    fs = FeatureSet(aggregates=(Aggregate("sku", ("count", "distinct"), tumbling(HOUR)),))
    true_distinct = DISTINCT_CAP + 40
    skus = [f"sku-{i:03d}" for i in range(true_distinct)]
    skus += [rng.choice(skus) for _ in range(60)]  # repeats, some of dropped values
    rng.shuffle(skus)
    events: list[Event] = [
        (f"e{i:03d}", H + rng.uniform(0, HOUR - 1), {"sku": sku}) for i, sku in enumerate(skus)
    ]

    state = _apply_all(fs, sorted(events, key=lambda e: e[1]))
    expected = encode_state(state)
    vector = feature_vector(state, fs, as_of=H + HOUR - 1)
    assert vector["sku_count_1h"] == len(events)
    assert vector["sku_distinct_1h"] == DISTINCT_CAP
    assert vector["sku_distinct_1h"] <= true_distinct

    for seed in SHUFFLE_SEEDS:
        assert encode_state(_apply_all(fs, _shuffled(events, seed))) == expected, seed


# --- 12. bounds on what one entity keeps -----------------------------------------------


def test_an_entity_keeps_at_most_the_cap_of_feature_names_whatever_the_order() -> None:
    fs = FeatureSet()
    names = [f"f{i:05d}" for i in range(MAX_ENTITY_FEATURES + 300)]
    events: list[Event] = [
        (f"e{i}", H + i, {name: 1.0 for name in names[k : k + 400]})
        for i, k in enumerate(range(0, len(names), 400))
    ]
    state = _apply_all(fs, events)
    assert len(state.last) == MAX_ENTITY_FEATURES
    assert sorted(state.last) == names[:MAX_ENTITY_FEATURES]
    expected = encode_state(state)
    for seed in SHUFFLE_SEEDS:
        assert encode_state(_apply_all(fs, _shuffled(events, seed))) == expected, seed


def test_only_passthrough_features_are_kept_when_passthrough_is_declared() -> None:
    fs = FeatureSet(passthrough=("amount",))
    state = EntityState()
    apply_event(state, fs, "e1", H, {"amount": 3.0, "noise": "x" * 4000})
    assert set(state.last) == {"amount"}


def test_a_last_value_older_than_its_time_to_live_is_forgotten() -> None:
    fs = FeatureSet(allowed_lateness_s=60, last_value_ttl_s=HOUR)
    state = EntityState()
    apply_event(state, fs, "e1", H, {"country": "NL", "amount": 1.0})
    apply_event(state, fs, "e2", H + HOUR - 1, {"amount": 2.0})
    assert feature_vector(state, fs, as_of=H + HOUR)["country"] == "NL"
    apply_event(state, fs, "e3", H + HOUR + 1, {"amount": 3.0})
    vector = feature_vector(state, fs, as_of=H + HOUR + 1)
    assert "country" not in vector
    assert vector["amount"] == 3.0


def test_a_time_to_live_shorter_than_the_lateness_is_rejected() -> None:
    with pytest.raises(ValueError, match="last_value_ttl_s"):
        FeatureSet(allowed_lateness_s=HOUR, last_value_ttl_s=60)


def test_a_value_outside_a_features_allow_list_is_served_as_other() -> None:
    fs = FeatureSet(categories=(Categories("country", ("NL", "DE")),))
    state = EntityState()
    apply_event(state, fs, "e1", H, {"country": "NL", "amount": 1.0})
    assert feature_vector(state, fs, as_of=H)["country"] == "NL"
    assert feature_vector(state, fs, as_of=H, raw={"country": "FR"})["country"] == OTHER_CATEGORY
    assert feature_vector(state, fs, as_of=H, raw={"country": None})["country"] is None
