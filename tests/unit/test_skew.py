"""The training-serving skew check's pure logic (eddy.streams.features.skew), without a broker.

The served side is built the way the predictor builds it (events applied with
``apply_event``, read with ``feature_vector`` and stored as JSON); the check replays
the same events as log records through the worker's fold. Every expectation below is
computed here from first principles, never copied from the module's output.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import (
    TIME_SINCE_LAST,
    EntityState,
    FeatureSet,
    FeatureValue,
    Ratio,
    apply_event,
    feature_vector,
)
from eddy.streams.features.definitions import FEATURES
from eddy.streams.features.skew import (
    ACTION,
    EXAMPLES_PER_FEATURE,
    FeatureDiff,
    History,
    LoggedEvent,
    RequestCheck,
    Served,
    candidates,
    check_request,
    compare,
    history_start,
    relative_difference,
    skew_alert,
    summarize,
)
from eddy.streams.messages.contracts import DriftKind

H = 472_223 * 3600  # an hour boundary: 2023-11-14T23:00:00Z
AT = H + 1800.0  # serving time, mid-hour
SKEW = timedelta(minutes=5)
TOLERANCE = 1e-6
ENTITY = "u1"
# (event id, event time relative to AT, amount, country)
EVENTS = [
    ("e1", -1500.0, 10.0, "DE"),
    ("e2", -900.0, 40.0, "FR"),
    ("e3", -300.0, 25.0, "DE"),
    ("e4", -120.0, 70.0, "IT"),
]
BROKEN_RATIO = dataclasses.replace(
    FEATURES, ratios=(Ratio("amount_vs_hourly_mean", "amount", "amount_max_1h"),)
)


def logged(
    event_id: str,
    event_time: float,
    features: dict[str, FeatureValue],
    *,
    offset: int,
    appended_at: float | None = None,
    entity: str = ENTITY,
    key: str | None = None,
) -> LoggedEvent:
    value = orjson.dumps(
        {
            "event_id": event_id,
            "entity_id": entity,
            "event_time": datetime.fromtimestamp(event_time, UTC).isoformat(),
            "features": features,
        }
    )
    record = RawRecord("eddy.events", 0, offset, (key or entity).encode(), value, ())
    return LoggedEvent(record, event_time + 1.0 if appended_at is None else appended_at)


def the_log() -> list[LoggedEvent]:
    return [
        logged(i, AT + dt, {"amount": amount, "country": country}, offset=n)
        for n, (i, dt, amount, country) in enumerate(EVENTS)
    ]


def served_by(
    fs: FeatureSet,
    events: list[LoggedEvent],
    raw: dict[str, FeatureValue] | None = None,
    request_id: str = "r1",
    version: str | None = "3",
) -> Served:
    """What a predictor serving ``fs`` over the online state of ``events`` records."""
    state = EntityState()
    for event in events:
        body = orjson.loads(event.record.value or b"")
        time_ = datetime.fromisoformat(body["event_time"]).timestamp()
        apply_event(state, fs, body["event_id"], time_, body["features"])
    vector = feature_vector(state, fs, AT, raw=raw)
    return Served(request_id, ENTITY, AT, orjson.loads(orjson.dumps(vector)), raw or {}, version)


def check(served: Served, history: History, fs: FeatureSet = FEATURES) -> RequestCheck:
    return check_request(served, history, fs, TOLERANCE, SKEW)


def names(result: RequestCheck) -> set[str]:
    return {d.feature for d in result.diffs}


# --- comparing two values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "recomputed", "expected"),
    [
        (100.0, 100.0, 0.0),
        (3, 3.0, 0.0),
        (0, 0.0, 0.0),
        (-2.0, 2.0, 2.0),
        (0.0, 1e-300, 1.0),
        (50.0, 40.0, 0.2),
        ("DE", "DE", 0.0),
        ("DE", "FR", math.inf),
        (None, None, 0.0),
        (None, 0.0, math.inf),
        ("1", 1, math.inf),
        (True, True, 0.0),
        (True, 1, math.inf),
        (False, 0.0, math.inf),
    ],
)
def test_relative_difference(served: Any, recomputed: Any, expected: float) -> None:
    assert relative_difference(served, recomputed) == pytest.approx(expected)


def test_a_difference_equal_to_the_tolerance_is_not_skew_and_just_above_is() -> None:
    recomputed = candidates(History(), FEATURES, ENTITY, AT, {"amount": 1.0}, SKEW)[0]
    tolerance = 0.25  # exact in binary, so the boundary is exact too
    at_boundary = Served("r", ENTITY, AT, {**recomputed.features, "amount": 0.75}, {}, None)
    above = Served("r", ENTITY, AT, {**recomputed.features, "amount": 0.7499}, {}, None)
    assert compare(at_boundary, recomputed, FEATURES, tolerance)[0] == []
    (diff,) = compare(above, recomputed, FEATURES, tolerance)[0]
    assert (diff.feature, diff.served, diff.recomputed) == ("amount", 0.7499, 1.0)
    assert diff.relative == pytest.approx(0.2501)


# --- judging one request -----------------------------------------------------------------


def test_features_served_through_the_same_definitions_show_no_skew() -> None:
    log = the_log()
    own: dict[str, FeatureValue] = {"amount": 55.5, "country": "ES", "channel": "web"}
    for raw in (None, own):
        result = check(served_by(FEATURES, log, raw), History(tuple(log), len(log)))
        assert result.diffs == ()
        assert result.compared == len(served_by(FEATURES, log, raw).features)
        assert (result.applied, result.in_flight, result.unverified) == (len(log), 0, ())


def test_a_broken_serving_definition_is_named_with_its_values() -> None:
    log = the_log()
    served = served_by(BROKEN_RATIO, log)
    result = check(served, History(tuple(log), len(log)))
    (diff,) = result.diffs
    amounts = [amount for _, _, amount, _ in EVENTS]
    assert diff.feature == "amount_vs_hourly_mean"
    assert diff.served == pytest.approx(amounts[-1] / max(amounts))
    assert diff.recomputed == pytest.approx(amounts[-1] / (sum(amounts) / len(amounts)))


def test_a_served_vector_missing_a_feature_is_skew_on_that_feature() -> None:
    log = the_log()
    served = served_by(dataclasses.replace(FEATURES, passthrough=("amount",)), log)
    result = check(served, History(tuple(log), len(log)))
    assert [(d.feature, d.served, d.recomputed) for d in result.diffs] == [("country", None, "IT")]


def test_an_event_still_in_flight_at_serving_time_is_not_skew() -> None:
    log = the_log()
    served = served_by(FEATURES, log[:-1])  # the worker had not applied e4 yet
    result = check(served, History(tuple(log), settled=len(log) - 1))
    assert result.diffs == ()
    assert (result.applied, result.in_flight) == (len(log) - 1, 1)


def test_a_settled_event_missing_from_serving_is_skew() -> None:
    log = the_log()
    served = served_by(FEATURES, log[:-1])
    result = check(served, History(tuple(log), settled=len(log)))
    assert "amount_count_1h" in names(result)
    assert result.in_flight == 0


def test_without_a_matching_prefix_the_closest_one_is_reported() -> None:
    log = the_log()
    served = served_by(BROKEN_RATIO, log[:-1])  # broken, and e4 was still in flight
    result = check(served, History(tuple(log), settled=0))
    assert names(result) == {"amount_vs_hourly_mean"}
    assert result.applied == len(log) - 1


def test_candidates_run_from_every_event_applied_down_to_the_settled_ones() -> None:
    log = the_log()
    found = candidates(History(tuple(log), settled=2), FEATURES, ENTITY, AT, {}, SKEW)
    assert [c.applied for c in found] == [4, 3, 2]
    assert [c.features["amount_count_1h"] for c in found] == [4, 3, 2]


def test_duplicates_rejected_records_and_too_late_events_are_replayed_as_the_worker_does() -> None:
    log = the_log()
    noise = [
        logged("e2", AT - 900.0, {"amount": 40.0, "country": "FR"}, offset=10),  # duplicate
        logged("x1", AT - 60.0, {"amount": 1e6}, offset=11, key="someone-else"),  # key mismatch
        logged("x2", AT - 30.0, {"amount": 1e6}, offset=12, appended_at=AT - 30.0 - 3600.0),
        logged("x3", AT - 3 * 3600.0, {"amount": 1e6, "country": "ZZ"}, offset=13),  # too late
    ]
    served = served_by(FEATURES, log)
    result = check(served, History(tuple(log + noise), len(log) + len(noise)))
    assert result.diffs == ()


def test_features_older_events_may_hold_are_unverified_never_skew() -> None:
    # Only e4 is replayed; the served state also holds "channel" from an older event.
    old = logged("e0", AT - 20 * 3600.0, {"amount": 5.0, "channel": "app"}, offset=0)
    recent = logged("e4", AT - 120.0, {"amount": 70.0}, offset=1)
    served = served_by(FEATURES, [old, recent])
    result = check(served, History((recent,), 1))
    assert result.diffs == ()
    assert result.unverified == ("channel",)


def test_with_no_replayed_event_time_since_last_and_ratios_over_old_raws_are_unverified() -> None:
    old = logged("e0", AT - 20 * 3600.0, {"amount": 5.0}, offset=0)
    served = served_by(FEATURES, [old])
    result = check(served, History())
    assert result.diffs == ()
    assert set(result.unverified) == {"amount", TIME_SINCE_LAST, "amount_vs_hourly_mean"}
    assert result.compared == len(served.features) - 3


def test_an_extra_served_feature_that_cannot_pass_through_is_skew() -> None:
    fs = dataclasses.replace(FEATURES, passthrough=("amount",))
    log = the_log()
    served = served_by(fs, log)
    tampered = dataclasses.replace(served, features={**served.features, "country": "DE"})
    result = check(tampered, History(tuple(log), len(log)), fs)
    assert [(d.feature, d.served, d.recomputed) for d in result.diffs] == [("country", "DE", None)]


def test_history_starts_a_horizon_and_the_event_time_skew_before_serving() -> None:
    assert history_start(AT, FEATURES, 300) == AT - FEATURES.horizon_s - 300


# --- the report and the alert ------------------------------------------------------------


def diff(request_id: str, feature: str, relative: float) -> FeatureDiff:
    return FeatureDiff(request_id, feature, 1.0, 1.0 + relative, relative)


def judged(request_id: str, *diffs: FeatureDiff, version: str | None = "3") -> RequestCheck:
    served = Served(request_id, ENTITY, AT, {}, {}, version)
    return RequestCheck(served, diffs, 10, (), 4, 0)


def test_features_are_ranked_by_how_often_then_how_much_they_differ() -> None:
    checks = [
        judged("r1", diff("r1", "a", 0.1), diff("r1", "b", 5.0)),
        judged("r2", diff("r2", "a", 0.3), FeatureDiff("r2", "c", "x", None, math.inf)),
        judged("r3", diff("r3", "a", 0.2), diff("r3", "d", 5.0)),
        judged("r4"),
    ]
    report = summarize(checks, {"no_snapshot": 2})
    assert [f.feature for f in report.features] == ["a", "c", "b", "d"]
    top = report.features[0]
    assert (top.requests, top.rate, top.largest) == (3, 0.75, 0.3)
    assert [e.request_id for e in top.examples] == ["r2", "r3", "r1"]
    assert (report.checked, report.skewed_requests, report.compared) == (4, 3, 40)
    assert report.skipped == {"no_snapshot": 2}
    assert report.features[1].as_dict()["largest_relative_difference"] is None


def test_examples_are_capped_per_feature_largest_first() -> None:
    checks = [judged(f"r{i}", diff(f"r{i}", "a", i / 10)) for i in range(EXAMPLES_PER_FEATURE + 3)]
    (feature,) = summarize(checks).features
    assert [e.relative for e in feature.examples] == sorted(
        (i / 10 for i in range(EXAMPLES_PER_FEATURE + 3)), reverse=True
    )[:EXAMPLES_PER_FEATURE]


def test_no_skew_gives_no_alert() -> None:
    report = summarize([judged("r1"), judged("r2")])
    assert not report.skewed
    assert skew_alert(report, model="m", tolerance=TOLERANCE, detected_at=datetime.now(UTC)) is None


def test_the_alert_names_the_skewed_features_ranked_with_a_stable_id() -> None:
    checks = [
        judged("r1", diff("r1", "a", 0.5), version="4"),
        judged("r2", diff("r2", "a", 0.5), FeatureDiff("r2", "c", "x", None, math.inf)),
        judged("r3", diff("r3", "a", 0.5), version="4"),
    ]
    when = datetime(2026, 1, 1, tzinfo=UTC)
    alert = skew_alert(summarize(checks), model="m", tolerance=TOLERANCE, detected_at=when)
    assert alert is not None
    assert alert.kind is DriftKind.SKEW
    assert alert.action == ACTION != "retrain"
    assert [(e.feature, e.statistic) for e in alert.evidence] == [("a", 1.0), ("c", 1 / 3)]
    assert (alert.feature, alert.statistic) == ("a", 1.0)
    assert alert.model_version == "4"
    assert alert.metrics["requests_skewed"] == 3
    assert alert.metrics["largest_relative_difference.a"] == 0.5
    assert "largest_relative_difference.c" not in alert.metrics  # inf is not a metric
    assert {(e.request_id, e.feature) for e in alert.examples} == {
        (d.request_id, d.feature) for f in summarize(checks).features for d in f.examples
    }
    assert {e.feature for e in alert.examples} == {"a", "c"}
    again = skew_alert(summarize(checks[::-1]), model="m", tolerance=TOLERANCE, detected_at=when)
    other = skew_alert(summarize(checks[:2]), model="m", tolerance=TOLERANCE, detected_at=when)
    assert again is not None
    assert other is not None
    assert again.alert_id == alert.alert_id != other.alert_id
    assert alert.alert_id.startswith("m:skew:")
