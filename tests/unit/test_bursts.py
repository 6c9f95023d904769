"""Which alerts fold into one retrain, and what a concept burst may learn from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eddy.services.training.bursts import (
    Chosen,
    choose_examples,
    decidable_size,
    examples_since,
    fold,
)
from eddy.streams.messages.contracts import (
    DriftAlert,
    DriftKind,
    DriftWindow,
    SourceOffset,
    TrainingExample,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def alert(n: int, kind: DriftKind, seen_s: float | None) -> DriftAlert:
    times = None if seen_s is None else (T0, T0 + timedelta(seconds=seen_s))
    return DriftAlert(
        alert_id=f"m:{kind.value}:{n}",
        model="m",
        kind=kind,
        detector="adwin",
        statistic=0.4,
        threshold=0.0,
        action="retrain",
        window=DriftWindow(times=times),
    )


def example(second: int) -> TrainingExample:
    return TrainingExample(
        example_id=f"e{second}",
        entity_id="u",
        event_time=T0 + timedelta(seconds=second),
        label=True,
        features={"a": 1.0},
        feature_set="fs",
        source=SourceOffset(topic="events", partition=0, offset=second),
    )


def test_only_a_concept_alert_bounds_what_the_retrain_learns_from() -> None:
    assert fold(None, alert(1, DriftKind.DATA, 30), 0.0, 5.0).since is None
    assert fold(None, alert(1, DriftKind.PREDICTION, 30), 0.0, 5.0).since is None
    assert fold(None, alert(1, DriftKind.CONCEPT, None), 0.0, 5.0).since is None
    assert fold(None, alert(1, DriftKind.CONCEPT, 30), 0.0, 5.0).since == T0 + timedelta(seconds=30)


def test_a_burst_keeps_its_due_time_and_the_latest_change() -> None:
    burst = fold(None, alert(1, DriftKind.CONCEPT, 40), 10.0, 5.0)
    burst = fold(burst, alert(2, DriftKind.DATA, 50), 12.0, 5.0)
    assert burst.since == T0 + timedelta(seconds=40), "a data alert does not move it"
    burst = fold(burst, alert(3, DriftKind.CONCEPT, 30), 13.0, 5.0)
    assert burst.since == T0 + timedelta(seconds=40), "an older change does not move it"
    burst = fold(burst, alert(4, DriftKind.CONCEPT, 45), 14.0, 5.0)
    assert burst.since == T0 + timedelta(seconds=45)
    assert burst.alert_ids == ("m:concept:1", "m:data:2", "m:concept:3", "m:concept:4")
    assert (burst.first_seen, burst.due) == (10.0, 15.0)


def test_a_concept_burst_waits_for_data_only_within_its_wait() -> None:
    burst = fold(None, alert(1, DriftKind.CONCEPT, 40), 10.0, 5.0)
    assert burst.waiting(now=69.0, wait_s=60.0)
    assert not burst.waiting(now=70.0, wait_s=60.0)
    assert not fold(None, alert(1, DriftKind.DATA, 40), 10.0, 5.0).waiting(11.0, 60.0)


def test_a_waiting_burst_backs_off_to_a_ceiling() -> None:
    burst = fold(None, alert(1, DriftKind.CONCEPT, 40), 10.0, 2.0)
    steps = []
    for _ in range(8):
        burst = burst.retry(now=100.0, debounce_s=2.0)
        steps.append(burst.due - 100.0)
    assert steps == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert fold(None, alert(1, DriftKind.CONCEPT, 40), 0.0, 0.0).retry(5.0, 0.0).due == 6.0


def test_examples_after_the_change_only() -> None:
    examples = [example(s) for s in range(10)]
    assert [e.example_id for e in examples_since(examples, T0 + timedelta(seconds=6))] == [
        "e7",
        "e8",
        "e9",
    ]
    assert examples_since(examples, None) == examples


def test_a_concept_retrain_learns_after_the_drift_waits_or_falls_back() -> None:
    window = [example(s) for s in range(100)]
    since = T0 + timedelta(seconds=49)  # 50 examples after it
    kept = ["e50", "e99"]

    def choose(waiting: bool, min_holdout: int) -> tuple[list[str], bool] | None:
        chosen = choose_examples(window, since, waiting, min_holdout, holdout=0.2)
        if chosen is None:
            return None
        return [chosen.examples[0].example_id, chosen.examples[-1].example_id], chosen.after_drift

    assert choose(waiting=True, min_holdout=10) == (kept, True), "50 fill a holdout of 10"
    assert choose(waiting=True, min_holdout=11) is None, "55 needed: wait"
    assert choose(waiting=False, min_holdout=11) == (kept, True), "wait over: 50 >= 22"
    assert choose(waiting=False, min_holdout=30) == (["e0", "e99"], False), "50 < 60: all"
    unbounded = choose_examples(window, None, waiting=True, min_holdout=30, holdout=0.2)
    assert unbounded == Chosen(window, after_drift=False)


def test_the_decidable_size_survives_the_splits_rounding() -> None:
    for min_holdout in range(1, 500):
        for holdout in (0.1, 0.15, 0.2, 0.3, 0.33):
            size = decidable_size(min_holdout, holdout)
            assert int(size * holdout) >= min_holdout
            assert int((size - 1) * holdout) < min_holdout
