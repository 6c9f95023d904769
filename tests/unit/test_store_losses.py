"""Losses of the online store are repaired before the batch that finds them, and a
repair that fails is found, and tried, again: the pipeline's bookkeeping, with an
in-memory store standing in for Redis (the Redis script is tested against a real one in
tests/integration/test_feature_worker.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import FeatureSet
from eddy.streams.features.pipeline import FeaturePipeline, LostRange
from eddy.streams.store.online import StoredState, _parse


class MemoryStore:
    """What FeaturePipeline needs of OnlineStore, in a dict; ``wipe()`` is Redis lost."""

    def __init__(self) -> None:
        self.states: dict[str, StoredState] = {}
        self.marks: dict[str, int] = {}

    def load(self, entity_ids: Any) -> dict[str, StoredState]:
        return {e: self.states.get(e, _parse(None)) for e in entity_ids}

    def save(self, updates: Mapping[str, StoredState], applied: Mapping[str, int]) -> list[str]:
        for entity_id, stored in updates.items():
            self.states[entity_id] = StoredState(stored.rev + 1, stored.state)
        for name, offset in applied.items():
            self.marks[name] = max(self.marks.get(name, -1), offset)
        return []

    def watermarks_of(self, fields: list[str]) -> dict[str, int]:
        return {f: self.marks.get(f, -1) for f in fields}

    def wipe(self) -> None:
        self.states, self.marks = {}, {}


class NoProducer:
    def send(self, *_: Any, **__: Any) -> None:
        raise AssertionError("nothing to send: these events carry no label")


def records(first: int, count: int) -> list[RawRecord]:
    now = datetime.now(UTC) - timedelta(seconds=60)
    return [
        RawRecord(
            "events",
            0,
            offset,
            b"u",
            orjson.dumps(
                {
                    "event_id": f"e{offset}",
                    "entity_id": "u",
                    "event_time": (now + timedelta(seconds=offset)).isoformat(),
                    "features": {"amount": 1.0},
                }
            ),
            (),
        )
        for offset in range(first, first + count)
    ]


def pipeline(store: MemoryStore, repair: Any) -> FeaturePipeline:
    return FeaturePipeline(
        fs=FeatureSet(),
        store=store,  # type: ignore[arg-type]
        producer=NoProducer(),
        dead_letter_topic="dlq",
        examples_topic="examples",
        max_future=timedelta(minutes=5),
        schema=None,
        repair=repair,
    )


def test_a_wiped_store_is_repaired_before_the_next_batch_is_applied() -> None:
    store, asked = MemoryStore(), []

    def repair(losses: list[LostRange]) -> None:
        asked.append(losses)
        applied = store.states.get("u")
        assert applied is None, "the repair runs before the batch that found the loss"
        store.marks["events:0"] = losses[0].last  # what re-applying them would leave

    worker = pipeline(store, repair)
    worker.handle(records(0, 5))
    assert asked == []
    store.wipe()
    worker.handle(records(5, 5))
    assert asked == [[LostRange("events", 0, 0, 4)]]
    assert store.marks == {"events:0": 9}


def test_a_repair_that_fails_is_tried_again_on_the_next_batch() -> None:
    store, attempts = MemoryStore(), []

    def failing_once(losses: list[LostRange]) -> None:
        attempts.append(losses)
        if len(attempts) == 1:
            raise ConnectionError("Kafka away while repairing")
        store.marks["events:0"] = losses[0].last

    worker = pipeline(store, failing_once)
    worker.handle(records(0, 5))
    store.wipe()
    with pytest.raises(ConnectionError):
        worker.handle(records(5, 5))
    assert store.marks == {}, "a batch whose repair failed raises no watermark"
    worker.handle(records(5, 5))  # redelivered, as after the worker's restart
    assert attempts == [[LostRange("events", 0, 0, 4)]] * 2


def test_a_partition_moved_away_and_back_expects_at_least_the_offset_before_its_batch() -> None:
    store, asked = MemoryStore(), []
    worker = pipeline(store, asked.append)
    worker.handle(records(0, 5))  # this worker applied 0..4
    store.marks["events:0"] = 20  # another worker applied up to 20, then the store...
    store.wipe()  # ...lost everything; the partition comes back at 21
    worker.handle(records(21, 2))
    assert asked == [[LostRange("events", 0, 0, 20)]]
