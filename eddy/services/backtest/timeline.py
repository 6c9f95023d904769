"""A backtest's timeline: a range of ``events`` and ``labels`` as the live loop saw it.

A policy backtest (``eddy/services/backtest/replay.py``) must see exactly what the live system
saw, without Redis, Kafka or a clock. This module turns the raw records of one offset
range into that, once, through the live code path: each event is decoded by
:func:`~eddy.streams.features.pipeline.decode_batch` (dead letters counted, not sent) and folded
by :func:`~eddy.streams.features.pipeline.fold_events` into in-memory entity states, partition
by partition in offset order as the feature workers did. That yields, per accepted event,
the point-in-time features a prediction was served on, and, for a labelled event, the
training example the learner received. A label from ``labels`` is joined to the features
its event was served with (as the learner joins snapshots), and is unmatched when it
names a request (requests are not replayed), an event outside the range, or arrives
after ``label_window_s`` (the snapshot would have expired).

Everything is then ordered by *event time* (ties: events first, then topic, partition,
offset), so the timeline is the same whatever order the records were read in, and
every policy replays the very same sequence.

>>> from eddy.streams.features.definitions import FEATURES
>>> from eddy.streams.messages.validation import encode
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> def logged(topic: str, offset: int, message: Event | Label) -> LogRecord:
...     raw = RawRecord(topic, 0, offset, b"u1", encode(message), ())
...     return LogRecord(raw, t0.timestamp() + 60)
>>> events = [
...     logged("events", i, Event(event_id=f"e{i}", entity_id="u1", label=label,
...            event_time=t0 + timedelta(seconds=i), features={"amount": 5.0}))
...     for i, label in enumerate([False, None])
... ]
>>> late = logged("labels", 0, Label(event_id="e1", label=True,
...                                   event_time=t0 + timedelta(seconds=30)))
>>> timeline = build_timeline(
...     events, [late], FEATURES, None, max_future=timedelta(minutes=5), label_window_s=3600
... )
>>> [(type(item).__name__, item.event_id, item.at - t0.timestamp()) for item in timeline.items]
[('Served', 'e0', 0.0), ('Served', 'e1', 1.0), ('Joined', 'e1', 30.0)]
>>> timeline.items[1].features["amount_count_1h"]  # as of e1, before e1: e0 only
1
>>> timeline.counts["events_labelled"], timeline.counts["labels_joined"]
(1, 1)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import Applied, EntityState, FeatureSet, FeatureValue
from eddy.streams.features.pipeline import decode_batch, fold_events
from eddy.streams.learning.label_join import joined_example
from eddy.streams.learning.learner import Position
from eddy.streams.messages.contracts import Event, Label, TrainingExample
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.store.online import StoredState
from eddy.streams.store.snapshots import Snapshot

SERVED_FIRST, JOINED_AFTER = 0, 1  # tie-break at equal event times


@dataclass(frozen=True)
class LogRecord:
    """A record read back from Kafka and the time the broker stamped on it (epoch s)."""

    raw: RawRecord
    timestamp: float


@dataclass(frozen=True)
class Served:
    """An accepted event: the champion answers on its point-in-time features at ``at``.

    ``example`` is set when the event carried its label: the learner learns it at once.
    """

    event_id: str
    entity_id: str
    at: float
    features: dict[str, FeatureValue]
    position: Position
    example: TrainingExample | None


@dataclass(frozen=True)
class Joined:
    """A late label joined to the features its event was served with; it reaches the
    loop at ``at`` (the label's time, never before the event was served)."""

    event_id: str
    at: float
    example: TrainingExample
    position: Position


Item = Served | Joined


@dataclass
class Timeline:
    """The items in the order the loop meets them, and what happened to every record
    (``events_new``, ``events_duplicate``, ``labels_joined``, ``labels_expired``, ...)."""

    items: list[Item] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def span(self) -> tuple[float, float] | None:
        """First and last event time served (None: nothing served)."""
        served = [item.at for item in self.items if isinstance(item, Served)]
        return (served[0], served[-1]) if served else None


def build_timeline(
    events: Sequence[LogRecord],
    labels: Sequence[LogRecord],
    fs: FeatureSet,
    schema: RawSchema | None,
    *,
    max_future: timedelta,
    label_window_s: float,
) -> Timeline:
    """The event-time-ordered items of one range (see the module docstring), over the
    deployment's features ``fs`` and raw fields ``schema`` (None: any)."""
    timeline = Timeline()
    decoded = _decode_events(events, max_future, schema, timeline.counts)
    served = _serve(decoded, fs, timeline.counts)
    timeline.items.extend(served.values())
    timeline.items.extend(
        _join(labels, served, max_future, label_window_s, fs.fingerprint(), timeline.counts)
    )
    timeline.items.sort(key=_order)
    return timeline


def _decode_events(
    events: Sequence[LogRecord],
    max_future: timedelta,
    schema: RawSchema | None,
    counts: Counter[str],
) -> list[tuple[RawRecord, Event]]:
    """Valid events in partition, offset order: the order each feature worker saw."""
    decoded: list[tuple[RawRecord, Event]] = []
    for record in sorted(events, key=lambda r: (r.raw.topic, r.raw.partition, r.raw.offset)):
        # The broker's stamp stands in for the worker's clock: deterministic, and close.
        now = datetime.fromtimestamp(record.timestamp, UTC)
        valid, letters = decode_batch([record.raw], now, max_future, schema)
        decoded += valid
        counts["events_read"] += 1
        counts["events_invalid"] += len(letters)
    return decoded


def _serve(
    decoded: list[tuple[RawRecord, Event]], fs: FeatureSet, counts: Counter[str]
) -> dict[str, Served]:
    states = {event.entity_id: StoredState(0, EntityState()) for _, event in decoded}
    folded = fold_events(decoded, states, fs, snapshots=True)
    counts.update(f"events_{verdict.value}" for _, verdict in folded.verdicts)
    examples = {example.example_id: example for example in folded.examples}
    snapshots = dict(folded.snapshots)
    served: dict[str, Served] = {}
    for (record, event), (_, verdict) in zip(decoded, folded.verdicts, strict=True):
        if verdict is not Applied.NEW:  # a duplicate or too late: nothing was served
            continue
        example = examples.get(event.event_id)
        features = example.features if example else snapshots[event.event_id].features
        at = event.event_time.timestamp()
        where = Position(record.topic, record.partition, record.offset, at)
        served[event.event_id] = Served(
            event.event_id, event.entity_id, at, features, where, example
        )
        if example is not None:
            counts["events_labelled"] += 1
    return served


def _join(
    labels: Sequence[LogRecord],
    served: dict[str, Served],
    max_future: timedelta,
    label_window_s: float,
    feature_set: str,
    counts: Counter[str],
) -> list[Joined]:
    decoded: list[tuple[RawRecord, Label]] = []
    for record in labels:
        counts["labels_read"] += 1
        now = datetime.fromtimestamp(record.timestamp, UTC)
        try:
            decoded.append(
                (record.raw, decode(Label, record.raw.value, now=now, max_future=max_future))
            )
        except InvalidMessage:
            counts["labels_invalid"] += 1
    decoded.sort(key=lambda rl: (rl[1].event_time, rl[0].topic, rl[0].partition, rl[0].offset))
    joined: dict[str, Joined] = {}
    for raw, label in decoded:
        verdict = _label_verdict(label, served, joined, label_window_s)
        counts[f"labels_{verdict}"] += 1
        if verdict != "joined" or label.event_id is None:
            continue
        event = served[label.event_id]
        snapshot = Snapshot(event.entity_id, event.at, event.features)
        joined[label.event_id] = _joined(raw, label, label.event_id, snapshot, feature_set)
    return list(joined.values())


def _label_verdict(
    label: Label, served: dict[str, Served], joined: dict[str, Joined], label_window_s: float
) -> str:
    if label.event_id is None:
        return "for_requests"
    event = served.get(label.event_id)
    if event is None:
        return "unmatched"
    if event.example is not None or label.event_id in joined:
        return "duplicate"
    if label.event_time.timestamp() - event.at > label_window_s:
        return "expired"
    return "joined"


def _joined(
    record: RawRecord, label: Label, event_id: str, snapshot: Snapshot, feature_set: str
) -> Joined:
    """The example the learner builds from a label and its snapshot."""
    label_at = Position(record.topic, record.partition, record.offset, snapshot.at)
    example, position = joined_example(event_id, label, snapshot, label_at, feature_set=feature_set)
    at = max(label.event_time.timestamp(), snapshot.at)
    return Joined(event_id, at, example, position)


def _order(item: Item) -> tuple[float, int, str, int, int]:
    rank = SERVED_FIRST if isinstance(item, Served) else JOINED_AFTER
    where = item.position
    return (item.at, rank, where.topic, where.partition, where.offset)
