"""The benchmark's contract floor computes Eddy's features, or it bounds nothing.

``scripts/bench_floor.py`` claims a rate no implementation of the feature contract can
beat from Python; that holds only while its vectors are Eddy's own. The benchmark checks
them on every run (``check_vectors``); these tests check that the check itself holds on
the benchmark's stream and on a stream with event-time ties, and that it catches a floor
that computes something else.
"""

from __future__ import annotations

import doctest
import sys
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
