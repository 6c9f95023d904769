"""The load: events, prediction requests and their late labels at a steady rate.

Each scenario has entities of its own (``<scenario>-u<k>``) and ids of its own
(``<scenario>-e<n>``, ``<scenario>-r<n>``), so its effects can be found and counted
apart from every other scenario's. Every send is recorded in the scenario's
:class:`~chaos.ledger.Ledger` only once the broker has acknowledged it; a send the
broker never confirmed is counted as unacknowledged, not as "in".

The concept is fixed and simple (label: ``amount > 50``, with noise), so the learner
has something to learn and the models' answers mean something.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from chaos.corpus import Malformed, malformed_events, malformed_learning, malformed_requests
from chaos.fuzz import FUZZED_TOPICS, HostileRecord, hostile_records
from chaos.ledger import Ledger, SentEvent
from chaos.plan import MODEL, Mode
from eddy.services.config.settings import Settings
from eddy.streams.features.compute import EntityState, feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.contracts import (
    Contract,
    DriftAlert,
    DriftKind,
    Event,
    Label,
    PredictionRequest,
    SourceOffset,
    TrainingExample,
)
from eddy.streams.messages.validation import decode, encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, message_key, spec_for

LABEL_DELAY_S = 1.0
NOISE = 0.1
THRESHOLD = 50.0
COUNTRIES = ("A", "B", "C")
TICK_S = 0.005
LINGER_MS = 5
SEND_TIMEOUT_S = 60.0
WARM_UP_SOURCE = "chaos-warm-up"  # not a topic: where the warm-up examples "came from"
EXAMPLE_ENTITIES = 50
EXAMPLES_PER_S = 1000  # event times of the prefilled examples, spread into the past

Record = Callable[[Any], None]  # called with the broker's RecordMetadata once acknowledged


class Traffic:
    def __init__(self, settings: Settings, mode: Mode, seed: int) -> None:
        self.settings = settings
        self.mode = mode
        self.rng = random.Random(seed)
        self.producer = _producer(settings)
        self.topics = {
            t: spec_for(t, prefix=settings.topic_prefix, partitions=settings.partitions)
            for t in Topic
        }
        self._pending: list[tuple[Any, Record]] = []
        self._lock = threading.Lock()

    # --- sending ----------------------------------------------------------------------

    def _send(self, topic: Topic, message: Contract, on_ack: Record) -> None:
        spec = self.topics[topic]
        self._send_raw(topic, message_key(spec, message), encode(message), on_ack)

    def _send_raw(
        self,
        topic: Topic,
        key: bytes | None,
        value: bytes | None,
        on_ack: Record,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        name = self.topics[topic].name
        future = self.producer.send(name, key=key, value=value, headers=headers)
        with self._lock:
            self._pending.append((future, on_ack))

    def settle(self, ledger: Ledger) -> None:
        """Wait for every acknowledgement and record what the broker confirmed."""
        self.producer.flush()
        with self._lock:
            pending, self._pending = self._pending, []
        for future, on_ack in pending:
            try:
                metadata = future.get(timeout=SEND_TIMEOUT_S)
            except Exception:  # the broker never confirmed it: not "in"
                ledger.unacknowledged += 1
                continue
            on_ack(metadata)

    # --- steady load ------------------------------------------------------------------

    def run(self, ledger: Ledger, stop: threading.Event) -> None:
        """Events, requests and (a second later) the requests' labels until ``stop``."""
        entities = sorted(ledger.entities)
        due: list[tuple[float, int, Label]] = []
        started = time.monotonic()
        events = requests = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            while events < elapsed * self.mode.events_per_s:
                self._event(ledger, f"{ledger.name}-e{events}", self.rng.choice(entities))
                events += 1
            while requests < elapsed * self.mode.requests_per_s:
                label = self._request(
                    ledger, f"{ledger.name}-r{requests}", self.rng.choice(entities)
                )
                heapq.heappush(due, (time.monotonic() + LABEL_DELAY_S, requests, label))
                requests += 1
            while due and (due[0][0] <= time.monotonic()):
                self._label(ledger, heapq.heappop(due)[2])
            time.sleep(TICK_S)
        while due:
            self._label(ledger, heapq.heappop(due)[2])

    def _features(self) -> tuple[dict[str, Any], bool]:
        amount = round(self.rng.uniform(0, 100), 2)
        label = (amount > THRESHOLD) != (self.rng.random() < NOISE)
        return {"amount": amount, "country": self.rng.choice(COUNTRIES)}, label

    def _event(self, ledger: Ledger, event_id: str, entity: str) -> None:
        features, label = self._features()
        labelled = self.rng.random() < self.mode.labelled_share
        event = Event(
            event_id=event_id,
            entity_id=entity,
            event_time=datetime.now(UTC),
            features=features,
            label=label if labelled else None,
        )
        # What the feature worker will read: the event as decoded from its bytes.
        read = decode(Event, encode(event))
        sent = SentEvent(event_id, entity, read.event_time.timestamp(), features, labelled)
        self._send(Topic.EVENTS, event, lambda _: ledger.events.__setitem__(event_id, sent))

    def _request(self, ledger: Ledger, request_id: str, entity: str) -> Label:
        features, label = self._features()
        request = PredictionRequest(
            request_id=request_id, entity_id=entity, features={"amount": features["amount"]}
        )
        ledger.requests_sent.append(request_id)
        self._send(Topic.PREDICTION_REQUESTS, request, lambda _: ledger.requests.add(request_id))
        return Label(
            request_id=request_id, entity_id=entity, label=label, event_time=datetime.now(UTC)
        )

    def _label(self, ledger: Ledger, label: Label) -> None:
        request_id = label.request_id or ""
        self._send(Topic.LABELS, label, lambda _: ledger.labels.add(request_id))

    # --- special sends -----------------------------------------------------------------

    def flood(self, ledger: Ledger, copies: int) -> None:
        """Copies of the malformed corpus into ``events``, ``prediction-requests``,
        ``training-examples`` and ``labels``."""
        entity = sorted(ledger.entities)[0]
        for serial in range(copies):
            for bad in malformed_events(entity, datetime.now(UTC), serial):
                self._send_raw(Topic.EVENTS, bad.key, bad.value, _bad_event(ledger, bad))
            for bad in malformed_requests(entity, serial):
                self._send_raw(
                    Topic.PREDICTION_REQUESTS, bad.key, bad.value, _bad_request(ledger, bad)
                )
            for topic, bad in malformed_learning(serial):
                self._send_raw(topic, bad.key, bad.value, _bad_learning(ledger, topic, bad))

    def fuzz(self, ledger: Ledger, per_topic: int) -> None:
        """``per_topic`` mutated records into each input topic, interleaved."""
        batches = {topic: hostile_records(self.rng, topic, per_topic) for topic in FUZZED_TOPICS}
        for i in range(per_topic):
            for topic, records in batches.items():
                hostile = records[i]
                self._send_raw(
                    topic,
                    hostile.key,
                    hostile.value,
                    _fuzzed(ledger, topic, hostile),
                    hostile.headers,
                )

    def alert(self, ledger: Ledger, alert_id: str) -> None:
        """A drift alert asking for a retrain, as the learner would send it."""
        alert = DriftAlert(
            alert_id=alert_id,
            model=MODEL,
            kind=DriftKind.CONCEPT,
            detector="chaos",
            statistic=1.0,
            threshold=0.0,
            action="retrain",
            detected_at=datetime.now(UTC),
        )
        spec = self.topics[Topic.DRIFT_ALERTS]
        self.producer.send(spec.name, key=message_key(spec, alert), value=encode(alert)).get(
            timeout=SEND_TIMEOUT_S
        )
        ledger.alerts.append(alert_id)

    def warm_up_examples(self, count: int) -> set[str]:
        """``count`` labelled examples for the learner before any load: its first
        snapshot becomes champion, so the scenarios' requests meet a model."""
        return self._examples(count, "warm-up", WARM_UP_SOURCE)

    def window_filler(self, count: int) -> set[str]:
        """``count`` examples that make the retraining window big (and the slow-retrain
        scenario's retrain slow). They say they come from ``labels``, as the learner's
        own late-label joins do: examples published for retraining that the learner has
        learned already and skips, so filling the window costs no learning."""
        return self._examples(count, "filler", self.topics[Topic.LABELS].name)

    def _examples(self, count: int, name: str, source: str) -> set[str]:
        spec = self.topics[Topic.TRAINING_EXAMPLES]
        producer = _producer(self.settings, linger_ms=50, batch_size=512 * 1024)
        start = time.time() - count / EXAMPLES_PER_S
        ids = set()
        try:
            for i in range(count):
                raw, label = self._features()
                at = start + i / EXAMPLES_PER_S
                example = TrainingExample(
                    example_id=f"{name}-{i}",
                    entity_id=f"{name}-u{i % EXAMPLE_ENTITIES}",
                    event_time=datetime.fromtimestamp(at, UTC),
                    label=label,
                    features=feature_vector(EntityState(), FEATURES, at, raw=raw),
                    feature_set=FEATURES.fingerprint(),
                    source=SourceOffset(topic=source, partition=0, offset=i),
                )
                producer.send(spec.name, key=message_key(spec, example), value=encode(example))
                ids.add(example.example_id)
            producer.flush()
        finally:
            producer.close()
        return ids

    def close(self) -> None:
        self.producer.close()


def _producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    return make_producer(settings, **({"linger_ms": LINGER_MS} | overrides))


def _bad_event(ledger: Ledger, bad: Malformed) -> Record:
    def record(metadata: Any) -> None:
        ledger.bad_events[(metadata.partition, metadata.offset)] = bad.error_class

    return record


def _bad_request(ledger: Ledger, bad: Malformed) -> Record:
    def record(metadata: Any) -> None:
        ledger.bad_requests[(metadata.partition, metadata.offset)] = bad.answer_id

    return record


def _bad_learning(ledger: Ledger, topic: Topic, bad: Malformed) -> Record:
    def record(metadata: Any) -> None:
        ledger.bad_learning[(topic.value, metadata.partition, metadata.offset)] = bad.error_class

    return record


def _fuzzed(ledger: Ledger, topic: Topic, hostile: HostileRecord) -> Record:
    def record(metadata: Any) -> None:
        ledger.fuzzed[(topic.value, metadata.partition, metadata.offset)] = hostile.mutation

    return record
