"""The feature worker: a faust-streaming agent around :class:`FeaturePipeline`.

``eddy run features`` starts one; several share the ``events`` partitions through
their consumer group (the faust app id). The agent reads raw bytes (faust decodes
nothing, so no record can be skipped by a deserialisation error), takes batches, and
hands each to the pipeline in a worker thread. faust acknowledges a batch's events
only when the agent asks for the next batch, that is after ``handle`` returned and
every effect is durable; it then commits those offsets. Concurrency is 1: one batch at
a time per worker, in partition order.

Liveness (:mod:`eddy.services.ops.liveness`): the agent keeps the next offset to process per
partition (a batch's first offsets before it is handled, its last + 1 after), a timer
hands the positions of the partitions the worker owns to the watchdog every second, and
revoked partitions are forgotten. A batch stuck in the pipeline (Redis unreachable, say)
leaves the positions where they were while records keep arriving: stalled.

A batch that fails with anything but a transient outage (a bug, Redis refusing writes)
ends the process at once (:func:`~eddy.services.workers.faust_app.exit_before_acknowledging`): faust
would restart the agent in the same process, and ``take_events`` acknowledges the batch
in hand on its way out, so the batch would be committed unapplied. The supervisor
restarts the worker from the committed offsets instead. So does a deleted ``events``
topic (:class:`~eddy.streams.transport.clients.TopicWatch`, checked by a timer): faust would
otherwise wait for its partitions for ever, healthy to every probe.

On SIGTERM faust pauses fetching, waits until every event handed to the agent has been
processed and acknowledged (``stream_wait_empty``, on by default), commits, then stops;
``handle`` has waited for every send, so nothing is left in the producer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.liveness import Liveness, Positions
from eddy.services.workers.faust_app import exit_before_acknowledging, make_app
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.dead_letters.policy import retry_transient
from eddy.streams.features.compute import FeatureSet
from eddy.streams.features.pipeline import FeaturePipeline, LostRange
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.store.online import OnlineStore
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.store.state_cache import StateCache
from eddy.streams.transport.admin import committed_offsets
from eddy.streams.transport.clients import (
    TopicGone,
    TopicWatch,
    log_offsets,
    make_admin,
    make_consumer,
    make_producer,
    make_redis,
)
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import Topic, spec_for, topic_name

log = logging.getLogger(__name__)

# Batches wait for all in-sync replicas; a short linger lets one batch share requests.
PRODUCER_LINGER_MS = 5
REBUILD_POLL_MS = 500
OBSERVE_EVERY_S = 1.0


def app_id(settings: Settings) -> str:
    return group_id(settings.topic_prefix, "features", settings.model_name)


def build_pipeline(
    settings: Settings,
    fs: FeatureSet,
    schema: RawSchema | None,
    *,
    side_outputs: bool = True,
    snapshots: bool | None = None,
    repairs: bool = False,
) -> FeaturePipeline:
    """The worker's pipeline over the deployment's features ``fs`` and raw fields
    ``schema`` (:mod:`eddy.services.project.deployment`); ``repairs``: it re-applies
    what the store lost. ``side_outputs=False`` for re-applying from Kafka, with
    snapshots of the last label window recorded only when ``snapshots`` (default: as
    ``side_outputs``)."""

    redis = make_redis(settings)
    snapshot_store = (
        SnapshotStore(redis, settings.topic_prefix, settings.label_window_s)
        if settings.label_window_s and (side_outputs if snapshots is None else snapshots)
        else None
    )
    return FeaturePipeline(
        fs=fs,
        store=OnlineStore(
            redis, settings.topic_prefix, settings.feature_ttl_s, states=fs.state_fingerprint()
        ),
        snapshot_store=snapshot_store,
        producer=make_producer(settings, linger_ms=PRODUCER_LINGER_MS),
        dead_letter_topic=topic_name(Topic.DEAD_LETTER, settings.topic_prefix),
        examples_topic=topic_name(Topic.TRAINING_EXAMPLES, settings.topic_prefix),
        max_future=timedelta(seconds=settings.max_event_time_skew_s),
        schema=schema,
        side_outputs=side_outputs,
        snapshot_horizon_s=None if side_outputs else settings.label_window_s,
        repair=functools.partial(repair, settings, fs=fs, schema=schema) if repairs else None,
        cache=StateCache(settings.feature_cache_entities) if repairs else None,
    )


def count_batch(records: list[RawRecord], counts: Counter[str], seconds: float) -> None:
    """Metrics and the debug log line of a batch the pipeline handled (either engine)."""
    metrics.BATCH_SECONDS.labels("features").observe(seconds)
    for verdict in ("new", "duplicate", "too_late", "invalid"):
        metrics.EVENTS.labels(verdict).inc(counts[verdict])
    metrics.DEAD_LETTERS.labels("events").inc(counts["invalid"])
    log.debug(
        "batch applied",
        extra={
            "records": len(records),
            "first": f"{records[0].topic}[{records[0].partition}]@{records[0].offset}",
            **counts,
        },
    )


def build_app(settings: Settings, fs: FeatureSet, schema: RawSchema | None) -> faust.App:
    app = make_app(settings, app_id(settings))
    events_topic = topic_name(Topic.EVENTS, settings.topic_prefix)
    events = app.topic(events_topic, key_serializer="raw", value_serializer="raw")
    pipeline = build_pipeline(settings, fs, schema, repairs=True)
    wait_s = settings.feature_batch_wait_ms / 1000
    liveness = Liveness(settings, "features")
    positions = Positions()

    @app.agent(events, concurrency=1)
    async def ingest(stream: Any) -> None:
        async for batch in stream.take_events(settings.feature_batch_size, within=wait_s):
            try:
                records = [RawRecord.of(event.message) for event in batch]
                offsets = [(r.topic, r.partition, r.offset) for r in records]
                positions.starting(offsets)
                started = time.perf_counter()
                counts = await asyncio.to_thread(
                    retry_transient, functools.partial(pipeline.handle, records), "feature batch"
                )
            except Exception:
                exit_before_acknowledging("a feature batch failed")
            positions.finished(offsets)
            count_batch(records, counts, time.perf_counter() - started)

    topic_watch: list[TopicWatch] = []  # started with the app, not when it is built

    async def watch() -> None:
        liveness.start()
        topic_watch.append(TopicWatch.start(settings, [events_topic]))

    async def check_topic() -> None:
        try:
            for each in topic_watch:
                each.check()
        except TopicGone:
            exit_before_acknowledging("the events topic was deleted")

    async def observe() -> None:
        try:
            owned = [tp for tp in app.consumer.assignment() if tp.topic == events_topic]
        except ConsumerNotStarted:
            owned = []
        liveness.observe(positions.of(owned))

    async def forget(*app_and_revoked: Any, **_: Any) -> None:
        _app, revoked = app_and_revoked
        positions.forget(revoked)
        pipeline.forget_cached()

    app.task(watch)
    app.timer(OBSERVE_EVERY_S)(observe)
    app.timer(settings.topic_check_s)(check_topic)
    app.on_partitions_revoked.connect(forget)
    return app


def rebuild(settings: Settings, fs: FeatureSet, schema: RawSchema | None) -> Counter[str]:
    """Re-apply the ``events`` the feature workers have processed to the online store
    (after a Redis loss, or for new definitions' states: ``eddy apply``).

    Reads each partition from the earliest retained offset up to the feature workers'
    committed offset, outside any consumer group, through the same pipeline as the
    worker but without side outputs: the dead letters, training examples and snapshots
    of those events were sent the first time (and events whose raw fields do not fit
    ``schema`` are left out again). It stops there because an event folded without side
    outputs would be a duplicate to the worker that reads it next, which then sends
    nothing for it: the worker processes what comes after, as new, and repairs what it
    finds missing before it. Events the store already holds are recognised by id, so a
    rebuild over intact state is a no-op.
    """
    topic = spec_for(Topic.EVENTS, prefix=settings.topic_prefix, partitions=settings.partitions)
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    admin = make_admin(settings)
    try:
        committed = committed_offsets(admin, app_id(settings))
    finally:
        admin.close()
    processed = {tp: (0, committed.get(tp, 0)) for tp in partitions}
    pipeline = build_pipeline(settings, fs, schema, side_outputs=False)
    try:
        return _reapply(settings, pipeline, partitions, processed)
    finally:
        pipeline.close()


def repair(
    settings: Settings, losses: list[LostRange], *, fs: FeatureSet, schema: RawSchema | None
) -> None:
    """Re-apply the offsets the online store lost (found by the worker's pipeline before
    a batch) from the retained ``events`` topic: states, and snapshots of the last label
    window; no side outputs (they were sent the first time). Events the store still
    holds are recognised by id and skipped."""
    metrics.STORE_LOSSES.inc()
    log.error(
        "the online store lost writes it had acknowledged; re-applying them from Kafka",
        extra={"lost": [f"{r.topic}[{r.partition}]@{r.first}..{r.last}" for r in losses]},
    )
    pipeline = build_pipeline(settings, fs, schema, side_outputs=False, snapshots=True)
    partitions = [TopicPartition(r.topic, r.partition) for r in losses]
    spans = {TopicPartition(r.topic, r.partition): (r.first, r.last + 1) for r in losses}
    try:
        totals = _reapply(settings, pipeline, partitions, spans)
    finally:
        pipeline.close()
    metrics.EVENTS_REPAIRED.inc(totals["new"])
    log.warning("online store repaired", extra=dict(totals))


def _reapply(
    settings: Settings,
    pipeline: FeaturePipeline,
    partitions: list[TopicPartition],
    spans: dict[TopicPartition, tuple[int, int]],
) -> Counter[str]:
    """Feed ``pipeline`` each partition's records from ``spans`` (first, end exclusive;
    a partition without one: from the earliest retained offset to the end as of now),
    outside any consumer group."""
    consumer = make_consumer(settings, group_id=None, max_poll_records=settings.feature_batch_size)
    totals: Counter[str] = Counter()
    try:
        consumer.assign(partitions)
        earliest = log_offsets(consumer, partitions, end=False)
        latest = log_offsets(consumer, partitions)
        # Never past the partition's end: a topic re-created since has fewer offsets.
        end = {tp: min(spans.get(tp, (0, latest[tp]))[1], latest[tp]) for tp in partitions}
        for tp in partitions:
            consumer.seek(tp, max(spans.get(tp, (0, 0))[0], earliest[tp]))
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            polled = consumer.poll(timeout_ms=REBUILD_POLL_MS)
            records = [
                RawRecord.of(r)
                for tp_records in polled.values()
                for r in tp_records
                if r.offset < end[TopicPartition(r.topic, r.partition)]
            ]
            if records:
                totals += retry_transient(functools.partial(pipeline.handle, records), "re-apply")
    finally:
        consumer.close()
    return totals
