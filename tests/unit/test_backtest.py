"""Backtests of retrain policies, without a broker: the timeline and the policy loop.

The history is River's STAGGER stream switching concept halfway (as in ``eddy demo``):
every other event carries its label, the others get theirs late on ``labels``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eddy.services.backtest.command import render
from eddy.services.backtest.replay import PolicyError, policies_from, replay
from eddy.services.backtest.timeline import Joined, LogRecord, Served, Timeline, build_timeline
from eddy.services.config.settings import Settings
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.contracts import Event, Label
from eddy.streams.messages.validation import encode
from tests.backtest_history import (
    COUNT,
    DRIFT_AT,
    KIND,
    LABEL_DELAY_S,
    NEVER,
    RETRAIN_ON_CONCEPT,
    STEP_S,
    deterministic,
    history,
    score_since,
)

PARTITIONS = 3
START = datetime(2026, 1, 1, tzinfo=UTC)
SKEW = timedelta(minutes=5)
HOUR_S = 3600.0


def as_records(
    rows: Sequence[tuple[Event, Label | None]],
) -> tuple[list[LogRecord], list[LogRecord]]:
    """The messages as a broker would hold them: partitioned by entity, stamped."""
    offsets = {("events", p): 0 for p in range(PARTITIONS)} | {
        ("labels", p): 0 for p in range(PARTITIONS)
    }
    events: list[LogRecord] = []
    labels: list[LogRecord] = []
    for event, late in rows:
        messages: list[tuple[str, Event | Label, datetime]] = [("events", event, event.event_time)]
        if late is not None:
            messages.append(("labels", late, late.event_time))
        for topic, message, at in messages:
            partition = int(event.entity_id[1:]) % PARTITIONS
            offset = offsets[(topic, partition)]
            offsets[(topic, partition)] += 1
            raw = RawRecord(topic, partition, offset, event.entity_id.encode(), encode(message), ())
            (events if topic == "events" else labels).append(LogRecord(raw, at.timestamp()))
    return events, labels


def timeline_of(
    events: Sequence[LogRecord], labels: Sequence[LogRecord], label_window_s: float = HOUR_S
) -> Timeline:
    return build_timeline(
        events, labels, FEATURES, None, max_future=SKEW, label_window_s=label_window_s
    )


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return timeline_of(*as_records(history(START)))


@pytest.fixture(scope="module")
def reports(timeline: Timeline) -> dict[str, dict[str, Any]]:
    policies = policies_from({"policy": [RETRAIN_ON_CONCEPT, NEVER]}, Settings(), FEATURES)
    return {p.name: replay(timeline, p) for p in policies}


DRIFT_TIME = START + timedelta(seconds=DRIFT_AT * STEP_S)


# --- the timeline -------------------------------------------------------------------


def test_every_event_is_served_once_and_every_label_joined(timeline: Timeline) -> None:
    served = [i for i in timeline.items if isinstance(i, Served)]
    joined = [i for i in timeline.items if isinstance(i, Joined)]
    assert len(served) == COUNT
    assert len({i.event_id for i in served}) == COUNT
    assert timeline.counts["events_labelled"] == COUNT // 2
    assert len(joined) == timeline.counts["labels_joined"] == COUNT // 2
    assert [i.at for i in timeline.items] == sorted(i.at for i in timeline.items)


def test_the_timeline_does_not_depend_on_the_order_records_were_read_in() -> None:
    events, labels = as_records(history(START, count=400, drift_at=200))
    shuffled_events, shuffled_labels = list(events), list(labels)
    random.Random(3).shuffle(shuffled_events)
    random.Random(4).shuffle(shuffled_labels)
    assert timeline_of(events, labels) == timeline_of(shuffled_events, shuffled_labels)


def test_a_late_label_joins_the_features_its_event_was_served_with() -> None:
    events, labels = as_records(history(START, count=200, drift_at=100))
    timeline = timeline_of(events, labels)
    served = {i.event_id: i for i in timeline.items if isinstance(i, Served)}
    for item in timeline.items:
        if isinstance(item, Joined):
            assert item.example.features == served[item.event_id].features
            assert item.example.event_time.timestamp() == served[item.event_id].at
            assert item.at == served[item.event_id].at + LABEL_DELAY_S
            assert item.position.topic == "labels"
    # Point in time: an entity's first event sees no earlier event of its own.
    first = served["e0"].features
    assert first["amount_count_1h"] == 0
    assert first["seconds_since_last_event"] is None


def test_labels_that_cannot_be_joined_are_counted_by_reason() -> None:
    events, labels = as_records(history(START, count=10, drift_at=5))
    at = START + timedelta(seconds=1)
    extra = [
        Label(request_id="r1", label=True, event_time=at),  # requests are not replayed
        Label(event_id="nowhere", label=True, event_time=at),  # outside the range
        Label(event_id="e0", label=True, event_time=at),  # e0 carried its own label
        Label(event_id="e1", label=False, event_time=at + timedelta(seconds=30)),  # 2nd
        Label(event_id="e3", label=True, event_time=at + timedelta(hours=2)),  # expired
    ]
    records = [
        LogRecord(RawRecord("labels", 9, i, None, encode(label), ()), label.event_time.timestamp())
        for i, label in enumerate(extra)
    ]
    records.append(LogRecord(RawRecord("labels", 9, 9, None, b"{not json", ()), at.timestamp()))
    timeline = timeline_of(
        events, [r for r in labels if b'"e3"' not in (r.raw.value or b"")] + records
    )
    counts = timeline.counts
    assert counts["labels_for_requests"] == 1
    assert counts["labels_unmatched"] == 1
    assert counts["labels_duplicate"] == 2
    assert counts["labels_expired"] == 1
    assert counts["labels_invalid"] == 1
    assert counts["labels_joined"] == 4  # e1, e5, e7, e9 (e3's only label expired)


def test_invalid_duplicate_and_late_events_are_not_served() -> None:
    events, _ = as_records(history(START, count=10, drift_at=5))
    again = events[0]
    late_event = Event(
        event_id="old",
        entity_id="u0",
        event_time=START - timedelta(hours=2),
        features={"size": "small"},
    )
    records = [
        *events,
        LogRecord(RawRecord("events", 0, 100, b"u0", again.raw.value, ()), again.timestamp),
        LogRecord(RawRecord("events", 0, 101, b"u0", encode(late_event), ()), again.timestamp),
        LogRecord(RawRecord("events", 0, 102, b"u0", b"[]", ()), again.timestamp),
    ]
    timeline = timeline_of(records, [])
    served = [i.event_id for i in timeline.items if isinstance(i, Served)]
    assert sorted(served) == sorted(f"e{i}" for i in range(10))
    assert timeline.counts["events_duplicate"] == 1
    assert timeline.counts["events_too_late"] == 1
    assert timeline.counts["events_invalid"] == 1


# --- policies -----------------------------------------------------------------------


def test_what_a_policy_leaves_out_is_the_deployments_setting() -> None:
    settings = Settings(
        learner_kind="softmax",
        learner_detector="ddm",
        retrain_window=777,
        retrain_margin=0.2,
        retrain_drift_wait_s=60.0,
        drift_cooldown=321,
        drift_thresholds="psi=0.4",
    )
    [policy] = policies_from(
        {
            "policy": [
                {
                    "name": "p",
                    "learner": {"drift": {"numeric_tests": ["ks"], "thresholds": {"ks": 0.3}}},
                }
            ]
        },
        settings,
        FEATURES,
    )
    assert policy.learner.kind == "softmax"
    assert policy.learner.detector == "ddm"
    assert policy.learner.model == settings.model_name
    assert policy.learner.drift.numeric_tests == ("ks",)
    assert policy.learner.drift.cooldown == 321, "EDDY_DRIFT_* under the policy's own keys"
    assert policy.learner.drift.thresholds["psi"] == 0.4, "the deployment's, merged"
    assert policy.learner.drift.thresholds["ks"] == 0.3
    assert policy.retrain.window == 777
    assert policy.retrain.drift_wait_s == 60.0
    assert policy.retrain.margin == 0.2
    assert policy.retrain.gate.metric == settings.retrain_metric


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({"policy": []}, "non-empty"),
        ({"policy": [{"name": "a"}], "extra": 1}, "nothing else"),
        ({"policy": [{"learner": {}}]}, "name"),
        ({"policy": [{"name": "a"}, {"name": "a"}]}, "distinct"),
        ({"policy": [{"name": "a", "retrian": {}}]}, "retrian"),
        ({"policy": [{"name": "a", "learner": {"model": "x"}}]}, "model"),
        ({"policy": [{"name": "a", "learner": {"detector": "nope"}}]}, "nope"),
        ({"policy": [{"name": "a", "learner": {"drift": {"windw": 5}}}]}, "windw"),
        ({"policy": [{"name": "a", "learner": {"drift": {"min_samples": 0}}}]}, "min_samples"),
        ({"policy": [{"name": "a", "retrain": {"estimator": "svm"}}]}, "svm"),
        ({"policy": [{"name": "a", "retrain": {"holdout": 1.5}}]}, "holdout"),
        ({"policy": [{"name": "a", "retrain": {"on": ["weather"]}}]}, "on"),
        ({"policy": [{"name": "a", "learner": {"kind": KIND, "batch": 8}}]}, "one example"),
    ],
)
def test_a_bad_policy_is_refused_with_its_reason(data: dict[str, Any], complaint: str) -> None:
    with pytest.raises(PolicyError, match=complaint):
        policies_from(data, Settings(), FEATURES)


# --- the loop -----------------------------------------------------------------------


def test_two_backtests_of_the_same_range_and_policy_give_identical_results(
    reports: dict[str, dict[str, Any]],
) -> None:
    [policy] = policies_from({"policy": [RETRAIN_ON_CONCEPT]}, Settings(), FEATURES)
    again = replay(timeline_of(*as_records(history(START))), policy)
    assert deterministic(again) == deterministic(reports[policy.name])
    assert again["retrains"], "the comparison is only worth something with a retrain in it"


MAX_CHANGE_ERROR = 64  # examples between the real drift and the estimated change point


def test_retraining_on_concept_alerts_recovers_after_the_drift_where_never_does_not(
    reports: dict[str, dict[str, Any]],
) -> None:
    retrain, never = reports["retrain-on-concept"], reports["never-retrain"]

    # Same learner, same data: the same alerts on the online and feature streams; only
    # what follows them differs (the served stream watches whichever champion served).
    def unserved(report: dict[str, Any]) -> list[dict[str, Any]]:
        return [a for a in report["alerts"] if a["stream"] != "served"]

    assert unserved(retrain) == [
        a | {"triggers_retrain": a["kind"] == "concept"} for a in unserved(never)
    ]
    assert retrain["alerts_by_kind"]["concept"] >= 1
    assert [a["triggers_retrain"] for a in never["alerts"]] == [False] * len(never["alerts"])
    promoted = [r for r in retrain["retrains"] if r["action"] == "promote"]
    assert promoted
    assert any(datetime.fromisoformat(r["at"]) > DRIFT_TIME for r in promoted)
    recovering = next(r for r in promoted if datetime.fromisoformat(r["at"]) > DRIFT_TIME)
    # It learned from where the detector placed the change (adwin's kept window, refined
    # by CUSUM within it): near the real drift, on either side.
    change = datetime.fromisoformat(recovering["after_drift_seen"])
    assert abs(change - DRIFT_TIME) < timedelta(seconds=MAX_CHANGE_ERROR * STEP_S)
    assert retrain["champions"][-1]["version"].startswith("default@backtest-")
    assert never["retrains"] == []
    assert [c["version"] for c in never["champions"]] == ["default@online"]
    # Before the drift both serve alike; after it the retrained champion is far better.
    before = START + timedelta(seconds=(DRIFT_AT // 2) * STEP_S)
    assert score_since(retrain, DRIFT_TIME) > score_since(never, DRIFT_TIME) + 0.2
    assert (
        abs(retrain["accuracy_over_time"][0]["value"] - never["accuracy_over_time"][0]["value"])
        < 0.05
    )
    assert score_since(retrain, before) > score_since(never, before)
    # The work each cost, counted deterministically.
    promoted = [r for r in retrain["retrains"] if r["action"] == "promote"]
    assert promoted, "the drift's retrain serves"
    # One fit per retrain, and one more per promotion: refitted on its holdout too.
    assert retrain["work"]["models_fitted"] == len(retrain["retrains"]) + len(promoted)
    assert retrain["work"]["rows_fitted"] > 0
    assert never["work"] | {"examples_learned": 0} == {
        "examples_learned": 0,
        "predictions_served": COUNT,
        "models_fitted": 0,
        "rows_fitted": 0,
        "rows_evaluated": 0,
    }
    assert never["work"]["examples_learned"] == COUNT
    assert retrain["served"] == never["served"] == retrain["scored"] == COUNT


def test_detectors_differ_in_what_they_flag(timeline: Timeline) -> None:
    policies = policies_from(
        {
            "policy": [
                {"name": detector, "learner": {"kind": KIND, "detector": detector}}
                for detector in ("adwin", "page_hinkley")
            ]
        },
        Settings(retrain_window=200, retrain_min_holdout=30),
        FEATURES,
    )
    concept = {
        p.name: [a for a in replay(timeline, p)["alerts"] if a["kind"] == "concept"]
        for p in policies
    }
    assert {a["detector"] for a in concept["adwin"]} == {"adwin"}
    assert {a["detector"] for a in concept["page_hinkley"]} == {"page_hinkley"}
    for alerts in concept.values():  # each sees the switch, soon after it happens
        after = [a for a in alerts if datetime.fromisoformat(a["at"]) >= DRIFT_TIME]
        assert after
        assert datetime.fromisoformat(after[0]["at"]) < DRIFT_TIME + timedelta(seconds=60)
    assert [a["position"] for a in concept["adwin"]] != [
        a["position"] for a in concept["page_hinkley"]
    ]


def test_a_retrain_without_enough_examples_is_skipped_and_the_champion_stays(
    timeline: Timeline,
) -> None:
    [policy] = policies_from(
        {
            "policy": [
                RETRAIN_ON_CONCEPT
                | {"retrain": RETRAIN_ON_CONCEPT["retrain"] | {"min_holdout": 150}}
            ]
        },
        Settings(),
        FEATURES,
    )
    report = replay(timeline, policy)
    assert report["retrains"]
    assert {r["action"] for r in report["retrains"]} == {"skipped"}
    assert "only 200 examples in the window; need at least 300" in report["retrains"][0]["reason"]
    assert [c["version"] for c in report["champions"]] == ["default@online"]
    assert report["work"]["models_fitted"] == 0


def test_alerts_of_kinds_the_policy_ignores_trigger_nothing(timeline: Timeline) -> None:
    [policy] = policies_from(
        {
            "policy": [
                RETRAIN_ON_CONCEPT | {"retrain": RETRAIN_ON_CONCEPT["retrain"] | {"on": ["data"]}}
            ]
        },
        Settings(),
        FEATURES,
    )
    report = replay(timeline, policy)
    assert report["alerts_by_kind"].get("concept", 0) >= 1
    assert report["alerts_by_kind"].get("data", 0) == 0
    assert report["retrains"] == []


def test_alerts_within_the_debounce_make_one_retrain_even_after_the_range(
    timeline: Timeline,
) -> None:
    retrain = RETRAIN_ON_CONCEPT["retrain"] | {
        "on": ["concept", "prediction"],
        "debounce_s": HOUR_S,
    }
    [policy] = policies_from(
        {"policy": [RETRAIN_ON_CONCEPT | {"retrain": retrain}]}, Settings(), FEATURES
    )
    report = replay(timeline, policy)
    alerts = [a for a in report["alerts"] if a["triggers_retrain"]]
    assert len(alerts) >= 2
    [entry] = report["retrains"]
    assert entry["trigger"] == [a["alert_id"] for a in alerts]
    due = datetime.fromisoformat(alerts[0]["at"]) + timedelta(seconds=HOUR_S)
    assert datetime.fromisoformat(entry["at"]) == due


def test_a_mini_batch_policy_learns_every_full_batch(timeline: Timeline) -> None:
    batch = 7
    [policy] = policies_from(
        {"policy": [{"name": "mini", "learner": {"kind": "logistic", "batch": batch}}]},
        Settings(),
        FEATURES,
    )
    report = replay(timeline, policy)
    assert report["online_metrics"]["examples"] == COUNT - COUNT % batch
    assert report["work"]["examples_learned"] == COUNT
    assert report["scored"] == COUNT


def test_the_table_shows_each_policy_and_where_a_retrained_model_took_over(
    reports: dict[str, dict[str, Any]],
) -> None:
    text = render({"policies": [reports["retrain-on-concept"], reports["never-retrain"]]})
    lines = text.splitlines()
    assert lines[1].startswith("retrain-on-concept")
    assert lines[2].startswith("never-retrain")
    over_time = lines[lines.index("accuracy of served answers by event time") + 2 :]
    assert len(over_time) == len(reports["never-retrain"]["accuracy_over_time"])
    assert any("*" in line for line in over_time)
