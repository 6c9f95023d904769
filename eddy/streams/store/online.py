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

Against a Redis Cluster (``EDDY_REDIS_CLUSTER``), which refuses a command or script
across slots, a batch is split per hash slot and sent as one pipeline per node (still one
round trip to each node): ``MGET`` per slot, and the compare-and-set per slot. The
watermarks then live once per master, in a hash tagged into the lowest slot it serves
(``<prefix>features:<states>:applied:{<tag>}``), raised by a script queued on that node
after the batch's states: a node replicates its writes in order, so a replica promoted
with the watermark holds every state written before it, and one promoted without
(a replica that lagged) shows a watermark below what was applied, which is repaired as
on a single node. A batch's watermark is read from every master and the lowest counts.
A failover keeps a master's slots, so its key; resharding moves them, which reads as
"nothing applied" on the new key and re-applies the retained events (idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.cluster import RedisCluster

from eddy.streams.features.compute import (
    EntityState,
    FeatureSet,
    decode_state,
    encode_state,
    feature_vector,
    freshness,
)
from eddy.streams.store import keys
from eddy.streams.store.redis_commands import (
    RedisClient,
    cluster_pipeline,
    multi_get,
    queue_script,
)
from eddy.streams.store.slots import lowest_slots, script_calls, slot_tag

log = logging.getLogger(__name__)

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
    def __init__(self, client: RedisClient, prefix: str, ttl_s: int, *, states: str) -> None:
        self._client = client
        self._prefix = prefix
        self._states = states  # the feature set's state fingerprint
        self._ttl_ms = ttl_s * 1000
        self._cas = client.register_script(_COMPARE_AND_SET)
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._owners: list[str] = []  # the master of each slot the watermarks are for
        self._node_watermarks: list[str] = []
        if self._cluster is not None:
            slot_tag(0)  # the tags of every slot, found now rather than in a first batch

    def key(self, entity_id: str) -> str:
        """The Redis key of ``entity_id``: ``<prefix>features:<states>:{<entity id>}``."""
        return keys.entity_features(self._prefix, self._states, entity_id)

    def load(self, entity_ids: Iterable[str]) -> dict[str, StoredState]:
        """Every entity's stored state, in one round trip (new entities: rev 0, empty)."""
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return {}
        values = multi_get(self._client, [self.key(entity_id) for entity_id in ids])
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
        if self._cluster is not None:
            return self._save_per_slot(
                self._cluster, ids, args[2 : 2 + 2 * len(ids)], args[2 + 2 * len(ids) :]
            )
        keys = [self.key(entity_id) for entity_id in ids] + [self.watermarks_key]
        lost = self._cas(keys=keys, args=args)
        return [ids[int(position) - 1] for position in lost]

    def _save_per_slot(
        self, cluster: RedisCluster, ids: list[str], writes: list[Any], marks: list[Any]
    ) -> list[str]:
        """:meth:`save` on a cluster: one compare-and-set per slot, then each master's
        watermark raised after them on the same node, all in one pipeline per node.

        A slot that moved during the batch (``MOVED``) has its compare-and-set re-sent
        after the pipeline, so after its new master's watermark: then the watermarks are
        raised once more (raising is idempotent), after every state of the batch."""
        pipe = cluster_pipeline(cluster)
        marked = self._watermark_keys(cluster) if marks else []
        owners = self._owners
        names = [self.key(entity_id) for entity_id in ids]
        calls = script_calls(names, cluster=True)
        for positions in calls:
            args = [a for p in positions for a in writes[2 * p : 2 * p + 2]]
            group = [names[p] for p in positions]
            queue_script(pipe, _COMPARE_AND_SET, group, [self._ttl_ms, len(group), *args])
        for mark in marked:
            queue_script(pipe, _COMPARE_AND_SET, [mark], [self._ttl_ms, 0, *marks])
        replies = pipe.execute()
        if marks:
            self._watermark_keys(cluster)  # the slot map as the pipeline left it
        if marks and self._owners is not owners:
            again = cluster_pipeline(cluster)
            for mark in self._node_watermarks:
                queue_script(again, _COMPARE_AND_SET, [mark], [self._ttl_ms, 0, *marks])
            again.execute()
        return [
            ids[positions[int(i) - 1]]
            for positions, lost in zip(calls, replies[: len(calls)], strict=True)
            for i in lost
        ]

    def _watermark_keys(self, cluster: RedisCluster) -> list[str]:
        """The watermark hash of each master: tagged into the lowest slot it serves, as
        the client's slot map has it now (redis-py edits it in place after a ``MOVED``,
        so it is read every time: about a millisecond).

        When the keys change (slots moved between masters, a master added), the new ones
        start from the lowest of the old ones: moving slots loses no acknowledged write,
        and an empty key would read as "nothing applied" and re-apply every retained
        event. A worker that starts after a resharding has no old keys to start from and
        does re-apply them (idempotent, by event id)."""
        slot_map = cluster.nodes_manager.slots_cache
        owners = [nodes[0].name if nodes else "" for nodes in slot_map.values()]
        if owners != self._owners:
            named = {slot: nodes[0].name for slot, nodes in slot_map.items() if nodes}
            before = self._node_watermarks
            self._node_watermarks = [
                keys.applied_offsets_on(self._prefix, self._states, slot_tag(slot))
                for slot in lowest_slots(named)
            ]
            self._owners = owners
            if before and set(before) != set(self._node_watermarks):
                self._carry_over(cluster, before, self._node_watermarks)
        return self._node_watermarks

    def _carry_over(self, cluster: RedisCluster, old: list[str], new: list[str]) -> None:
        """Start the new watermark keys from the lowest watermark of the old ones."""
        pipe = cluster_pipeline(cluster)
        for mark in old:
            pipe.hgetall(mark)
        rows = [{k.decode(): int(v) for k, v in row.items()} for row in pipe.execute()]
        lowest = {f: min(row.get(f, -1) for row in rows) for f in set().union(*rows)}
        carried = {f: offset for f, offset in lowest.items() if offset >= 0}
        if carried:
            pipe = cluster_pipeline(cluster)
            for mark in set(new) - set(old):
                for field, offset in carried.items():
                    pipe.hsetnx(mark, field, offset)
            pipe.execute()
        log.info("the cluster's slots moved: watermarks carried over", extra={"to": new})

    @property
    def watermarks_key(self) -> str:
        return keys.applied_offsets(self._prefix, self._states)

    def watermarks_of(self, fields: list[str]) -> dict[str, int]:
        """The watermarks of ``fields`` (-1: none), one round trip (on a cluster: one per
        master, in parallel, and each field's lowest counts)."""
        if not fields:
            return {}
        if self._cluster is None:
            values = self._client.hmget(self.watermarks_key, fields)
            return {f: -1 if v is None else int(v) for f, v in zip(fields, values, strict=True)}
        pipe = cluster_pipeline(self._cluster)
        for mark in self._watermark_keys(self._cluster):
            pipe.hmget(mark, fields)
        rows = pipe.execute()
        return {
            f: min(-1 if row[k] is None else int(row[k]) for row in rows)
            for k, f in enumerate(fields)
        }

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
