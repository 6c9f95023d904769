"""What Eddy's feature contract costs a batch, whoever implements it: two floors.

Why: issue #18 asks ``FeaturePipeline.handle`` for 0.8x, and ``eddy run features`` for
0.5x, the bare aiokafka + Redis loop, which reads each event and writes it to Redis once.
Eddy's contract asks more of every batch:

- each event's point-in-time vector of the default features, as of just before it;
- a training example of each labelled event, acknowledged by Kafka before the batch's
  offsets may be committed;
- a snapshot of each other event's vector in Redis (a late label joins to it);
- each changed entity's state written back to Redis.

Both floors run on the same records as the pipeline row (read beforehand), in batches of
``EDDY_FEATURE_BATCH_SIZE``, on ``FeaturePipeline.handle``'s schedule: a batch's effects
are durable before the next batch starts (its contract: "when this returns, every effect
is durable"). Each uses the clients Eddy uses (kafka-python with the feature worker's
linger, redis-py), single-node Redis only:

- :func:`writes_floor`: the batch's writes alone, every byte computed before the clock
  starts, as cheaply as Kafka and Redis take them (the examples sent, then flushed once
  and each acknowledgement checked; one script call for the states and one for the
  snapshots, in one round trip). Any implementation on this schedule with these clients
  makes these writes: below a target, it says none reaches that target.
- :func:`contract_floor`: a lean Python implementation of the whole batch, those writes
  included. It leaves out most of Eddy's work (validation and dead letters,
  de-duplication, lateness, compare-and-set; it keeps only each entity's current hour,
  its last ten minute-buckets and the day's countries): evidence of what per-event
  Python costs, not a proof that no Python could do better.

Each run first checks that the floor routes every event as Eddy does and that its vector
equals Eddy's (:func:`check_vectors`): a floor that computed something else would bound
nothing.

>>> states = {}
>>> first = fold_batch([("u1", 60.0, {"amount": 5.0, "country": "NL"}, None, "e1", "", ())], states)
>>> second = fold_batch([("u1", 61.0, {"amount": 7.0, "country": "DE"}, 1, "e2", "", ())], states)
>>> first.snapshots[0][1]["features"]["amount_count_1h"], second.examples[0][1]["features"]
(0, {'amount_count_1h': 1, 'amount_sum_1h': 5.0, ...})
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from eddy.services.config.settings import Settings
from eddy.services.workers.features import PRODUCER_LINGER_MS
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import (
    TIME_SINCE_LAST,
    EntityState,
    apply_event,
    feature_vector,
)
from eddy.streams.features.definitions import FEATURES
from eddy.streams.transport.clients import make_producer, make_redis
from eddy.streams.transport.topics import Topic, topic_name

# The default set's windows (``_names`` checks the set is the one measured): an hour's
# tumbling window, ten minutes sliding by the minute, a day's tumbling window.
HOUR, MINUTE, DAY = (FEATURES.aggregates[i].window.step_s for i in range(3))
RECENT_MINUTES = FEATURES.aggregates[1].window.size_s // MINUTE  # the sliding window's buckets
SNAPSHOT_TTL_MS = 2 * HOUR * 1000
SEND_TIMEOUT_S = 60.0
# One call writes every key it is given, with an expiry: Eddy's own writes are one script
# call per batch too (compare-and-set for the states, create-if-new for the snapshots).
SET_ALL = "for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1]) end"

# An event as the floor reads it: entity, event time, raw features, label, event id, the
# event time as written, and where it came from (topic, partition, offset).
Event = tuple[str, float, dict[str, Any], Any, str, str, tuple[str, int, int] | tuple[()]]


@dataclass
class FloorBatch:
    """A batch's outputs: states by entity, snapshots by event id, examples (key, body)."""

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshots: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    examples: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Encoded:
    """A batch's writes as bytes: what :func:`write` sends."""

    states: tuple[list[str], list[bytes]]
    snapshots: tuple[list[str], list[bytes]]
    examples: list[tuple[bytes, bytes]]


def _names() -> tuple[str, ...]:
    """The default feature set's names in the order :func:`vector` computes them; a
    changed definition fails here rather than floor a different set."""
    hourly, recent, countries = (a.names() for a in FEATURES.aggregates)
    names = (*hourly, *recent, *countries, *(r.name for r in FEATURES.ratios), TIME_SINCE_LAST)
    assert len(names) == 13, names  # noqa: S101 - the default set, as measured
    return names


NAMES = _names()
FINGERPRINT = FEATURES.fingerprint()


def new_state() -> dict[str, Any]:
    # hour: [start, count, sum, sum of squares, min, max, last]; minutes: start -> (n, sum);
    # day: [start, the day's countries]; newest: (time, event id) of the newest event.
    return {
        "hour": [-1.0, 0, 0.0, 0.0, None, None, None],
        "minutes": {},
        "day": [-1.0, {}],
        "newest": None,
    }


def vector(state: dict[str, Any], at: float, raw: dict[str, Any]) -> dict[str, Any]:
    """The entity's features as of ``at``, before the event at ``at`` is folded in."""
    hour, day, newest = state["hour"], state["day"], state["newest"]
    count, total, squares = (hour[1], hour[2], hour[3]) if hour[0] == at - at % HOUR else (0, 0, 0)
    mean = total / count if count else None
    recent_count, recent_total = 0, 0.0
    for start, (n, amount) in state["minutes"].items():
        if start > at - RECENT_MINUTES * MINUTE:
            recent_count, recent_total = recent_count + n, recent_total + amount
    features = dict(
        zip(
            NAMES,
            (
                count,
                total,
                mean,
                hour[4] if count else None,
                hour[5] if count else None,
                math.sqrt(max(0.0, squares / count - mean * mean)) if mean is not None else None,
                hour[6] if count else None,
                recent_count,
                recent_total,
                recent_total / recent_count if recent_count else None,
                len(day[1]) if day[0] == at - at % DAY else 0,
                raw["amount"] / mean if mean else None,
                None if newest is None else max(0.0, at - newest[0]),
            ),
            strict=True,
        )
    )
    features.update(raw)
    return features


def fold(state: dict[str, Any], at: float, raw: dict[str, Any], event_id: str) -> None:
    """``raw`` folded in; the last amount is the newest event's, ties of time going to
    the greater event id (as Eddy breaks them)."""
    amount, hour, day, newest = raw["amount"], state["hour"], state["day"], state["newest"]
    latest = newest is None or (at, event_id) > newest
    if hour[0] != at - at % HOUR:
        hour[0], hour[1], hour[2], hour[3] = at - at % HOUR, 0, 0.0, 0.0
    hour[4] = amount if hour[1] == 0 or amount < hour[4] else hour[4]
    hour[5] = amount if hour[1] == 0 or amount > hour[5] else hour[5]
    hour[6] = amount if latest or hour[1] == 0 else hour[6]
    hour[1] += 1
    hour[2] += amount
    hour[3] += amount * amount
    minutes, minute = state["minutes"], at - at % MINUTE
    n, total = minutes.get(minute, (0, 0.0))
    minutes[minute] = (n + 1, total + amount)
    if len(minutes) > RECENT_MINUTES:
        del minutes[min(minutes)]
    if day[0] != at - at % DAY:
        day[0], day[1] = at - at % DAY, {}
    day[1][raw["country"]] = None
    if latest:
        state["newest"] = (at, event_id)


def fold_batch(events: Iterable[Event], states: dict[str, dict[str, Any]]) -> FloorBatch:
    """Vectors, examples, snapshots and changed states of one batch (``states`` kept
    across batches, as a worker's cache keeps them)."""
    batch = FloorBatch()
    for entity, at, raw, label, event_id, written_at, source in events:
        state = states.get(entity)
        if state is None:
            state = states[entity] = new_state()
        features = vector(state, at, raw)
        if label is None:
            batch.snapshots.append(
                (event_id, {"entity_id": entity, "at": at, "features": features})
            )
        else:
            example = {
                "example_id": event_id,
                "entity_id": entity,
                "event_time": written_at,
                "label": label,
                "features": features,
                "feature_set": FINGERPRINT,
                "source": source,
            }
            batch.examples.append((entity.encode(), example))
        fold(state, at, raw, event_id)
        batch.states[entity] = state
    return batch


def parsed(record: RawRecord) -> Event:
    """A record's event, parsed once and trusted (the floor validates nothing)."""
    event = orjson.loads(record.value)
    written_at = event["event_time"]
    return (
        event["entity_id"],
        datetime.fromisoformat(written_at).timestamp(),
        event["features"],
        event.get("label"),
        event["event_id"],
        written_at,
        (record.topic, record.partition, record.offset),
    )


def encode(batch: FloorBatch, prefix: str) -> Encoded:
    return Encoded(
        (
            [f"{prefix}floor:{{{e}}}" for e in batch.states],
            [orjson.dumps(s, option=orjson.OPT_NON_STR_KEYS) for s in batch.states.values()],
        ),
        (
            [f"{prefix}floor-snapshot:{i}" for i, _ in batch.snapshots],
            [orjson.dumps(s) for _, s in batch.snapshots],
        ),
        [(key, orjson.dumps(example)) for key, example in batch.examples],
    )


def write(encoded: Encoded, redis: Any, producer: Any, topic: str) -> None:
    """The batch's writes in the contract's order: examples acknowledged, then Redis."""
    sent = [producer.send(topic, key=key, value=value) for key, value in encoded.examples]
    producer.flush(timeout=SEND_TIMEOUT_S)
    for future in sent:
        future.get(timeout=SEND_TIMEOUT_S)
    pipe = redis.pipeline(transaction=False)
    for names, values in (encoded.states, encoded.snapshots):
        if names:
            pipe.eval(SET_ALL, len(names), *names, SNAPSHOT_TTL_MS, *values)
    pipe.execute()


def check_vectors(records: list[RawRecord], tolerance: float = 1e-9) -> None:
    """Raise unless the floor routes every record as Eddy does (an example when it is
    labelled, a snapshot otherwise, its entity's state changed) and its vector equals
    Eddy's own (:func:`~eddy.streams.features.compute.feature_vector` as of the event,
    before it is folded): a floor is a bound only if it computes what Eddy computes.
    ``tolerance`` is relative: Eddy sums in exact fixed point, the floor in floats. For
    events in time order per entity, as the benchmark's are (Eddy also takes late ones)."""
    ours: dict[str, dict[str, Any]] = {}
    eddys: dict[str, EntityState] = {}
    wrong: list[str] = []
    for record in records:
        event = parsed(record)
        entity, at, raw, label, event_id = event[:5]
        state = eddys.setdefault(entity, EntityState())
        want = feature_vector(state, FEATURES, at, raw=raw)
        batch = fold_batch([event], ours)
        routed = (len(batch.examples), len(batch.snapshots), list(batch.states))
        if routed != ((0, 1) if label is None else (1, 0)) + ([entity],):
            wrong.append(f"{event_id}: routed {routed}")
            continue
        got = (batch.snapshots or batch.examples)[0][1]["features"]
        if got.keys() != want.keys() or not all(
            _same(got[name], value, tolerance) for name, value in want.items()
        ):
            wrong.append(f"{event_id}: {got} != {want}")
        apply_event(state, FEATURES, event_id, at, raw)
    if wrong:
        raise RuntimeError(f"{len(wrong)} floor vectors differ from Eddy's: {wrong[:3]}")


def _same(got: Any, want: Any, tolerance: float) -> bool:
    if isinstance(want, float) and isinstance(got, int | float):
        return math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance)
    return bool(got == want) and type(got) is type(want)


def contract_floor(settings: Settings, records: list[RawRecord]) -> float:
    """Events/s of a lean Python implementation (:func:`fold_batch`) and the writes."""
    return _timed(settings, records, compute=True)


def writes_floor(settings: Settings, records: list[RawRecord]) -> float:
    """Events/s of the writes alone, their bytes computed before the clock starts."""
    return _timed(settings, records, compute=False)


def _timed(settings: Settings, records: list[RawRecord], *, compute: bool) -> float:
    if settings.redis_cluster:
        raise ValueError("the floors write keys of many slots in one call: single-node Redis")
    size, prefix = settings.feature_batch_size, settings.topic_prefix
    batches = [records[start : start + size] for start in range(0, len(records), size)]
    states: dict[str, dict[str, Any]] = {}
    ready = [] if compute else [encode(fold_batch(map(parsed, b), states), prefix) for b in batches]
    topic = topic_name(Topic.TRAINING_EXAMPLES, prefix)
    redis = make_redis(settings)
    producer = make_producer(settings, linger_ms=PRODUCER_LINGER_MS)  # the feature worker's
    try:
        started = time.perf_counter()
        for i, batch in enumerate(batches):
            encoded = (
                encode(fold_batch(map(parsed, batch), states), prefix) if compute else ready[i]
            )
            write(encoded, redis, producer, topic)
        return len(records) / (time.perf_counter() - started)
    finally:
        producer.close()
        redis.close()
