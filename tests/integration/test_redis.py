"""A real Redis: round trips, pipelines, TTLs, and the persistence the stack promises."""

from __future__ import annotations

import uuid

from eddy.services.config.settings import Settings
from eddy.streams.transport.clients import make_redis


def test_round_trip_pipeline_and_ttl(stack: Settings) -> None:
    client = make_redis(stack)
    key = f"{{eddy-test-{uuid.uuid4().hex[:8]}}}:features"
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"count": 3, "last": "NL"})
            pipe.expire(key, 60)
            pipe.execute()
        assert client.hgetall(key) == {b"count": b"3", b"last": b"NL"}
        assert 0 < client.ttl(key) <= 60
    finally:
        client.delete(key)
        client.close()


def test_local_redis_persists_with_an_append_only_file(stack: Settings) -> None:
    client = make_redis(stack)
    try:
        assert client.ping() is True
        if not stack.uses_external_redis:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()
