"""A feature worker's own copy of the entity states it last wrote, bounded, by revision.

A partition has one owner at a time, so the states its worker wrote are, almost always,
exactly what Redis holds: reading them back and decoding them again for every batch is
work for nothing. The cache keeps each state the worker wrote with the revision the
write produced (:class:`~eddy.streams.store.online.StoredState`); the next batch folds
into that copy and writes it back with the same compare-and-set as ever. When the copy
is stale (another worker wrote the entity during a rebalance, the key expired) the
compare-and-set says so and the entity is dropped here, read from Redis and folded
again, as for any lost race. So the cache changes where a state is read from, never
what is written.

What it cannot see is a revision that came back with other contents: a Redis that lost
writes and had them re-applied from Kafka by a repair may hold a state at the same
revision as a copy here that differs from it. So the pipeline empties the cache on
every repair and on every change of the worker's partitions. A batch takes its states
out of the cache (:meth:`StateCache.take`) and puts back only those Redis acknowledged:
a batch that fails leaves no copy holding events that were never written.

>>> from eddy.streams.features.compute import EntityState
>>> cache = StateCache(capacity=2)
>>> cache.put("a", StoredState(3, EntityState(newest=1.0)))
>>> cache.put("b", StoredState(1, EntityState()))
>>> hits, misses = cache.take(["a", "c"])  # "a" is out until put back
>>> hits["a"].rev, misses, len(cache)
(3, ['c'], 1)
>>> cache.put("a", StoredState(4, hits["a"].state))  # written: revision 4
>>> cache.put("c", StoredState(1, EntityState()))  # "b" was used least recently
>>> sorted(cache.take(["a", "b", "c"])[0])
['a', 'c']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from eddy.streams.store.online import StoredState


class StateCache:
    """Up to ``capacity`` entity states (0: caching off), least recently used evicted."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._states: OrderedDict[str, StoredState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def take(self, entity_ids: Iterable[str]) -> tuple[dict[str, StoredState], list[str]]:
        """The cached states among ``entity_ids`` (removed from the cache: the caller
        folds into them and puts back what it wrote) and the ids to read from Redis."""
        hits: dict[str, StoredState] = {}
        misses: list[str] = []
        for entity_id in dict.fromkeys(entity_ids):
            stored = self._states.pop(entity_id, None)
            if stored is None:
                misses.append(entity_id)
            else:
                hits[entity_id] = stored
        return hits, misses

    def put(self, entity_id: str, stored: StoredState) -> None:
        """Keep ``stored``, the state Redis holds for ``entity_id`` at ``stored.rev``."""
        if self._capacity <= 0:
            return
        self._states[entity_id] = stored
        self._states.move_to_end(entity_id)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()
