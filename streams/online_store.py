"""The online feature store in Redis: one hash per entity, batched reads and guarded writes.

Key layout (Redis Cluster friendly: the entity id is the hash tag, so everything about
one entity lives in one slot)::

    <prefix>features:{<entity id>}   hash: rev (write counter), state (encoded EntityState)

Reads and writes are batched: :meth:`OnlineStore.load` fetches any number of entities
in one round trip, and :meth:`OnlineStore.save` writes them in one more. Each write is
a compare-and-set on ``rev`` (a small server-side script), so two workers that briefly
both own a partition during a rebalance cannot lose each other's updates: the loser is
told, reloads, and re-applies (which is safe, because applying is idempotent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from streams.features import (
    EntityState,
    FeatureSet,
    decode_state,
    encode_state,
    feature_vector,
    freshness,
)

# KEYS[1] = entity key; ARGV = expected rev ("" when new), new rev, state, ttl in ms.
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], 'rev')
if (current or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'state', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass
class StoredState:
    """An entity's state and the revision it was read at (0: not stored yet)."""

    rev: int
    state: EntityState


@dataclass(frozen=True)
class OnlineFeatures:
    """An entity's current feature vector and how old its newest event is."""

    entity_id: str
    features: dict[str, Any]
    freshness_s: float | None


class OnlineStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = ttl_s * 1000
        self._cas = client.register_script(_COMPARE_AND_SET)

    def key(self, entity_id: str) -> str:
        """The Redis key of ``entity_id``: ``<prefix>features:{<entity id>}``."""
        return f"{self._prefix}features:{{{entity_id}}}"

    def load(self, entity_ids: Iterable[str]) -> dict[str, StoredState]:
        """Every entity's stored state, in one round trip (new entities: rev 0, empty)."""
        ids = list(dict.fromkeys(entity_ids))
        pipe = self._client.pipeline(transaction=False)
        for entity_id in ids:
            pipe.hmget(self.key(entity_id), "rev", "state")
        loaded: dict[str, StoredState] = {}
        for entity_id, (rev, state) in zip(ids, pipe.execute(), strict=True):
            loaded[entity_id] = StoredState(int(rev or 0), decode_state(state))
        return loaded

    def save(self, updates: Mapping[str, StoredState]) -> list[str]:
        """Write each entity's state if its rev is unchanged since :meth:`load`.

        Returns the entities whose write lost a race (to reload and re-apply); the
        others now hold the new state at ``rev + 1``.
        """
        ids = list(updates)
        pipe = self._client.pipeline(transaction=False)
        for entity_id in ids:
            stored = updates[entity_id]
            expected = str(stored.rev) if stored.rev else ""
            self._cas(
                keys=[self.key(entity_id)],
                args=[expected, stored.rev + 1, encode_state(stored.state), self._ttl_ms],
                client=pipe,
            )
        results = pipe.execute()
        return [entity_id for entity_id, ok in zip(ids, results, strict=True) if not ok]

    def online_features(
        self, entity_ids: Iterable[str], fs: FeatureSet, as_of: float
    ) -> dict[str, OnlineFeatures]:
        """The serving read path: current vectors of many entities in one round trip."""
        return {
            entity_id: OnlineFeatures(
                entity_id,
                feature_vector(stored.state, fs, as_of),
                freshness(stored.state, as_of),
            )
            for entity_id, stored in self.load(entity_ids).items()
        }
