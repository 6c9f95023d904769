"""The benchmark's contract floor computes Eddy's features, or it bounds nothing.

``scripts/bench_floor.py`` claims a rate no implementation of the feature contract can
beat from Python; that holds only while its vectors are Eddy's own. The benchmark checks
them on every run (``check_vectors``); these tests check that the check itself holds on
the benchmark's stream and on a stream with event-time ties, and that it catches a floor
that computes something else.
"""

from __future__ import annotations

import doctest
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from eddy.streams.dead_letters.letter import RawRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_features
import bench_floor


def records(events: list[tuple[bytes, bytes]]) -> list[RawRecord]:
    return [RawRecord("events", 0, i, key, value, ()) for i, (key, value) in enumerate(events)]


def test_the_floor_computes_eddys_vectors_on_the_benchmark_stream() -> None:
    bench_floor.check_vectors(records(bench_features.event_records(6_000)))


def test_ties_of_event_time_go_to_the_greater_event_id_as_in_eddy() -> None:
    at = "2026-01-01T00:00:00Z"
    events = [
        {"event_id": event_id, "entity_id": "u1", "event_time": at, "features": features}
        for event_id, features in (
            ("b", {"amount": 1.0, "country": "NL"}),
            ("a", {"amount": 2.0, "country": "DE"}),
            ("c", {"amount": 3.0, "country": "NL"}),
        )
    ]
    bench_floor.check_vectors(records([(b"u1", orjson.dumps(e)) for e in events]))


def hours_of_events(seed: int = 3) -> list[RawRecord]:
    """Three entities' events in time order over most of a day, gaps of a second to a
    quarter of an hour: hours and minutes roll over, windows slide, countries change."""
    rng = random.Random(seed)
    at = datetime(2026, 3, 1, 1, tzinfo=UTC).timestamp()
    events = []
    for i in range(1_500):
        at += rng.choice([1, 7, 45, 61, 300, 899])
        entity = f"u{rng.randrange(3)}"
        event = {
            "event_id": f"e{i}",
            "entity_id": entity,
            "event_time": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
            "features": {"amount": rng.randrange(1, 10_000) / 10, "country": rng.choice("ABC")},
        }
        if rng.random() < 0.2:
            event["label"] = rng.random() < 0.5
        events.append((entity.encode(), orjson.dumps(event)))
    return records(events)


def test_the_floor_computes_eddys_vectors_over_hours_of_events() -> None:
    bench_floor.check_vectors(hours_of_events())


@pytest.mark.parametrize("minutes", [1, 9, 20])
def test_a_floor_with_another_window_is_refused(
    monkeypatch: pytest.MonkeyPatch, minutes: int
) -> None:
    monkeypatch.setattr(bench_floor, "RECENT_MINUTES", minutes)
    with pytest.raises(RuntimeError, match="floor vectors differ"):
        bench_floor.check_vectors(hours_of_events())


def test_a_floor_that_routes_labelled_events_elsewhere_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = bench_floor.fold_batch

    def as_unlabelled(events: list[tuple], states: dict) -> bench_floor.FloorBatch:
        return real([(*e[:3], None, *e[4:]) for e in events], states)

    monkeypatch.setattr(bench_floor, "fold_batch", as_unlabelled)
    with pytest.raises(RuntimeError, match="routed"):
        bench_floor.check_vectors(hours_of_events())


def test_a_floor_that_computes_something_else_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = bench_floor.vector

    def without_the_ratio(state: dict, at: float, raw: dict) -> dict:
        return {**real(state, at, raw), "amount_vs_hourly_mean": None}

    monkeypatch.setattr(bench_floor, "vector", without_the_ratio)
    with pytest.raises(RuntimeError, match="floor vectors differ"):
        bench_floor.check_vectors(records(bench_features.event_records(3_000)))


def test_the_floor_module_examples() -> None:
    failures, _ = doctest.testmod(bench_floor, optionflags=doctest.ELLIPSIS)
    assert failures == 0
