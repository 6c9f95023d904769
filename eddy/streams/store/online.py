"""The online feature store in Redis: one key per entity, batched reads and guarded writes.

Key layout (the entity id is the hash tag, so everything about one entity lives in one
Redis Cluster slot)::

    <prefix>features:<states>:{<entity id>}   string: b"<rev>\n" + encoded EntityState
    <prefix>features:<states>:applied         hash: "<topic>:<partition>" -> highest offset applied

``<states>`` is the state fingerprint of the feature definitions the states were folded
with (:meth:`~eddy.streams.features.compute.FeatureSet.state_fingerprint`: what shapes
a state, not what a vector computes from it). Definitions that fold other states start
from empty ones under their own fingerprint, while the old ones keep serving until every
service has moved (``eddy apply``): the new states' watermarks start at none, so the
first batch a worker folds into them finds everything before it missing and re-applies
it from the retained ``events`` topic (the repair below), unless ``eddy apply`` rebuilt
them first.

``rev`` counts the writes. A batch costs two commands whatever its size: one ``MGET``
for :meth:`OnlineStore.load` and one script call for :meth:`OnlineStore.save`, which
writes each entity only if its ``rev`` is still the one that was read
(compare-and-set). Two workers that briefly both own a partition during a rebalance
therefore cannot lose each other's updates: the loser is told, reloads and re-applies,
which is safe because applying is idempotent.

The ``applied`` watermarks are written by the same script as the states, so Redis keeps
or loses both together. A Redis that comes back with less than it acknowledged (restarted
without its append-only file, a failover to a replica that lagged, a lost disk) shows it
as a watermark below what the writer applied (:meth:`OnlineStore.watermarks_of`), for the
feature pipeline to notice and repair.

Both commands name many keys, which a single Redis server (or a Cluster with the keys
in one slot) accepts; against Redis Cluster the batch would have to be split per slot,
which this store does not do yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from eddy.streams.features.compute import (
    EntityState,
    FeatureSet,
    decode_state,
    encode_state,
    feature_vector,
    freshness,
)
from eddy.streams.store import keys

# KEYS: n entity keys, then the watermark hash. ARGV[1]: ttl in ms; ARGV[2]: n; then,
# per entity key, the expected rev ("0" when new) and the new value; then pairs of
# watermark field and offset. Returns the 1-based positions of the keys whose rev had
# moved on; each watermark is raised to its offset (never lowered).
_COMPARE_AND_SET = r"""
local lost = {}
local n = tonumber(ARGV[2])
for i = 1, n do
  local key = KEYS[i]
  local head = redis.call('GETRANGE', key, 0, 20)
  local rev = string.match(head, '^(%d+)\n') or '0'
  if rev == ARGV[1 + 2 * i] then
    redis.call('SET', key, ARGV[2 + 2 * i], 'PX', ARGV[1])
  else
    table.insert(lost, i)
  end
end
local marks = KEYS[n + 1]
for j = 3 + 2 * n, #ARGV, 2 do
  local prior = tonumber(redis.call('HGET', marks, ARGV[j]) or '-1')
  if tonumber(ARGV[j + 1]) > prior then
    redis.call('HSET', marks, ARGV[j], ARGV[j + 1])
  end
end
return lost
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
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, *, states: str) -> None:
        self._client = client
        self._prefix = prefix
        self._states = states  # the feature set's state fingerprint
        self._ttl_ms = ttl_s * 1000
        self._cas = client.register_script(_COMPARE_AND_SET)

    def key(self, entity_id: str) -> str:
        """The Redis key of ``entity_id``: ``<prefix>features:<states>:{<entity id>}``."""
        return keys.entity_features(self._prefix, self._states, entity_id)

    def load(self, entity_ids: Iterable[str]) -> dict[str, StoredState]:
        """Every entity's stored state, in one round trip (new entities: rev 0, empty)."""
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return {}
        values = self._client.mget([self.key(entity_id) for entity_id in ids])
        return {entity_id: _parse(value) for entity_id, value in zip(ids, values, strict=True)}

    def save(
        self, updates: Mapping[str, StoredState], applied: Mapping[str, int] | None = None
    ) -> list[str]:
        """Write each entity's state if its rev is unchanged since :meth:`load`, and
        raise the watermarks in ``applied`` (``<topic>:<partition>`` → offset) in the
        same script, so Redis keeps or loses both together.

        One round trip. Returns the entities whose write lost a race (to reload and
        re-apply); the others now hold the new state at ``rev + 1``.
        """
        applied = applied or {}
        ids, fields = list(updates), list(applied)
        if not ids and not fields:
            return []
        args: list[Any] = [self._ttl_ms, len(ids)]
        for entity_id in ids:
            stored = updates[entity_id]
            args += [stored.rev, b"%d\n%s" % (stored.rev + 1, encode_state(stored.state))]
        for field in fields:
            args += [field, applied[field]]
        keys = [self.key(entity_id) for entity_id in ids] + [self.watermarks_key]
        lost = self._cas(keys=keys, args=args)
        return [ids[int(position) - 1] for position in lost]

    @property
    def watermarks_key(self) -> str:
        return keys.applied_offsets(self._prefix, self._states)

    def watermarks_of(self, fields: list[str]) -> dict[str, int]:
        """The watermarks of ``fields`` (-1: none), one round trip."""
        values = self._client.hmget(self.watermarks_key, fields) if fields else []
        return {f: -1 if v is None else int(v) for f, v in zip(fields, values, strict=True)}

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


def _parse(value: Any) -> StoredState:
    if value is None:
        return StoredState(0, EntityState())
    rev, _, state = value.partition(b"\n")
    return StoredState(int(rev), decode_state(state))
