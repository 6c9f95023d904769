"""The learner process: training examples and late labels in, drift alerts and checkpoints out.

``eddy run learner`` consumes ``training-examples`` and ``labels`` in a consumer group
whose assignor gives every partition to one member: one model has one writer, and any
further learner process is a hot standby that takes over on a rebalance (restoring the
newest checkpoint first).

Exactly-once learning rests on the checkpoint, not on Kafka's committed offsets: every
``EDDY_CHECKPOINT_EVERY`` examples or ``EDDY_CHECKPOINT_INTERVAL_S`` seconds (and on a
clean stop) the learner seals its whole state *with the offsets it has consumed* into one
file, atomically; never so often that checkpoints take more than
``EDDY_CHECKPOINT_MAX_SHARE`` of its time. On start or on assignment it restores that
file and seeks to those offsets, so an example after the checkpoint is learned again
exactly once and one before it never. Committed offsets follow the checkpoints, for lag
monitoring only.

SIGTERM (or SIGINT) lets the batch in hand finish (its alerts and late-labelled examples
sent and acknowledged), then writes a final checkpoint and commits it: a restart seeks to
exactly where this process stopped and reads nothing twice.

Reading: by default a reader process (:mod:`eddy.services.ops.reader_process`) reads and
decodes the three topics while this one learns; this process's consumer stays the
group's member, with its partitions paused, and each assignment tells the reader process
where to start (the restored checkpoint's offsets). ``EDDY_LEARNER_READER_PROCESS=false``
reads on this process's own thread (:class:`~eddy.services.ops.poll_loop.ConsumerSource`).

Liveness (:mod:`eddy.services.ops.liveness`): before each poll, when everything polled so far is
learned, the learner hands its positions (the next offset after what it has learned) to
the watchdog, so a learner stuck inside a batch or a checkpoint, or one whose reader
process stopped delivering, while records wait reports unhealthy and exits for a restart.
A hot standby owns nothing: healthy.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment_v0,
    ConsumerProtocolMemberMetadata_v0,
)

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.collector import settle_collector
from eddy.services.ops.liveness import Liveness
from eddy.services.ops.poll_loop import (
    Consumed,
    ConsumerSource,
    DecoderFactory,
    PollLoop,
)
from eddy.services.ops.reader_process import ReaderFailed, ReaderProcess
from eddy.services.workers.learner_intake import learner_decoders
from eddy.streams.dead_letters.policy import Action, action_for, retry_transient, wait_out_redis
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.drift.estimate import Calibration, reference_accuracy
from eddy.streams.drift.served import ServedOutcome
from eddy.streams.learning.checkpoints import CheckpointStore, LearnerState
from eddy.streams.learning.intake import Example
from eddy.streams.learning.label_join import joined_example
from eddy.streams.learning.learner import Item, Learner, LearnerConfig, Position
from eddy.streams.learning.models import (
    PROJECT_KIND,
    OnlineModel,
    binary_model_of,
    label_rule,
)
from eddy.streams.messages.contracts import (
    DriftAlert,
    Label,
    ServedAnswers,
    TrainingExample,
)
from eddy.streams.messages.validation import encode
from eddy.streams.store.estimates import PerformanceReport, save_reports
from eddy.streams.store.recent_ids import RecentIds
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import (
    make_consumer,
    make_producer,
    make_redis,
    subscribe,
)
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import Topic, topic_name

log = logging.getLogger(__name__)

# The longest wait of a poll; never longer than EDDY_CHECKPOINT_INTERVAL_S (poll_ms).
POLL_MS = 500
# The learner reads two topics; while one has records buffered client-side, a fetch
# asks only for the other, and an idle ``labels`` topic would hold each such fetch for
# the broker's default 500 ms. A short wait keeps a busy examples topic flowing.
FETCH_MAX_WAIT_MS = 20
SEND_TIMEOUT_S = 60.0


class AllToOneAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Every partition to the first member (by member id): one writer, the rest standby."""

    name = "eddy-all-to-one"
    version = 0

    @classmethod
    def assign(cls, cluster: Any, members: dict[str, Any]) -> dict[str, Any]:
        """``members``: member id -> its subscription (``.topics``)."""
        chosen = min(members)
        topics = sorted({t for subscription in members.values() for t in subscription.topics})
        everything = [(t, sorted(cluster.partitions_for_topic(t) or [])) for t in topics]
        return {
            member_id: ConsumerProtocolMemberAssignment_v0(
                cls.version, everything if member_id == chosen else [], b""
            )
            for member_id in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> Any:
        return ConsumerProtocolMemberMetadata_v0(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: Any) -> None:
        return None


SnapshotHook = Callable[["LearnerState", Path], None]


class LearnerWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    """``feature_set``: the fingerprint of the deployment's features, which the examples
    it joins from late labels and snapshots carry. ``on_snapshot`` (the registry, wired by
    the CLI) receives the state every ``EDDY_SNAPSHOT_EVERY`` examples, right after a
    checkpoint made it durable. ``online_model``: builds the project's online model
    (:func:`~eddy.services.config.learner.online_model_factory`) for a fresh start;
    None for the built-in kind ``config`` names."""

    def __init__(
        self,
        settings: Settings,
        config: LearnerConfig,
        *,
        feature_set: str,
        on_snapshot: SnapshotHook | None = None,
        online_model: Callable[[], OnlineModel] | None = None,
        calibration_of: Callable[[str], Calibration | None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.online_model = online_model
        self.feature_set = feature_set
        self.on_snapshot = on_snapshot
        self.calibration_of = calibration_of
        prefix = settings.topic_prefix
        self.examples_topic = topic_name(Topic.TRAINING_EXAMPLES, prefix)
        self.labels_topic = topic_name(Topic.LABELS, prefix)
        self.alerts_topic = topic_name(Topic.DRIFT_ALERTS, prefix)
        self.served_topic = topic_name(Topic.SERVED_ANSWERS, prefix)
        key = settings.deployment_key()
        self.checkpoints = CheckpointStore(settings.data_dir / "checkpoints" / config.model, key)
        self.redis = make_redis(settings)
        self.snapshots = SnapshotStore(self.redis, prefix, settings.label_window_s)
        self.producer = make_producer(settings)
        self.dead_letters = DeadLetterSink(
            self.producer,
            topic_name(Topic.DEAD_LETTER, prefix),
            topic_prefix=prefix,
            counted=metrics.count_dead_letters,
        )
        reading = {
            "max_poll_records": settings.feature_batch_size,
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        }
        self.consumer = make_consumer(
            settings,
            group_id=group_id(prefix, "learner", config.model),
            partition_assignment_strategy=[AllToOneAssignor],
            **reading,
        )
        self.state = self._restore()
        decoders = self._decoders()()
        # Reading and decoding in a second process, or on this thread (module doc).
        self.reader = (
            ReaderProcess(settings, self.consumer, **reading)
            if settings.learner_reader_process
            else None
        )
        self.source: ConsumerSource | ReaderProcess = self.reader or ConsumerSource(
            self.consumer, decoders
        )
        self.loop = PollLoop(
            settings,
            self.consumer,
            decoders,
            self.dead_letters,
            Liveness(settings, "learner"),
            poll_ms=poll_ms(settings),
            kept_error=lambda: self._listener_error,
            send_timeout_s=SEND_TIMEOUT_S,
            source=self.source,
        )
        self._joined: list[TrainingExample] = []
        self._served: list[ServedOutcome] = []  # labelled answers of served versions
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_cost_s = 0.0  # how long the last checkpoint kept the learner
        # Checkpoints are written on this thread (see checkpoint): the one being written,
        # with the offsets it seals and whether to commit them once it is durable.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._writing: tuple[Future[Path], dict[tuple[str, int], int], bool] | None = None
        self._commit_owed = False  # see on_partitions_assigned
        # Whether the group has given this worker its partitions: between a revocation and
        # the next assignment (a join can take several polls) it handles nothing.
        self._owned = False
        self._listener_error: Exception | None = None  # see _listener_errors_kept

    # --- consumer-group callbacks -------------------------------------------------

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Runs inside poll, as the group rebalances: the checkpoint file is what matters;
        # whoever owns the partitions next restores it and commits its offsets.
        if revoked:
            self._owned = False  # until an assignment: nothing is handled (process)
            with self._listener_errors_kept():
                self.checkpoint(commit=False)
                self.source.assign({}, self._decoders())  # nothing read before is handled

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        with self._listener_errors_kept():
            self._assigned(assigned)

    @contextlib.contextmanager
    def _listener_errors_kept(self) -> Iterator[None]:
        """kafka-python logs what a rebalance callback raises and carries on: a learner
        whose restore failed would learn on from a state it does not own. The error is
        kept and raised by the poll loop instead (:meth:`run`), ending the worker."""
        try:
            yield
        except Exception as exc:
            self._listener_error = exc

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        self._written(block=True, commit=False)  # the newest checkpoint is the one to restore
        self.state = self._restore()
        # The restored offsets may be ahead of the group's (sealed in a rebalance or
        # before a crash): the owner commits them at its next turn, new records or not,
        # or the group's lag says that work waits which was done. A standby, nothing.
        self._commit_owed = self._owned = bool(assigned)
        offsets = self.state.offsets
        starts = {
            (tp.topic, tp.partition): offsets.get((tp.topic, tp.partition)) for tp in assigned
        }
        self.source.assign(starts, self._decoders())
        log.info(
            "assigned",
            extra={
                "partitions": len(assigned),
                "model_version": self.state.learner.version,
                "examples": self.state.learner.examples,
            },
        )

    # --- main loop ------------------------------------------------------------------

    def run(self) -> None:
        subscribe(
            self.consumer,
            [self.examples_topic, self.labels_topic, self.served_topic],
            listener=self,
        )
        settle_collector()  # the process's own loop from here on: see there
        # A batch that raises may have moved the state's offsets past records it never
        # learned: then no final checkpoint, the restart restores the last good one.
        try:
            if self.reader is not None:
                self.reader.start()
            self.loop.run(self.process, self._after_batch, empty_batches=True)
        except ReaderFailed:
            # Raised between batches, so the state is whole: saved, a restart repeats less.
            if self._owned:
                self.checkpoint(commit=False)
            raise
        finally:
            if self.reader is not None:
                self.reader.close()
        # The loop (and the watchdog with it) stopped first: a final checkpoint longer
        # than the stall timeout is no stall.
        try:
            if self._owned:
                self.checkpoint()
            else:
                self._written(block=True)
        finally:
            self._writer.shutdown()  # a write still going (the final checkpoint raised) ends
            self.consumer.close(autocommit=False)
            self.producer.close()

    def _after_batch(self) -> None:
        self._written(block=False)
        if self._checkpoint_due():
            # Redis or disk away: wait it out while the watchdog judges the stall.
            retry_transient(lambda: self.checkpoint(wait=False), "checkpoint")
        elif self._commit_owed and self._since_checkpoint == 0 and self._writing is None:
            # only sealed offsets: commits follow effects
            self._commit(self.state.offsets, wait=False)

    def stop(self) -> None:
        """Stop after the batch in hand, with a final checkpoint."""
        self.loop.stop()

    def process(self, batch: list[Consumed]) -> None:
        """Learn from a polled batch in order; alerts are sent before the next checkpoint.

        A refused record (dead-lettered by the runtime already) only moves its offset: a
        checkpoint then keeps it from being refused again. A worker that owns no partition
        (a standby, or one whose partitions were revoked) handles nothing: not even its
        pending labels, which belong to the owner's state."""
        if not self._owned:
            return
        self._joined, self._served = [], []
        items: list[Item] = []
        examples: list[tuple[Example, Position]] = []
        digests: list[int] = []  # of their ids, computed where they were decoded
        feature_sets: set[str] = set()
        labels: list[tuple[str, Label, Position]] = []
        answered: list[ServedAnswers] = []
        offsets = self.state.offsets
        for consumed in batch:
            record = consumed.record
            offsets[(record.topic, record.partition)] = record.offset + 1
            if consumed.refused is not None:
                self._since_checkpoint += 1
            elif record.topic == self.examples_topic:
                example, id_digest = consumed.message
                # Not our own late-label join (published for retraining, learned already).
                if example.source_topic != self.labels_topic:
                    at = Position(record.topic, record.partition, record.offset, example.event_time)
                    examples.append((example, at))
                    digests.append(id_digest)
            elif record.topic == self.served_topic:
                self._since_checkpoint += 1
                if consumed.message.model == self.config.model:
                    answered.append(consumed.message)
            else:
                label: Label = consumed.message
                at = Position(
                    record.topic, record.partition, record.offset, record.timestamp / 1000
                )
                labels.append((label.event_id or label.request_id or "", label, at))
        # Nor one learned before: the dedup memory remembers the batch's ids in one go.
        fresh = self.state.remember_digests(digests)
        for (example, at), new in zip(examples, fresh, strict=True):
            if new:
                items.append((example.features, example.label, at))
                feature_sets.add(example.feature_set)
        joined = self._join_labels(labels)
        if joined:
            feature_sets.add(self.feature_set)
        items += joined
        self.state.note_learned(items, feature_sets)
        # The served answers first: the online learner's detections are checked against
        # them (Learner._served_confirms), and this batch's answers may cover the span.
        alerts = self.state.learner.watch_served(self._served)
        for served in answered:
            if served.values:
                alerts += self.state.learner.watch_regression(
                    served.model_version, list(zip(served.inputs, served.values, strict=True))
                )
            else:
                self._calibrate(served.model_version)
                alerts += self.state.learner.watch_answers(served.model_version, served.positives)
        alerts += self.state.learner.learn_alerts(items)
        self._since_checkpoint += len(items)
        metrics.EXAMPLES_LEARNED.inc(len(items))
        self._send(alerts)
        for alert in alerts:
            metrics.DRIFT_ALERTS.labels(alert.kind.value).inc()

    def _decoders(self) -> DecoderFactory:
        """The decoders of the three topics, for the model this worker runs now."""
        model = self.state.learner.model
        # What the model is matters only for a project's (a built-in kind says it all).
        binary = binary_model_of(model.estimator) if self.config.kind == PROJECT_KIND else None
        rule = label_rule(self.config.kind, model.task, binary)
        topics = (self.examples_topic, self.labels_topic, self.served_topic)
        return functools.partial(learner_decoders, topics, rule)

    def _calibrate(self, version: str) -> None:
        """Seed a version the estimate meets for the first time with the calibration
        its training kept (its holdout), when the registry has one."""
        if self.calibration_of is None or self.state.learner.estimates.knows(version):
            return
        table = self.calibration_of(version)
        if table is not None:
            self.state.learner.estimates.seed(version, table)

    def _join_labels(self, labels: list[tuple[str, Label, Position]]) -> list[Item]:
        """Join new and still-pending labels to the snapshots of what was served."""
        now = time.time()
        for record_id, label, where in labels:
            self.state.pending_labels.setdefault(record_id, (label, where, now))
        if not self.state.pending_labels:
            return []
        # A Redis outage (a Cluster master failing over) is waited out, for a while.
        found = wait_out_redis(
            lambda: self.snapshots.fetch(self.state.pending_labels),
            "snapshot fetch",
            patience_s=self.settings.redis_outage_patience_s,
            stopping=lambda: self.loop.stopping,
        )
        joined: list[Item] = []
        for record_id in list(self.state.pending_labels):
            label, where, first_seen = self.state.pending_labels[record_id]
            snapshot = found.get(record_id)
            if snapshot is None:
                if now - first_seen > self.settings.label_wait_s:
                    del self.state.pending_labels[record_id]
                    self.state.labels_unmatched += 1
                    self._since_checkpoint += 1  # a state change worth saving too
                continue
            del self.state.pending_labels[record_id]
            if not self.state.remember(record_id):
                continue
            self.state.labels_joined += 1
            self.state.label_latency_s_total += max(0.0, label.event_time.timestamp() - snapshot.at)
            example, at = joined_example(
                record_id, label, snapshot, where, feature_set=self.feature_set
            )
            joined.append((snapshot.features, label.label, at))
            if snapshot.served is not None:
                answer = snapshot.served
                self._served.append(
                    ServedOutcome(
                        answer.version,
                        answer.prediction,
                        answer.positive,
                        label.label,
                        snapshot.at,
                        snapshot.features,
                    )
                )
            self._joined.append(example)
        return joined

    def _send(self, alerts: list[DriftAlert]) -> None:
        futures = [
            self.producer.send(self.alerts_topic, key=a.model.encode(), value=encode(a))
            for a in alerts
        ]
        joined = [(e.example_id, e.label) for e in self._joined]
        wait_out_redis(
            lambda: self.snapshots.record_labels(joined),
            "joined labels",
            patience_s=self.settings.redis_outage_patience_s,
            stopping=lambda: self.loop.stopping,
        )
        futures += [  # late-labelled examples join the retraining window
            self.producer.send(self.examples_topic, key=e.entity_id.encode(), value=encode(e))
            for e in self._joined
        ]
        for alert in alerts:
            log.warning(
                "drift alert",
                extra={
                    "alert_id": alert.alert_id,
                    "kind": alert.kind.value,
                    "feature": alert.feature,
                    "model_version": alert.model_version,
                },
            )
        if futures:
            self.producer.flush(timeout=SEND_TIMEOUT_S)
            for future in futures:
                future.get(timeout=SEND_TIMEOUT_S)

    # --- checkpoints ----------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        since = time.monotonic() - self._last_checkpoint
        return checkpoint_due(self._since_checkpoint, since, self._checkpoint_cost_s, self.settings)

    def checkpoint(self, *, commit: bool = True, wait: bool = True) -> None:
        """Seal the state with its offsets; once that is durable, commit those offsets
        (for lag reporting: the next commit supersedes one not waited for).

        With ``wait`` (a stop, a revoke) the checkpoint is durable and its offsets
        committed when this returns. Without, the state is captured here and made
        durable (signed, written, synced: most of a checkpoint's time, and none of it
        needs the live state) by the writer thread while the learner learns on; its
        offsets are committed at the first turn after. One checkpoint is written at a
        time: the next one first waits for this one, and raises what writing it raised.
        A snapshot for the registry needs its checkpoint on disk: then this waits too.
        """
        started = time.monotonic()
        self._written(block=True, commit=commit)
        recorded = self.snapshots.recorded()
        if recorded and self.state.labels_joined:
            self.state.label_coverage = self.state.labels_joined / recorded
        sealed = self.checkpoints.seal(self.state)
        offsets = dict(self.state.offsets)
        self._since_checkpoint = 0
        snapshot = self.on_snapshot is not None and self._snapshot_due()
        if wait or snapshot:
            self.checkpoints.write(sealed)
            if snapshot and self.on_snapshot is not None:
                self.on_snapshot(self.state, sealed.path)
                self.state.snapshot_taken()
            if commit:
                self._commit(offsets, wait=wait)
        else:
            self._writing = (self._writer.submit(self.checkpoints.write, sealed), offsets, commit)
        self._last_checkpoint = time.monotonic()
        self._checkpoint_cost_s = self._last_checkpoint - started
        self._report_metrics()
        log.info(
            "checkpoint",
            extra={
                "path": str(sealed.path),
                "model_version": self.state.learner.version,
                "examples": self.state.learner.examples,
                **self.state.learner.metrics.report(),
            },
        )

    def _written(self, *, block: bool, commit: bool = True) -> None:
        """Once the checkpoint being written is durable, commit its offsets (unless told
        not to: in a rebalance, whoever owns the partitions next commits); raise what
        writing it raised (then nothing past the last durable checkpoint is committed).
        ``block``: wait for it; else only look."""
        if self._writing is None:
            return
        future, offsets, committing = self._writing
        if not block and not future.done():
            return
        self._writing = None
        future.result()
        if committing and commit:
            self._commit(offsets, wait=False)

    def _commit(self, offsets: dict[tuple[str, int], int], *, wait: bool) -> None:
        """Commit sealed offsets (lag reporting only; the checkpoint is the truth)."""
        self._commit_owed = False
        committed = {
            TopicPartition(topic, partition): _offset_meta(offset)
            for (topic, partition), offset in offsets.items()
        }
        if not committed:
            return
        try:
            if wait:
                self.consumer.commit(offsets=committed)
            else:
                self.consumer.commit_async(offsets=committed, callback=_commit_done)
        except Exception as exc:
            log.warning("offset commit failed", extra={"error": repr(exc)})

    def _report_metrics(self) -> None:
        for name, value in self.state.learner.metrics.report().items():
            metrics.MODEL_METRIC.labels(name).set(value)
        for slice_name, figures in self.state.learner.slice_report().items():
            for name, value in figures.items():
                metrics.SLICE_METRIC.labels(slice_name, name).set(value)
        for feature, tests in self.state.learner.data_drift.statistics().items():
            for test, value in tests.items():
                metrics.DRIFT_STATISTIC.labels(feature, test).set(value)
        metrics.DRIFT_UNTRACKED.set(self.state.learner.data_drift.untracked)
        metrics.CONCEPT_UNCONFIRMED.set(self.state.learner.unconfirmed)
        self._report_performance()
        joined = self.state.labels_joined
        if joined:
            metrics.LABEL_LATENCY.set(self.state.label_latency_s_total / joined)
        if self.state.label_coverage is not None:
            metrics.LABEL_COVERAGE.set(self.state.label_coverage)

    def _report_performance(self) -> None:
        """Each watched version's estimate and realized figures: to Prometheus, and to
        Redis for ``eddy models show`` and the status API (an outage skips the write:
        the next checkpoint writes newer figures)."""
        reports = performance_reports(self.state.learner, time.time())
        if not reports:
            return
        for report in reports:
            for metric, figure, value in report.figures():
                metrics.SERVED_PERFORMANCE.labels(
                    self.config.model, report.version, metric, figure
                ).set(value)
        try:
            save_reports(self.redis, self.settings.topic_prefix, self.config.model, reports)
        except Exception as exc:
            if action_for(exc) is not Action.RETRY:
                raise
            log.warning("performance reports not written", extra={"error": repr(exc)})

    def _snapshot_due(self) -> bool:
        every = self.settings.snapshot_every
        learned = self.state.learner.examples - self.state.snapshot_examples
        return every > 0 and learned >= every

    def _restore(self) -> LearnerState:
        limit = self.settings.learner_dedup_ids
        restored = self.checkpoints.latest()
        if restored is not None and restored.learner.config == self.config:
            restored.learned = restored_dedup_memory(restored.learned, limit)
            # What does not make the learned state another one (the features data drift
            # leaves out, what drift alone asks for) comes from today's settings.
            restored.learner.config = self.config
            return restored
        if restored is not None:
            log.warning("checkpoint is for another configuration; starting fresh")
        return LearnerState(Learner(self.config, self.online_model), RecentIds(limit))


def performance_reports(learner: Learner, now: float) -> list[PerformanceReport]:
    """What the learner knows of each served version it watches: its latest estimate
    (once a window is full) and its realized rolling figures (once labels joined): a
    classifier's accuracy and log loss, a regressor's MAE."""
    band_z = learner.config.estimate.band_z
    watched: list[tuple[str, dict[str, float], float | None, float, tuple[str, ...]]] = [
        (
            version,
            {} if w.latest is None else w.latest.as_dict(band_z),
            reference_accuracy(w),
            w.calibration.labelled,
            ("accuracy", "log_loss"),
        )
        for version, w in learner.estimates.versions.items()
    ] + [
        (
            version,
            {} if w.latest is None else w.latest.as_dict(band_z),
            None,
            float(w.loss.learned),
            ("mae",),
        )
        for version, w in learner.losses.versions.items()
    ]
    reports = []
    for version, estimated, reference, calibrated_on, realizable in watched:
        served = learner.served.metrics_of(version)
        realized = {
            metric: served[f"rolling_{metric}"]
            for metric in realizable
            if math.isfinite(served.get(f"rolling_{metric}", math.nan))
        }
        if not estimated and not realized:
            continue
        reports.append(
            PerformanceReport(
                version=version,
                estimated={k: v for k, v in estimated.items() if math.isfinite(v)},
                reference_accuracy=reference,
                realized=realized,
                calibrated_on=calibrated_on,
                at=now,
            )
        )
    return reports


def poll_ms(settings: Settings) -> int:
    """How long a poll waits for records: :data:`POLL_MS`, or the checkpoint interval
    when that is shorter. Checkpoints are taken between polls, so a poll that waited
    longer would hold the last examples' checkpoint back past the interval once the
    stream goes quiet.

    >>> poll_ms(Settings(checkpoint_interval_s=10.0)), poll_ms(Settings(checkpoint_interval_s=0.2))
    (500, 200)
    """
    return max(1, min(POLL_MS, round(settings.checkpoint_interval_s * 1000)))


def checkpoint_due(unsaved: int, since_s: float, last_cost_s: float, settings: Settings) -> bool:
    """Whether ``unsaved`` changes, ``since_s`` after the last checkpoint (which took
    ``last_cost_s``), call for the next one.

    The cadence settings ask; the share bounds them: a state that grew slow to seal
    (a big model, a busy machine) is sealed less often rather than leaving the learner
    no time to learn. A crash then replays more, and still learns each example once.

    >>> paced = Settings(checkpoint_every=10, checkpoint_interval_s=1.0, checkpoint_max_share=0.25)
    >>> checkpoint_due(10, 0.1, 0.01, paced), checkpoint_due(3, 2.0, 0.01, paced)
    (True, True)
    >>> checkpoint_due(10, 1.0, 0.5, paced), checkpoint_due(10, 1.6, 0.5, paced)
    (False, True)
    """
    if unsaved == 0:
        return False
    spacing = last_cost_s * (1 - settings.checkpoint_max_share) / settings.checkpoint_max_share
    if since_s < spacing:
        return False
    return unsaved >= settings.checkpoint_every or since_s >= settings.checkpoint_interval_s


def restored_dedup_memory(learned: RecentIds | Iterable[str], limit: int) -> RecentIds:
    """The restored dedup memory with ``limit`` ids (checkpoints before 2026-11 kept strings)."""
    if isinstance(learned, RecentIds):
        return learned if learned.limit == limit else learned.resized(limit)
    memory = RecentIds(limit)
    for record_id in learned:
        memory.add(record_id)
    return memory


def _commit_done(_offsets: Any, result: Any) -> None:
    if isinstance(result, Exception):
        log.warning("offset commit failed", extra={"error": repr(result)})


def _offset_meta(offset: int) -> Any:
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(offset, "", -1)
