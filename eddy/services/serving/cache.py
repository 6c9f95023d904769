"""Static serving: the champion's answers precomputed in Redis, never served stale.

The look-up-table end of the space-time trade-off: answers for entities asked about
often are kept in Redis, one string per entity and model::

    <prefix>answer:{<entity id>}:<model>
        JSON {version, artifact, rev, digest, prediction, proba, at}

**When an entry may be served.** A batch of requests reads its entities' states (one
``MGET``, which it needs anyway) and computes their vectors; an entry then serves a
request only if, checked against what *this* request read:

- ``version`` and ``artifact`` are those of the batch's champion: never an older (or any
  other) model, whatever the timing of a swap;
- ``rev`` is the entity's revision the request read (:mod:`eddy.streams.store.online` counts
  every write): never older stored features;
- ``digest`` is the digest of the vector the request would be scored on (stored
  features merged with the request's own, as of now; below).

Invalidation is therefore by validation on read, not by deleting in time: a feature
write moves ``rev`` on, a swap changes the version, and an entry that no longer matches
is a miss, overwritten by the next answer computed for that entity or expired. Writers
race freely (last write wins); a late write of an old answer can only cost a miss. (An
entity whose features expired starts again at ``rev`` 1; the digest still has to match,
so an entry from its earlier life could only serve the very same vector.)

**"Older features", precisely.** Some features follow the clock: windows move at
multiples of the feature set's time step (the greatest common divisor of its window
steps: 60 s for Eddy's definitions), and ``seconds_since_last_event`` grows
continuously. The digest covers the vector without ``seconds_since_last_event``, plus
the number of the time step ``now`` falls in. Within one step no window's contents can
change, so an entry served under the same ``rev`` and digest was computed from exactly
the vector the request sees, except ``seconds_since_last_event``, which differs by less
than one time step (steps are read from each host's clock, so add the clock skew between
predictor hosts). Every entry expires at the end of the step it was computed in (or
after ``EDDY_PREDICTION_CACHE_TTL_S``, if sooner): it could not be served afterwards.
A feature set without windows has the TTL as its step.

>>> timing = Timing(step_s=60, clock_driven=frozenset({"seconds_since_last_event"}))
>>> a = timing.digest({"amount": 1.0, "seconds_since_last_event": 3.0}, as_of=600.0)
>>> a == timing.digest({"amount": 1.0, "seconds_since_last_event": 50.0}, as_of=647.0)
True
>>> a == timing.digest({"amount": 1.0, "seconds_since_last_event": 63.0}, as_of=660.0)
False
>>> timing.expiry_ms(as_of=630.0, ttl_s=3600)
30000

**Policies** (``EDDY_PREDICTION_CACHE``, for the model the predictor serves):

- ``off``: nothing is looked up or stored;
- ``hot``: requests are counted per entity in Redis
  (``<prefix>answer-hot:{<entity id>}:<model>``, a counter that expires
  ``EDDY_PREDICTION_CACHE_HOT_WINDOW_S`` after the first request it counts: a fixed
  window, one small key per entity asked about in the window, so memory is bounded by
  the entities active in a window); an entity with at least
  ``EDDY_PREDICTION_CACHE_HOT_REQUESTS`` requests in its window is hot: answers computed
  for it are stored, and recomputed when its features change;
- ``all``: every answer computed is stored and every entity's answer is recomputed when
  its features change.

**Precomputation** (:class:`Precomputer`) follows ``events`` in a consumer group of its
own per model (``<prefix>answer-precompute.<model>``), waits until the online store
holds each event it saw (the event's id is in the state's recent ids, or the event was
refused as too late), then scores the bare request (the entity with no features of its
own) with the champion and stores the answer. A request carrying features that change
its vector misses and is scored as usual. There is one entry per entity and model (the
last answer computed), so an entity asked with varying features of its own keeps
missing. After a swap, entries fill again as entities are asked about or change.

**What a hit saves, honestly.** The entity's state is still read and its vector
computed, because the snapshot for late labels, the request log and the shadow scoring
of challengers (which is never cached: live evaluation sees real answers) need them. A
hit skips only the champion's scoring; it costs one more Redis round trip per batch (the
entries' ``MGET``; for ``hot``, one script call that also counts the requests), and the
new entries are written in the round trip that writes the request log. It pays when
scoring is dear (scikit-learn has a fixed cost per call) and a batch is mostly hits;
``scripts/bench_cache.py`` measures it. Like the online store, a look-up names keys of
many entities, so it needs one Redis node (or a Cluster with the keys in one slot).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import orjson

from eddy.services.config.settings import Settings
from eddy.services.serving.scoring import Loaded, Scored, ServingModels, score_batch
from eddy.streams.dead_letters.policy import retry_transient
from eddy.streams.features.compute import (
    TIME_SINCE_LAST,
    Applied,
    EntityState,
    FeatureSet,
    admission,
    feature_vector,
)
from eddy.streams.messages.contracts import Event
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.store import keys
from eddy.streams.store.online import OnlineStore
from eddy.streams.store.redis_commands import (
    RedisClient,
    is_cluster,
    multi_get,
    queue_script,
    set_expiring,
)
from eddy.streams.store.slots import script_calls
from eddy.streams.transport.clients import make_consumer
from eddy.streams.transport.groups import ANSWER_PRECOMPUTE, group_id
from eddy.streams.transport.topics import Topic, topic_name

log = logging.getLogger(__name__)

DIGEST_BYTES = 16
MS_PER_S = 1000
POLL_MS = 100
# How long an event seen on the topic may take to reach the online store before the
# precomputer stops waiting for it (the feature worker is down or dead-lettered it).
PRECOMPUTE_PATIENCE_S = 30.0
# Most entities awaiting their feature write at once; the oldest are forgotten first.
PENDING_MAX_ENTITIES = 100_000
SCAN_COUNT = 1000

# One round trip for policy ``hot``: read the entries and count the requests.
# KEYS: the entities' entry keys, then their hot counters in the same order. ARGV[1]:
# how many entities; ARGV[2]: the hot window in seconds; then each counter's increment.
# A counter's window starts with the first request it counts. Returns {entries, counts}.
_LOOKUP_AND_COUNT = r"""
local n = tonumber(ARGV[1])
local entries = {}
for i = 1, n do
  entries[i] = redis.call('GET', KEYS[i])
end
local counts = {}
for i = n + 1, #KEYS do
  local step = tonumber(ARGV[i - n + 2])
  local count = redis.call('INCRBY', KEYS[i], step)
  if count == step then
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
  counts[i - n] = count
end
return {entries, counts}
"""


class Policy(StrEnum):
    OFF = "off"
    HOT = "hot"
    ALL = "all"


@dataclass(frozen=True)
class Timing:
    """How the cache sees time for one feature set: its step and clock-driven features."""

    step_s: int
    clock_driven: frozenset[str]

    @classmethod
    def of(cls, fs: FeatureSet, fallback_s: int) -> Timing:
        """Windows change only at multiples of the gcd of their steps.

        >>> from eddy.streams.features.definitions import FEATURES
        >>> Timing.of(FEATURES, fallback_s=3600).step_s
        60
        """
        steps = [aggregate.window.step_s for aggregate in fs.aggregates]
        return cls(
            math.gcd(*steps) if steps else fallback_s,
            frozenset({TIME_SINCE_LAST}) if fs.time_since_last else frozenset(),
        )

    def step(self, as_of: float) -> int:
        return math.floor(as_of / self.step_s)

    def digest(self, vector: Mapping[str, Any], as_of: float) -> str:
        """Equal digests: equal vectors but for the clock-driven features, same step."""
        timeless = {k: v for k, v in vector.items() if k not in self.clock_driven}
        payload = orjson.dumps([self.step(as_of), timeless], option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(payload, digest_size=DIGEST_BYTES).hexdigest()

    def expiry_ms(self, as_of: float, ttl_s: int) -> int:
        """Milliseconds until the end of ``as_of``'s step (at most the TTL, at least 1)."""
        end = (self.step(as_of) + 1) * self.step_s
        return max(1, min(ttl_s * MS_PER_S, math.ceil((end - as_of) * MS_PER_S)))


@dataclass(frozen=True)
class Ask:
    """What one request read: its entity, the entity's revision and its vector's digest."""

    entity_id: str
    rev: int
    digest: str


@dataclass(frozen=True)
class Entry:
    """A stored answer and everything that must match for it to be served.

    >>> model = Loaded("m", 3, "sklearn", None, artifact="ab12")
    >>> entry = Entry(3, "ab12", rev=7, digest="d", scored=Scored(True, {"True": 0.9}), at=1.0)
    >>> Entry.decode(entry.encode()) == entry
    True
    >>> entry.serves(model, Ask("u1", 7, "d")), entry.serves(model, Ask("u1", 8, "d"))
    (True, False)
    >>> entry.serves(Loaded("m", 4, "sklearn", None, artifact="cd34"), Ask("u1", 7, "d"))
    False
    """

    version: int
    artifact: str
    rev: int
    digest: str
    scored: Scored
    at: float  # when it was computed, epoch seconds

    def serves(self, model: Loaded, ask: Ask) -> bool:
        return (
            self.version == model.version
            and self.artifact == model.artifact
            and self.rev == ask.rev
            and self.digest == ask.digest
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "version": self.version,
                "artifact": self.artifact,
                "rev": self.rev,
                "digest": self.digest,
                "prediction": self.scored.prediction,
                "proba": self.scored.proba,
                "at": self.at,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> Entry | None:
        """The entry, or None when there is none or it cannot be read (then it misses).

        >>> Entry.decode(None), Entry.decode(b"{not json"), Entry.decode(b'{"rev": 1}')
        (None, None, None)
        """
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return cls(
                int(data["version"]),
                str(data["artifact"]),
                int(data["rev"]),
                str(data["digest"]),
                Scored(data["prediction"], dict(data["proba"])),
                float(data["at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Lookup:
    """Per ask: the entry that serves it (None: a miss) and whether to store its answer."""

    hits: list[Entry | None]
    keep: list[bool]


def worth_keeping(policy: Policy, requests_in_window: int, hot_requests: int) -> bool:
    """Whether an answer computed for an entity should be stored.

    >>> worth_keeping(Policy.HOT, 2, 3), worth_keeping(Policy.HOT, 3, 3)
    (False, True)
    >>> worth_keeping(Policy.ALL, 1, 3), worth_keeping(Policy.OFF, 9, 3)
    (True, False)
    """
    if policy is Policy.ALL:
        return True
    return policy is Policy.HOT and requests_in_window >= hot_requests


@dataclass(frozen=True)
class Usage:
    """What the cache holds in Redis: keys and bytes (``MEMORY USAGE``) of each kind."""

    answers: int
    answer_bytes: int
    counters: int
    counter_bytes: int


class AnswerCache:
    """The Redis edge: look entries up, count requests, store answers."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        model: str,
        policy: Policy,
        timing: Timing,
        *,
        hot_requests: int,
        hot_window_s: int,
        ttl_s: int,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.model = model
        self.policy = policy
        self.timing = timing
        self._hot_requests = hot_requests
        self._hot_window_s = hot_window_s
        self._ttl_s = ttl_s

    @classmethod
    def from_settings(
        cls, client: RedisClient, settings: Settings, model: str, fs: FeatureSet
    ) -> AnswerCache:
        return cls(
            client,
            settings.topic_prefix,
            model,
            Policy(settings.prediction_cache),
            Timing.of(fs, settings.prediction_cache_ttl_s),
            hot_requests=settings.prediction_cache_hot_requests,
            hot_window_s=settings.prediction_cache_hot_window_s,
            ttl_s=settings.prediction_cache_ttl_s,
        )

    def key(self, entity_id: str) -> str:
        return keys.cached_answer(self._prefix, entity_id, self.model)

    def hot_key(self, entity_id: str) -> str:
        return keys.hot_requests(self._prefix, entity_id, self.model)

    def lookup(self, champion: Loaded, asks: Sequence[Ask]) -> Lookup:
        """One round trip: every ask's entry, and (policy ``hot``) its request counted."""
        if not asks:
            return Lookup([], [])
        in_window: dict[str, int] = {}
        if self.policy is Policy.HOT:
            entries, in_window = self._look_up_and_count(Counter(ask.entity_id for ask in asks))
            raws = [entries[ask.entity_id] for ask in asks]
        else:
            raws = multi_get(self._client, [self.key(ask.entity_id) for ask in asks])
        hits = []
        for ask, raw in zip(asks, raws, strict=True):
            entry = Entry.decode(raw)
            hits.append(entry if entry is not None and entry.serves(champion, ask) else None)
        keep = [
            worth_keeping(self.policy, in_window.get(ask.entity_id, 0), self._hot_requests)
            for ask in asks
        ]
        return Lookup(hits, keep)

    def _look_up_and_count(self, counted: Counter[str]) -> tuple[dict[str, Any], dict[str, int]]:
        """Each entity's entry and its requests in the window after adding ``counted``:
        one script call (per slot on a cluster), one round trip (per node)."""
        entities = list(counted)
        pipe = self._client.pipeline(transaction=False)
        calls = script_calls([self.key(e) for e in entities], is_cluster(self._client))
        for positions in calls:
            group = [entities[p] for p in positions]
            queue_script(
                pipe,
                _LOOKUP_AND_COUNT,
                [self.key(e) for e in group] + [self.hot_key(e) for e in group],
                [len(group), self._hot_window_s, *(counted[e] for e in group)],
            )
        entries: dict[str, Any] = {}
        in_window: dict[str, int] = {}
        for positions, (raws, counts) in zip(calls, pipe.execute(), strict=True):
            for p, raw, count in zip(positions, raws, counts, strict=True):
                entries[entities[p]] = raw
                in_window[entities[p]] = int(count)
        return entries, in_window

    def hot(self, entity_ids: Iterable[str]) -> set[str]:
        """The entities that are hot now (one round trip)."""
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return set()
        counts = multi_get(self._client, [self.hot_key(entity_id) for entity_id in ids])
        return {
            entity_id
            for entity_id, count in zip(ids, counts, strict=True)
            if worth_keeping(self.policy, int(count or 0), self._hot_requests)
        }

    def save(
        self,
        answers: Sequence[tuple[Ask, Scored]],
        champion: Loaded,
        as_of: float,
        pipe: Any = None,
    ) -> None:
        """Store answers computed as of ``as_of``, each expiring with its time step.

        Queued on ``pipe`` when given (the caller executes it), else sent at once.
        """
        if not answers:
            return
        target = pipe if pipe is not None else self._client.pipeline(transaction=False)
        expiry = self.timing.expiry_ms(as_of, self._ttl_s)
        for ask, scored in answers:
            entry = Entry(champion.version, champion.artifact, ask.rev, ask.digest, scored, as_of)
            set_expiring(target, self.key(ask.entity_id), entry.encode(), expiry)
        if pipe is None:
            target.execute()

    def usage(self) -> Usage:
        """Keys and bytes held for this model: answers and hot counters (scans Redis)."""
        sizes = []
        for pattern in (self.key("*"), self.hot_key("*")):
            keys = list(self._client.scan_iter(match=pattern, count=SCAN_COUNT))
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key)
            sizes.append((len(keys), sum(int(b or 0) for b in pipe.execute())))
        (answers, answer_bytes), (counters, counter_bytes) = sizes
        return Usage(answers, answer_bytes, counters, counter_bytes)


@dataclass
class Pending:
    """Events seen on the topic whose effect on the online store is awaited, per entity.

    >>> from eddy.streams.features.compute import FeatureSet, apply_event
    >>> fs = FeatureSet()
    >>> pending = Pending(patience_s=30.0)
    >>> pending.add("u1", "e1", event_time=100.0, seen_at=0.0)
    >>> pending.settle({"u1": EntityState()}, fs, now=1.0)  # not stored yet
    []
    >>> state = EntityState()
    >>> apply_event(state, fs, "e1", 100.0, {"x": 1})
    <Applied.NEW: 'new'>
    >>> pending.settle({"u1": state}, fs, now=2.0), pending.entities()
    (['u1'], [])
    """

    patience_s: float
    capacity: int = PENDING_MAX_ENTITIES
    _events: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def add(self, entity_id: str, event_id: str, event_time: float, seen_at: float) -> None:
        self._events.setdefault(entity_id, {})[event_id] = (event_time, seen_at)
        while len(self._events) > self.capacity:
            del self._events[next(iter(self._events))]

    def entities(self) -> list[str]:
        return list(self._events)

    def settle(self, states: Mapping[str, EntityState], fs: FeatureSet, now: float) -> list[str]:
        """The entities whose every awaited event is now in their stored state (or will
        never be: refused as too late), in the order first seen; they stop being awaited.
        Events awaited longer than the patience are forgotten."""
        ready = []
        for entity_id in list(self._events):
            state = states.get(entity_id)
            events = self._events[entity_id]
            stored = {
                event_id
                for event_id, (event_time, _) in events.items()
                if state is not None
                and admission(state, fs, event_id, event_time) is not Applied.NEW
            }
            waiting = {
                event_id: timing
                for event_id, timing in events.items()
                if event_id not in stored and now - timing[1] <= self.patience_s
            }
            if waiting:
                self._events[entity_id] = waiting
                continue
            del self._events[entity_id]
            if stored:
                ready.append(entity_id)
        return ready


class Precomputer(threading.Thread):
    """Recomputes entities' answers once their new features are in the online store.

    Redis or Kafka outages are waited out
    (:func:`eddy.streams.dead_letters.policy.retry_transient`); answers are only an optimisation, so
    nothing is lost meanwhile but hits.
    """

    def __init__(
        self,
        settings: Settings,
        cache: AnswerCache,
        store: OnlineStore,
        fs: FeatureSet,
        serving: Callable[[], ServingModels],
    ) -> None:
        super().__init__(name="answer-precomputer", daemon=True)
        self.settings = settings
        self.cache = cache
        self.store = store
        self.fs = fs
        self.serving = serving
        self.pending = Pending(PRECOMPUTE_PATIENCE_S)
        self._stopping = threading.Event()

    def run(self) -> None:
        prefix = self.settings.topic_prefix
        topic = topic_name(Topic.EVENTS, prefix)
        consumer = make_consumer(
            self.settings,
            topic,
            group_id=group_id(prefix, ANSWER_PRECOMPUTE, self.cache.model),
            auto_offset_reset="latest",  # answers for features from now on
        )
        try:
            while not self._stopping.is_set():
                polled = consumer.poll(timeout_ms=POLL_MS)
                self.note(r.value for rs in polled.values() for r in rs)
                retry_transient(lambda: self.precompute(time.time()), "precompute answers")
                if polled:
                    consumer.commit_async()
        finally:
            consumer.close(autocommit=False)

    def note(self, values: Iterable[bytes | None]) -> None:
        """Await the store's write of each valid event (the feature worker dead-letters
        the others)."""
        now = time.time()
        max_future = timedelta(seconds=self.settings.max_event_time_skew_s)
        for value in values:
            try:
                event = decode(Event, value, max_future=max_future)
            except InvalidMessage:
                continue
            self.pending.add(event.entity_id, event.event_id, event.event_time.timestamp(), now)

    def precompute(self, now: float) -> int:
        """Score and store the answers of entities whose awaited writes have landed."""
        waiting = self.pending.entities()
        if not waiting:
            return 0
        stored = self.store.load(waiting)
        ready = self.pending.settle({e: s.state for e, s in stored.items()}, self.fs, now)
        champion = self.serving().champion
        if champion is None or not ready:
            return 0
        if self.cache.policy is Policy.HOT:
            hot = self.cache.hot(ready)
            ready = [entity_id for entity_id in ready if entity_id in hot]
        vectors = [feature_vector(stored[e].state, self.fs, now) for e in ready]
        asks = [
            Ask(e, stored[e].rev, self.cache.timing.digest(v, now))
            for e, v in zip(ready, vectors, strict=True)
        ]
        self.cache.save(list(zip(asks, score_batch(champion, vectors), strict=True)), champion, now)
        log.debug(
            "precomputed answers",
            extra={"model_version": champion.name, "entities": len(asks)},
        )
        return len(asks)

    def stop(self) -> None:
        self._stopping.set()
