"""One batch of raw events → dead letters, training examples and new online state.

The pure part (:func:`decode_batch`, :func:`fold_events`) decides everything; the
:class:`FeaturePipeline` only moves bytes, in an order that makes a crash at any point
safe (offsets are committed by the caller after :meth:`FeaturePipeline.handle`
returns):

1. decode every record; invalid ones (and, with a project, those whose raw fields do
   not fit its declared ones) become dead letters;
2. load the touched entities' state from Redis (one round trip);
3. fold the events into it: duplicates and too-late events change nothing, labelled
   events yield a training example built from the state *before* the event;
4. send dead letters and examples to Kafka and wait for every acknowledgement, and
   record feature snapshots of unlabelled events (for late labels) in Redis;
5. write the new states to Redis (one round trip, compare-and-set per entity).

A crash before 5 replays the batch: the examples are sent again with the same ids
(consumers de-duplicate by ``example_id``) and the states are computed again from the
same inputs. A crash after 5 replays events that the states already hold, which
:func:`~eddy.streams.features.compute.apply_event` recognises by id and ignores.

Step 5 also raises, per partition, the highest offset applied (the store's watermark).
Offsets are committed after step 5, so a Redis that later comes back without some of
those writes would lose events for good. Before step 2 the pipeline therefore reads
the watermarks of the batch's partitions: one below what was applied before this batch
(:func:`lost_ranges`) means Redis lost acknowledged writes, and the ``repair`` callback
re-applies exactly those offsets from the retained ``events`` topic, older events
first, before this batch is folded in. Until that repair has raised the watermark, every
batch finds the same gap again, so a repair that fails is tried again, never forgotten.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eddy.streams.dead_letters.letter import DeadLetter, RawRecord, dead_letter
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.features.compute import (
    Applied,
    FeatureSet,
    admission,
    apply_event,
    feature_vector,
)
from eddy.streams.messages.contracts import Event, SourceOffset, TrainingExample
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.messages.validation import InvalidMessage, decode, encode
from eddy.streams.store.online import OnlineStore, StoredState
from eddy.streams.store.snapshots import Snapshot, SnapshotStore
from eddy.streams.store.state_cache import StateCache

log = logging.getLogger(__name__)

MAX_SAVE_ATTEMPTS = 5
SEND_TIMEOUT_S = 60.0


class StoreContention(RuntimeError):
    """Another writer kept winning the same entities: two workers own one partition."""


@dataclass
class Folded:
    """What folding a batch into loaded state produced."""

    changed: dict[str, StoredState] = field(default_factory=dict)
    examples: list[TrainingExample] = field(default_factory=list)
    snapshots: list[tuple[str, Snapshot]] = field(default_factory=list)
    verdicts: list[tuple[str, Applied]] = field(default_factory=list)  # (entity, verdict)

    def counts(self, excluding: set[str]) -> Counter[str]:
        """Verdicts and examples, leaving out entities whose write must be redone."""
        counts = Counter(v.value for entity, v in self.verdicts if entity not in excluding)
        counts["examples"] = sum(1 for e in self.examples if e.entity_id not in excluding)
        return counts


@dataclass(frozen=True)
class LostRange:
    """Offsets ``first``..``last`` (inclusive) of one partition that the store lost."""

    topic: str
    partition: int
    first: int
    last: int


def offset_spans(records: Sequence[RawRecord]) -> dict[str, tuple[int, int]]:
    """The first and last offset of each ``<topic>:<partition>`` in a batch (records
    come in offset order within a partition).

    >>> offset_spans([RawRecord("t", 0, 7, None, b"", ()), RawRecord("t", 0, 9, None, b"", ())])
    {'t:0': (7, 9)}
    """
    spans: dict[str, tuple[int, int]] = {}
    for record in records:
        name = f"{record.topic}:{record.partition}"
        spans[name] = (spans.get(name, (record.offset, 0))[0], record.offset)
    return spans


def lost_ranges(found: dict[str, int], expected: dict[str, int]) -> list[LostRange]:
    """Where the store holds less than was written: a watermark ``found`` below the
    offset ``expected`` (what must have been applied before a batch: the offset before
    it, or more if this writer applied more; -1 = nothing).

    >>> lost_ranges({"t:0": 41, "t:1": 9}, {"t:0": 44, "t:1": 9})
    [LostRange(topic='t', partition=0, first=42, last=44)]
    """
    ranges = []
    for name, offset in expected.items():
        if found.get(name, -1) < offset:
            topic, _, partition = name.rpartition(":")
            ranges.append(LostRange(topic, int(partition), found.get(name, -1) + 1, offset))
    return ranges


def decode_batch(
    records: Sequence[RawRecord],
    now: datetime,
    max_future: timedelta,
    schema: RawSchema | None = None,
) -> tuple[list[tuple[RawRecord, Event]], list[DeadLetter]]:
    """Split raw records into decoded events and dead letters, keeping their order.

    ``schema``: the raw fields a project declares; an event that fits the message
    contract but not them is a dead letter too, its reason naming each field (None: any
    raw fields, as the contract allows).

    >>> from eddy.streams.messages.raw_schema import RawSchema
    >>> schema = RawSchema.from_table({"amount": {"type": "float", "min": 0}})
    >>> raw = b'{"event_id": "e1", "entity_id": "u1", "event_time": "2026-01-01T00:00:00Z", '
    >>> records = [RawRecord("events", 0, 7, b"u1", raw + b'"features": {"amount": -2}}', ())]
    >>> now = datetime(2026, 1, 1, tzinfo=UTC)
    >>> events, [letter] = decode_batch(records, now, timedelta(minutes=5), schema)
    >>> events, dict(letter.headers)["eddy.error.reason"]
    ([], b"field 'amount' is -2, below its min 0")
    """
    events: list[tuple[RawRecord, Event]] = []
    letters: list[DeadLetter] = []
    for record in records:
        try:
            event = decode(Event, record.value, now=now, max_future=max_future)
        except InvalidMessage as exc:
            letters.append(dead_letter(record, exc.error_class, exc.reason))
            continue
        if record.key is not None and record.key != event.entity_id.encode():
            letters.append(
                dead_letter(
                    record,
                    "key_mismatch",
                    f"record key {record.key!r} is not the event's entity_id "
                    f"{event.entity_id!r}: the entity's events would split across partitions",
                )
            )
            continue
        refusal = None if schema is None else schema.refusal(event.features)
        if refusal is not None:
            letters.append(dead_letter(record, refusal.error_class, refusal.reason))
            continue
        events.append((record, event))
    return events, letters


def fold_events(
    events: Sequence[tuple[RawRecord, Event]],
    loaded: dict[str, StoredState],
    fs: FeatureSet,
    *,
    snapshots: bool = False,
) -> Folded:
    """Apply ``events`` in order to ``loaded`` states (mutated in place).

    With ``snapshots``, every unlabelled event also yields the point-in-time features
    a late label for it will be joined to.
    """
    folded = Folded()
    fingerprint = fs.fingerprint()
    for record, event in events:
        stored = loaded[event.entity_id]
        event_time = event.event_time.timestamp()
        verdict = admission(stored.state, fs, event.event_id, event_time)
        if verdict is Applied.NEW and (event.label is not None or snapshots):
            features = feature_vector(stored.state, fs, event_time, raw=event.features)
            if event.label is None:
                snapshot = Snapshot(event.entity_id, event_time, features)
                folded.snapshots.append((event.event_id, snapshot))
            else:
                folded.examples.append(
                    TrainingExample(
                        example_id=event.event_id,
                        entity_id=event.entity_id,
                        event_time=event.event_time,
                        label=event.label,
                        features=features,
                        feature_set=fingerprint,
                        source=SourceOffset(
                            topic=record.topic, partition=record.partition, offset=record.offset
                        ),
                    )
                )
        if verdict is Applied.NEW:
            apply_event(stored.state, fs, event.event_id, event_time, event.features)
            folded.changed[event.entity_id] = stored
        folded.verdicts.append((event.entity_id, verdict))
    return folded


class FeaturePipeline:
    """The I/O around :func:`fold_events`: Redis state, Kafka dead letters and examples."""

    def __init__(
        self,
        *,
        fs: FeatureSet,
        store: OnlineStore,
        producer: Any,
        dead_letter_topic: str,
        examples_topic: str,
        max_future: timedelta,
        schema: RawSchema | None,
        side_outputs: bool = True,
        snapshot_store: SnapshotStore | None = None,
        snapshot_horizon_s: float | None = None,
        repair: Callable[[list[LostRange]], None] | None = None,
        cache: StateCache | None = None,
    ) -> None:
        """``schema``: the raw fields events must fit (None: any; see
        :func:`decode_batch`). ``side_outputs=False`` (a rebuild or repair from Kafka)
        sends no dead letters and no training examples; snapshots are recorded when a
        store is given, only for events within ``snapshot_horizon_s`` of now when that
        is set. ``repair`` re-applies offsets the store lost (None: losses are not
        looked for). ``cache``: the states this pipeline wrote, folded into again
        instead of read back (:mod:`~eddy.streams.store.state_cache`; None: every batch
        reads Redis)."""
        self._fs = fs
        self._schema = schema
        self._store = store
        self._producer = producer
        self._dead_letters = DeadLetterSink(producer, dead_letter_topic)
        self._examples_topic = examples_topic
        self._max_future = max_future
        self._side_outputs = side_outputs
        self._snapshot_store = snapshot_store
        self._snapshot_horizon_s = snapshot_horizon_s
        self._repair = repair
        self._written: dict[str, int] = {}  # the watermark this writer last set
        self._cache = cache if cache is not None else StateCache(0)

    def handle(self, records: Sequence[RawRecord]) -> Counter[str]:
        """Process one batch; when this returns, every effect is durable."""
        events, letters = decode_batch(records, datetime.now(UTC), self._max_future, self._schema)
        counts: Counter[str] = Counter(invalid=len(letters))
        if not self._side_outputs:
            letters = []
        futures = self._dead_letters.send(letters)
        pending = events
        spans = offset_spans(records)
        if self._repair is not None and spans:
            self._repair_losses(spans, self._repair)
        applied = {name: last for name, (_, last) in spans.items()}
        for _attempt in range(MAX_SAVE_ATTEMPTS):
            loaded = self._load(event.entity_id for _, event in pending)
            folded = fold_events(
                pending, loaded, self._fs, snapshots=self._snapshot_store is not None
            )
            futures += [
                self._producer.send(
                    self._examples_topic,
                    key=example.entity_id.encode(),
                    value=encode(example),
                )
                for example in folded.examples
                if self._side_outputs
            ]
            self._wait_for(futures)
            futures = []
            if self._snapshot_store is not None:
                self._snapshot_store.record(self._recent(folded.snapshots))
            lost = set(self._store.save(folded.changed, applied))
            self._keep(loaded, folded.changed, lost)
            for name, offset in applied.items():
                self._written[name] = max(self._written.get(name, -1), offset)
            applied = {}
            counts.update(folded.counts(excluding=lost))
            if not lost:
                return counts
            log.warning("online-store write lost a race; re-applying", extra={"lost": len(lost)})
            pending = [(r, e) for r, e in pending if e.entity_id in lost]
        raise StoreContention(f"entities kept changing under this worker: {sorted(lost)}")

    @property
    def dead_letters(self) -> DeadLetterSink:
        """Where this pipeline sends the records it refuses."""
        return self._dead_letters

    def forget_cached(self) -> None:
        """Read every state from Redis again (the worker's partitions changed: another
        worker may have written its entities meanwhile)."""
        self._cache.clear()

    def _load(self, entity_ids: Iterable[str]) -> dict[str, StoredState]:
        loaded, misses = self._cache.take(entity_ids)
        loaded.update(self._store.load(misses))
        return loaded

    def _keep(
        self, loaded: dict[str, StoredState], changed: dict[str, StoredState], lost: set[str]
    ) -> None:
        """Cache what Redis now holds: each written state at its new revision, each
        unchanged one as read; never one whose write lost a race."""
        for entity_id, stored in loaded.items():
            if entity_id in lost:
                continue
            if entity_id in changed:
                stored.rev += 1
            self._cache.put(entity_id, stored)

    def _repair_losses(
        self, spans: dict[str, tuple[int, int]], repair: Callable[[list[LostRange]], None]
    ) -> None:
        expected = {
            name: max(self._written.get(name, -1), first - 1) for name, (first, _) in spans.items()
        }
        losses = lost_ranges(self._store.watermarks_of(list(spans)), expected)
        if losses:
            self._cache.clear()  # the repair writes these states, not this pipeline
            repair(losses)

    def _recent(self, snapshots: list[tuple[str, Snapshot]]) -> list[tuple[str, Snapshot]]:
        if self._snapshot_horizon_s is None:
            return snapshots
        oldest = time.time() - self._snapshot_horizon_s
        return [(record_id, s) for record_id, s in snapshots if s.at >= oldest]

    def close(self) -> None:
        """Close the producer (a pipeline built for one rebuild or repair)."""
        self._producer.close()

    def _wait_for(self, futures: list[Any]) -> None:
        if not futures:
            return
        self._producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)
