"""The feature worker on Eddy's own consumer runtime: the default engine.

``eddy run features`` hands batches of raw ``events`` records to the one
:class:`~eddy.streams.features.pipeline.FeaturePipeline`. Two engines can consume them
(``EDDY_FEATURE_ENGINE``): this one, a kafka-python consumer turned by the
:class:`~eddy.services.ops.poll_loop.PollLoop` every other worker uses, and a
faust-streaming agent (:mod:`eddy.services.workers.features`). This one is the default
because faust's per-event stream costs more than the pipeline's own work: a faust agent
that does nothing at all reads about 10,000 events/s on two cores, so no feature agent
can go past that, while this loop hands a polled batch to the pipeline as it is (9,482
against 4,423 events/s, ``docs/benchmarks.md``, measured in the same run).

The delivery rules are the faust agent's: one batch at a time, offsets committed only
after :meth:`FeaturePipeline.handle` returned (every effect durable), never auto-commit;
a batch that fails with anything but a transient outage ends the worker before its
offsets are committed, and the supervisor restarts it from them. On SIGTERM the loop
finishes the batch in hand, commits it and stops. Both engines use the same consumer
group, but a group cannot mix them (faust brings its own partition assignor): stop a
deployment's feature workers before switching engines.

The pipeline keeps the states it wrote (:mod:`~eddy.streams.store.state_cache`); when
the group moves partitions, it forgets them, since another worker may write those
entities next.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.ops.collector import settle_collector
from eddy.services.ops.liveness import Liveness
from eddy.services.ops.poll_loop import Consumed, PollLoop
from eddy.services.workers.faust_app import EXIT_FAILED_BATCH
from eddy.services.workers.features import app_id, build_pipeline, count_batch
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.dead_letters.policy import retry_transient
from eddy.streams.features.compute import FeatureSet
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.transport.clients import (
    TopicGone,
    commit_unless_refused,
    make_consumer,
    subscribe,
)
from eddy.streams.transport.topics import Topic, topic_name

log = logging.getLogger(__name__)

POLL_MS = 500


class FeatureConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumes ``events`` in the feature workers' group and folds each batch."""

    def __init__(self, settings: Settings, fs: FeatureSet, schema: RawSchema | None) -> None:
        self.events_topic = topic_name(Topic.EVENTS, settings.topic_prefix)
        self.pipeline = build_pipeline(settings, fs, schema, repairs=True)
        self.consumer = make_consumer(
            settings,
            group_id=app_id(settings),
            max_poll_records=settings.feature_batch_size,
            fetch_max_wait_ms=settings.feature_batch_wait_ms,
        )
        # The pipeline decodes the bytes and sends its own dead letters: the runtime
        # refuses no record, it only shares the pipeline's sink.
        self.loop = PollLoop(
            settings,
            self.consumer,
            {self.events_topic: RawRecord.of},
            self.pipeline.dead_letters,
            Liveness(settings, "features"),
            poll_ms=POLL_MS,
        )

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.pipeline.forget_cached()

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.pipeline.forget_cached()

    def run(self) -> None:
        """Until SIGTERM/SIGINT; raises (leaving the batch uncommitted) what a batch
        failed with, transient outages apart."""
        subscribe(self.consumer, [self.events_topic], listener=self)
        settle_collector()
        try:
            self.loop.run(self._fold_and_commit)
        finally:
            self.consumer.close(autocommit=False)
            self.pipeline.close()

    def stop(self, *_: Any) -> None:
        self.loop.stop()

    def _fold_and_commit(self, batch: list[Consumed]) -> None:
        records: list[RawRecord] = [consumed.message for consumed in batch]
        started = time.perf_counter()
        counts = retry_transient(functools.partial(self.pipeline.handle, records), "feature batch")
        count_batch(records, counts, time.perf_counter() - started)
        commit_unless_refused(self.consumer)  # refused: redelivered, recognised by id


def run(settings: Settings, fs: FeatureSet, schema: RawSchema | None) -> None:
    """``eddy run features`` with the poll engine: a failed batch or a deleted
    ``events`` topic ends it with the faust engine's exit code
    (:data:`~eddy.services.workers.faust_app.EXIT_FAILED_BATCH`), nothing committed past
    the last batch applied."""
    try:
        FeatureConsumer(settings, fs, schema).run()
    except TopicGone:
        log.critical("the events topic was deleted", exc_info=True)
        raise SystemExit(EXIT_FAILED_BATCH) from None
    except Exception:
        log.critical("a feature batch failed; its offsets are not committed", exc_info=True)
        raise SystemExit(EXIT_FAILED_BATCH) from None
