"""Reading the system's real state back: topics, the online store, the learner's
checkpoint, the registry and the consumer groups' lag.

Nothing here joins a consumer group or writes anything: the topics are read by
assignment (like ``eddy consume``), Redis and the registry are only read, and the
learner's checkpoint is unsealed with the deployment's key, as the learner itself does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from chaos.ledger import Answer, Observed, SeenVersion
from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.streams.dead_letters.letter import ERROR_CLASS, source_of
from eddy.streams.features.compute import EntityState
from eddy.streams.features.definitions import FEATURES
from eddy.streams.learning.checkpoints import CheckpointStore
from eddy.streams.learning.models import label_refusal
from eddy.streams.messages.contracts import TrainingExample
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.store.online import OnlineStore
from eddy.streams.store.serialization import signing_key
from eddy.streams.transport.admin import committed_offsets
from eddy.streams.transport.clients import make_admin, make_consumer, make_redis
from eddy.streams.transport.topics import Topic, spec_for, topic_name

log = logging.getLogger(__name__)

POLL_MS = 200
RETRY_S = 1.0
METADATA_ATTEMPTS = 10
READ_TIMEOUT_S = 30.0
DRAIN_POLL_S = 0.2

# Each service's consumer group and what it reads (for lag).
GROUPS: dict[str, tuple[str, tuple[Topic, ...]]] = {
    "features": ("{prefix}features", (Topic.EVENTS,)),
    "learner": ("{prefix}learner-{model}", (Topic.TRAINING_EXAMPLES, Topic.LABELS)),
    "predictor": ("{prefix}predictors", (Topic.PREDICTION_REQUESTS,)),
    "retrainer": ("{prefix}retrainer", (Topic.DRIFT_ALERTS, Topic.CONTROL)),
}


def partitions_of(settings: Settings, *topics: Topic) -> list[TopicPartition]:
    return [
        TopicPartition(spec.name, p)
        for spec in (
            spec_for(t, prefix=settings.topic_prefix, partitions=settings.partitions)
            for t in topics
        )
        for p in range(spec.partitions)
    ]


class Tap(threading.Thread):
    """Follows ``predictions``, ``dead-letter`` and ``training-examples`` from the start."""

    TOPICS = (Topic.PREDICTIONS, Topic.DEAD_LETTER, Topic.TRAINING_EXAMPLES)

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chaos-tap", daemon=True)
        self.settings = settings
        self.partitions = partitions_of(settings, *self.TOPICS)
        self._names = {topic_name(t, settings.topic_prefix): t for t in self.TOPICS}
        self._answers: dict[str, list[Answer]] = {}
        self._letters: dict[tuple[str, int, int], list[str]] = {}
        self._examples: Counter[str] = Counter()
        self._positions: dict[TopicPartition, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        consumer = make_consumer(self.settings, group_id=None, fetch_max_wait_ms=100)
        try:
            consumer.assign(self.partitions)
            consumer.seek_to_beginning(*self.partitions)
            while not self._stopping.is_set():
                try:
                    self._poll(consumer)
                except Exception as exc:  # a broker outage: keep following when it is back
                    log.warning("tap poll failed", extra={"error": repr(exc)})
                    time.sleep(RETRY_S)
        finally:
            consumer.close()

    def _poll(self, consumer: KafkaConsumer) -> None:
        polled = consumer.poll(timeout_ms=POLL_MS)
        with self._lock:
            for records in polled.values():
                for record in records:
                    self._take(self._names[record.topic], record)
            for tp in self.partitions:
                self._positions[tp] = consumer.position(tp)

    def _take(self, topic: Topic, record: Any) -> None:
        if topic is Topic.PREDICTIONS:
            answer = orjson.loads(record.value)
            error = answer.get("error")
            self._answers.setdefault(answer["request_id"], []).append(
                Answer(
                    prediction=orjson.dumps(answer.get("prediction")).decode(),
                    model_version=answer.get("model_version"),
                    error=error["code"] if error else None,
                )
            )
        elif topic is Topic.DEAD_LETTER:
            headers = [(k, bytes(v)) for k, v in record.headers or []]
            source, partition, offset = source_of(headers)
            where = (source.removeprefix(self.settings.topic_prefix), partition, offset)
            self._letters.setdefault(where, []).append(dict(headers)[ERROR_CLASS].decode())
        else:  # the flood's malformed examples have no id: the learner dead-letters them
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                self._examples[orjson.loads(record.value)["example_id"]] += 1

    def read_into(self, observed: Observed) -> None:
        with self._lock:
            observed.answers = {k: list(v) for k, v in self._answers.items()}
            observed.dead_letters = {k: list(v) for k, v in self._letters.items()}
            observed.examples = Counter(self._examples)

    def positions(self) -> dict[TopicPartition, int]:
        with self._lock:
            return dict(self._positions)

    def close(self) -> None:
        """Stop following (the thread closes its consumer)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=POLL_MS / 1000 * 10)


class Inspector:
    """Long-lived read-only clients for the state the services keep."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        key = settings.signing_key.get_secret_value().encode() if settings.signing_key else None
        self.registry = open_registry(settings, announce=False)
        self.checkpoints = CheckpointStore(
            settings.data_dir / "checkpoints" / settings.model_name,
            signing_key(key, settings.data_dir),
        )
        self.redis = make_redis(settings)
        self.store = OnlineStore(
            self.redis,
            settings.topic_prefix,
            settings.feature_ttl_s,
            states=FEATURES.state_fingerprint(),
        )
        self.consumer = make_consumer(settings, group_id=None)
        self.admin = make_admin(settings)

    def states(self, entities: set[str]) -> dict[str, EntityState]:
        return {e: stored.state for e, stored in self.store.load(sorted(entities)).items()}

    def learner(self, observed: Observed) -> None:
        state = self.checkpoints.latest()
        if state is not None:
            observed.learned = state.learned
            observed.learner_examples = state.learner.examples

    def versions(self) -> list[SeenVersion]:
        seen = []
        for version in self.registry.versions(self.settings.model_name):
            trigger = Trigger.from_dict(version.lineage.trigger)
            ids = trigger.alert_ids if trigger.kind == TriggerKind.ALERT else [trigger.id or ""]
            seen.append(
                SeenVersion(
                    version=version.version,
                    flavor=version.flavor,
                    created_at=version.created_at,
                    trigger=str(trigger.kind),
                    trigger_ids=tuple(i for i in ids if i),
                    trained_on=tuple(
                        (where, span[0], span[1])
                        for where, span in sorted(version.lineage.trained_on.items())
                    ),
                )
            )
        return seen

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """End offsets, asked again while the client's metadata is still incomplete (after
        a broker restart kafka-python can fail on a partition it does not know yet)."""
        for _ in range(METADATA_ATTEMPTS - 1):
            try:
                return dict(self.consumer.end_offsets(partitions))
            except KeyError:
                time.sleep(RETRY_S)
        return dict(self.consumer.end_offsets(partitions))

    def lag(self, observed: Observed) -> None:
        """Records each service's group has still to process, over its input topics.

        The learner commits its offsets with each checkpoint, and it checkpoints only
        after learning something: the examples it publishes itself (late-label joins,
        marked as coming from ``labels``) and skips when it reads them back can stay
        behind its committed offsets while it is idle. Those are counted apart
        (``skipped_backlog``); the learner's lag is what it would still learn.
        """
        for service, (pattern, topics) in GROUPS.items():
            group = pattern.format(
                prefix=self.settings.topic_prefix, model=self.settings.model_name
            )
            partitions = partitions_of(self.settings, *topics)
            ends = self.end_offsets(partitions)
            committed = committed_offsets(self.admin, group)
            behind = {
                tp: (committed.get(tp, 0), ends[tp])
                for tp in partitions
                if ends[tp] > committed.get(tp, 0)
            }
            if service == "learner":
                observed.lag[service], observed.skipped_backlog = self._learner_backlog(behind)
            else:
                observed.lag[service] = sum(end - start for start, end in behind.values())

    def _learner_backlog(self, behind: dict[TopicPartition, tuple[int, int]]) -> tuple[int, int]:
        """(records the learner will still learn, records it skips) in ``behind``.

        It skips its own late-label joins, and what it dead-letters (an example that
        does not decode, a label its model kind cannot learn: the fuzz writes both).
        """
        examples = topic_name(Topic.TRAINING_EXAMPLES, self.settings.topic_prefix)
        published_by_learner = topic_name(Topic.LABELS, self.settings.topic_prefix)
        to_learn = sum(end - start for tp, (start, end) in behind.items() if tp.topic != examples)
        skipped = 0
        for record in self._read({tp: span for tp, span in behind.items() if tp.topic == examples}):
            try:
                example = decode(TrainingExample, record.value)
            except InvalidMessage:
                skipped += 1
                continue
            refused = label_refusal(self.settings.learner_kind, example.label)
            if example.source.topic == published_by_learner or refused is not None:
                skipped += 1
            else:
                to_learn += 1
        return to_learn, skipped

    def _read(self, spans: dict[TopicPartition, tuple[int, int]]) -> list[Any]:
        """The records in [start, end) of each partition (outside any group)."""
        if not spans:
            return []
        self.consumer.assign(list(spans))
        for tp, (start, _) in spans.items():
            self.consumer.seek(tp, start)
        records: list[Any] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline and any(
            self.consumer.position(tp) < end for tp, (_, end) in spans.items()
        ):
            for batch in self.consumer.poll(timeout_ms=POLL_MS).values():
                records += [
                    r for r in batch if r.offset < spans[TopicPartition(r.topic, r.partition)][1]
                ]
        return records

    def observe(self, tap: Tap, entities: set[str]) -> Observed:
        """Everything at once (each part as of its own read)."""
        observed = Observed(states=self.states(entities))
        tap.read_into(observed)
        self.learner(observed)
        observed.versions = self.versions()
        self.lag(observed)
        return observed

    def wait_drained(self, tap: Tap, deadline_s: float) -> bool:
        """Until the tap has read everything the topics hold now (or the deadline)."""
        ends = self.end_offsets(tap.partitions)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            positions = tap.positions()
            if all(positions.get(tp, 0) >= end for tp, end in ends.items()):
                return True
            time.sleep(DRAIN_POLL_S)
        return False

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()
        self.redis.close()
