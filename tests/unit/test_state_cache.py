"""The feature pipeline's cache of the states it wrote: folded into instead of read
back, never holding what Redis did not acknowledge (an in-memory store stands in for
Redis; tests/integration/test_feature_worker.py runs the same against a real one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import FeatureSet
from eddy.streams.features.pipeline import FeaturePipeline
from eddy.streams.store.online import StoredState, _parse
from eddy.streams.store.state_cache import StateCache


class CountingStore:
    """OnlineStore's interface over a dict, counting the entities read from it."""

    def __init__(self) -> None:
        self.states: dict[str, StoredState] = {}
        self.reads = 0
        self.refuse_writes = False

    def load(self, entity_ids: Iterable[str]) -> dict[str, StoredState]:
        ids = list(entity_ids)
        self.reads += len(ids)
        return {e: self.states.get(e, _parse(None)) for e in ids}

    def save(self, updates: Mapping[str, StoredState], applied: Mapping[str, int]) -> list[str]:
        if self.refuse_writes:
            raise ConnectionError("Redis went away")
        lost = [e for e, s in updates.items() if self.states.get(e, _parse(None)).rev != s.rev]
        for entity_id, stored in updates.items():
            if entity_id not in lost:
                # A copy, as Redis holds bytes: later folds into the caller's object
                # must not reach it.
                self.states[entity_id] = StoredState(stored.rev + 1, _copy(stored))
        return lost

    def watermarks_of(self, fields: list[str]) -> dict[str, int]:
        return {f: -1 for f in fields}


def _copy(stored: StoredState) -> Any:
    from eddy.streams.features.compute import decode_state, encode_state

    return decode_state(encode_state(stored.state))


class Sent:
    """A producer that acknowledges every send at once, keeping what was sent."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def send(self, _topic: str, *, key: bytes, value: bytes) -> Any:
        self.values.append(value)
        return self

    def get(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> None:
        return None


def record(offset: int, entity: str = "u", label: int | None = None) -> RawRecord:
    at = datetime.now(UTC) - timedelta(seconds=600 - offset)
    event: dict[str, Any] = {
        "event_id": f"{entity}-{offset}",
        "entity_id": entity,
        "event_time": at.isoformat(),
        "features": {"amount": float(offset)},
    }
    if label is not None:
        event["label"] = label
    return RawRecord("events", 0, offset, entity.encode(), orjson.dumps(event), ())


def pipeline(store: CountingStore, producer: Sent, capacity: int = 10) -> FeaturePipeline:
    return FeaturePipeline(
        fs=FeatureSet(),
        store=store,  # type: ignore[arg-type]
        producer=producer,
        dead_letter_topic="dlq",
        examples_topic="examples",
        max_future=timedelta(minutes=5),
        schema=None,
        cache=StateCache(capacity),
    )


def test_states_written_are_folded_into_without_reading_them_again() -> None:
    store, sent = CountingStore(), Sent()
    worker = pipeline(store, sent)
    for offset in range(5):
        worker.handle([record(offset)])
    assert store.reads == 1  # the first batch only
    assert sorted(store.states["u"].state.seen) == [f"u-{i}" for i in range(5)]
    assert store.states["u"].rev == 5


def test_a_copy_another_writer_made_stale_is_refused_and_read_again() -> None:
    store, sent = CountingStore(), Sent()
    worker = pipeline(store, sent)
    worker.handle([record(0)])
    pipeline(store, sent, capacity=0).handle([record(1)])  # another owner, meanwhile
    worker.handle([record(2)])
    assert sorted(store.states["u"].state.seen) == ["u-0", "u-1", "u-2"]


def test_a_failed_batch_leaves_no_copy_holding_what_was_never_written() -> None:
    """The retried batch must find its events new again: a cached copy that already
    held them would make them duplicates, and their training examples would never be
    sent."""
    store, sent = CountingStore(), Sent()
    worker = pipeline(store, sent)
    worker.handle([record(0)])
    store.refuse_writes = True
    with pytest.raises(ConnectionError):
        worker.handle([record(1, label=1)])
    store.refuse_writes = False
    sent.values.clear()
    counts = worker.handle([record(1, label=1)])
    assert counts["new"] == 1
    assert [orjson.loads(v)["example_id"] for v in sent.values] == ["u-1"]


def test_the_cache_holds_at_most_its_capacity() -> None:
    store, sent = CountingStore(), Sent()
    worker = pipeline(store, sent, capacity=2)
    worker.handle([record(0, "a"), record(1, "b"), record(2, "c")])
    store.reads = 0
    worker.handle([record(3, "a"), record(4, "b"), record(5, "c")])
    assert store.reads == 1  # "a" was evicted; "b" and "c" were kept
