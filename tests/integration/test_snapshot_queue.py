"""Snapshots queued on a caller's pipeline, against a real Redis: what
:class:`~eddy.streams.store.snapshots.SnapshotStore` reads back and counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eddy.services.config.settings import Settings
from eddy.streams.store import keys
from eddy.streams.store.snapshots import ServedAnswer, Snapshot, SnapshotStore
from eddy.streams.transport.clients import make_redis

TTL_S = 60


@pytest.fixture
def client(stack: Settings) -> Iterator[redis.Redis]:
    client = make_redis(stack)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    prefix = f"eddy-test-{uuid.uuid4().hex[:8]}."
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def queued(client: redis.Redis, prefix: str, ttl_s: int, *snapshots: tuple[str, Snapshot]) -> Any:
    pipe = client.pipeline(transaction=False)
    pipe.set(f"{prefix}before", b"1")  # the caller's own writes share the round trip
    SnapshotStore(client, prefix, ttl_s).queue(pipe, snapshots)
    return pipe.execute()


def test_queued_snapshots_are_what_the_snapshot_store_reads_and_counts(
    client: redis.Redis, prefix: str
) -> None:
    served = Snapshot("u1", 1.5, {"amount": 3.0, "country": "NL"}, ServedAnswer("m@2", True, 0.8))
    unserved = Snapshot("u2", 2.5, {"amount": None})
    replies = queued(client, prefix, TTL_S, ("r1", served), ("r2", unserved))
    assert replies == [True, 2]
    store = SnapshotStore(client, prefix, TTL_S)
    assert store.fetch(["r1", "r2"]) == {"r1": served, "r2": unserved}
    assert store.recorded() == 2
    assert 0 < client.pttl(keys.snapshot(prefix, "r1")) <= TTL_S * 1000


def test_a_snapshot_recorded_before_is_neither_replaced_nor_counted_again(
    client: redis.Redis, prefix: str
) -> None:
    first = Snapshot("u1", 1.0, {"amount": 1.0})
    SnapshotStore(client, prefix, TTL_S).record([("r1", first)])
    replies = queued(client, prefix, TTL_S, ("r1", Snapshot("u1", 9.0, {"amount": 9.0})))
    assert replies == [True, 0]
    store = SnapshotStore(client, prefix, TTL_S)
    assert store.fetch(["r1"]) == {"r1": first}
    assert store.recorded() == 1


def test_nothing_is_queued_without_snapshots_or_a_label_window(
    client: redis.Redis, prefix: str
) -> None:
    assert queued(client, prefix, TTL_S) == [True]
    assert queued(client, prefix, 0, ("r1", Snapshot("u1", 1.0, {}))) == [True]
    assert SnapshotStore(client, prefix, TTL_S).recorded() == 0
