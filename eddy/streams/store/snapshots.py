"""Feature snapshots: the features an event or a served prediction saw, kept for late labels.

A label can arrive hours after its event or prediction. To learn from it without
leakage, the learner needs the features as they were then, not as they are now. The
feature worker (for unlabelled events) and the prediction service (for requests) record
them here under the event or request id, for ``EDDY_LABEL_WINDOW_S``::

    <prefix>snapshot:{<event or request id>}   JSON {entity_id, at, features[, served]}

A request's snapshot also says what was served for it (``served``: the answering
version, its answer and P(positive)), so the label that comes back for it scores the
model users were served, not only the online learner (:mod:`eddy.streams.drift.served`).

Recording is idempotent (same id, same content) and a counter of recorded snapshots
lets the learner report label coverage. On a Redis Cluster the snapshots of a batch are
recorded by one script call per slot, each counting into a counter of its own slot
(``<prefix>snapshots:recorded:{<tag>}``), and :meth:`SnapshotStore.recorded` sums them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from eddy.streams.features.compute import FeatureValue
from eddy.streams.store import keys
from eddy.streams.store.redis_commands import (
    RedisClient,
    is_cluster,
    multi_get,
    queue_script,
    set_expiring,
)
from eddy.streams.store.slots import SLOTS, script_calls, slot_of, slot_tag

# KEYS: the snapshots' keys, then the counter of recorded snapshots. ARGV[1]: ttl in ms,
# then each snapshot's value. Sets each key that does not exist yet and adds how many
# were new to the counter.
_RECORD = r"""
local n = #KEYS - 1
local created = 0
for i = 1, n do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1], 'NX') then
    created = created + 1
  end
end
if created > 0 then
  redis.call('INCRBY', KEYS[n + 1], created)
end
return created
"""

# How old a Redis Cluster's summed count of snapshots may be (SnapshotStore.recorded).
CLUSTER_COUNT_MAX_AGE_S = 30.0


@dataclass(frozen=True)
class ServedAnswer:
    """What a version answered for a request."""

    version: str  # e.g. "fraud@3"
    prediction: bool | int | float | str | None
    positive: float | None = None  # P(positive class), for binary classifiers


@dataclass(frozen=True)
class Snapshot:
    entity_id: str
    at: float  # event time or serving time, epoch seconds
    features: dict[str, FeatureValue]
    served: ServedAnswer | None = None

    def as_json(self) -> bytes:
        data: dict[str, Any] = {
            "entity_id": self.entity_id,
            "at": self.at,
            "features": self.features,
        }
        if self.served is not None:
            data["served"] = self.served.__dict__
        return orjson.dumps(data)


class SnapshotStore:
    def __init__(self, client: RedisClient, prefix: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = ttl_s * 1000
        self._cluster = is_cluster(client)
        self._counter = keys.snapshots_recorded(prefix)
        self._summed: tuple[float, int] | None = None  # (when, sum) of a cluster's counters

    def key(self, record_id: str) -> str:
        return keys.snapshot(self._prefix, record_id)

    def record(self, snapshots: Sequence[tuple[str, Snapshot]]) -> None:
        """Store snapshots by id and count the new ones, in one round trip
        (:meth:`queue`); re-recording an id changes nothing."""
        pipe = self._client.pipeline(transaction=False)
        self.queue(pipe, snapshots)
        pipe.execute()

    def queue(self, pipe: Any, snapshots: Sequence[tuple[str, Snapshot]]) -> None:
        """Queue the snapshots on ``pipe``, to share the caller's round trip (the
        predictor's, with its request log): one script call that creates each snapshot
        not recorded yet and adds how many it created to the counter, in Redis, so the
        count stays exact (on a cluster: one call per slot). Each reply is how many it
        created. Sent as ``EVAL``: a registered script queued on a redis-py pipeline
        costs a round trip of its own on every execute, to check that Redis still has
        it. (Hundreds of queued ``SET`` commands cost the client twice what this one call
        does: the feature worker records one snapshot per unlabelled event.)

        Nothing is queued without snapshots or with a label window of 0 (no snapshots
        are kept; Redis refuses an expiry of 0)."""
        if not snapshots or not self._ttl_ms:
            return
        names = [self.key(record_id) for record_id, _ in snapshots]
        values = [snapshot.as_json() for _, snapshot in snapshots]
        for positions in script_calls(names, self._cluster):
            group = [names[p] for p in positions]
            group.append(self._counter_beside(group[0]))
            queue_script(pipe, _RECORD, group, [self._ttl_ms, *(values[p] for p in positions)])

    def _counter_beside(self, name: str) -> str:
        """The counter a script that records ``name`` adds to: the one counter, or on a
        cluster the counter of ``name``'s slot."""
        if not self._cluster:
            return self._counter
        return keys.snapshots_recorded_in(self._prefix, slot_tag(slot_of(name)))

    def fetch(self, record_ids: Iterable[str]) -> dict[str, Snapshot]:
        """The snapshots that exist among ``record_ids`` (one round trip)."""
        ids = list(dict.fromkeys(record_ids))
        if not ids:
            return {}
        found: dict[str, Snapshot] = {}
        raws = multi_get(self._client, [self.key(i) for i in ids])
        for record_id, raw in zip(ids, raws, strict=True):
            if raw is not None:
                data: dict[str, Any] = orjson.loads(raw)
                served = data.get("served")
                found[record_id] = Snapshot(
                    data["entity_id"],
                    data["at"],
                    data["features"],
                    None if served is None else _served_answer(served),
                )
        return found

    def label_key(self, record_id: str) -> str:
        return keys.joined_label(self._prefix, record_id)

    def record_labels(self, labels: Sequence[tuple[str, Any]]) -> None:
        """Labels the learner joined, by id: the truth the live comparison scores against."""
        if not labels:
            return
        pipe = self._client.pipeline(transaction=False)
        for record_id, label in labels:
            set_expiring(pipe, self.label_key(record_id), orjson.dumps(label), self._ttl_ms)
        pipe.execute()

    def fetch_labels(self, record_ids: Iterable[str]) -> dict[str, Any]:
        ids = list(dict.fromkeys(record_ids))
        if not ids:
            return {}
        values = multi_get(self._client, [self.label_key(i) for i in ids])
        return {i: orjson.loads(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def recorded(self) -> int:
        """How many snapshots were ever recorded (the denominator of label coverage).

        On a cluster, the sum of every slot's counter: 16,384 reads (about 0.2 s), so
        the sum is read again only after :data:`CLUSTER_COUNT_MAX_AGE_S` (the learner
        asks at every checkpoint, several times a second)."""
        if not self._cluster:
            return int(self._client.get(self._counter) or 0)
        now = time.monotonic()
        if self._summed is None or now - self._summed[0] >= CLUSTER_COUNT_MAX_AGE_S:
            counters = [keys.snapshots_recorded_in(self._prefix, slot_tag(s)) for s in range(SLOTS)]
            self._summed = (now, sum(int(c or 0) for c in multi_get(self._client, counters)))
        return self._summed[1]


def _served_answer(data: dict[str, Any]) -> ServedAnswer | None:
    """The answer a snapshot recorded; None for one this version cannot read."""
    version = data.get("version")
    if not isinstance(version, str):
        return None
    positive = data.get("positive")
    return ServedAnswer(
        version,
        data.get("prediction"),
        float(positive) if isinstance(positive, int | float) else None,
    )
