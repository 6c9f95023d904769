"""The training-serving skew check over real Kafka and Redis.

Online features are built from the ``events`` topic by the feature worker's own
pipeline, a real :class:`~eddy.services.serving.predictor.Predictor` answers requests from the
``prediction-requests`` topic (recording its snapshots and request log), and the check
then recomputes the sampled requests' features from the event log. Served through the
true definitions, nothing is flagged — even with an event the worker had not applied
yet at serving time, events appended after serving, and an old event outside the
replayed history; served through a deliberately broken definition, a ``skew`` alert
naming exactly the broken features lands on ``drift-alerts``, also from the schedule.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from eddy.services.config.settings import Settings
from eddy.services.ops.console import read_topic
from eddy.services.quality.skew_check import SkewCheck, run_check, run_scheduled
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import Lineage, Registry
from eddy.services.serving.predictor import Predictor
from eddy.services.workers.features import build_pipeline
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import FeatureSet, Ratio
from eddy.streams.features.definitions import FEATURES
from eddy.streams.features.pipeline import FeaturePipeline
from eddy.streams.features.skew import READ_SLACK_S
from eddy.streams.messages.contracts import DriftAlert
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import make_consumer, make_producer, make_redis
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings

ENTITIES = ("u0", "u1", "u2", "u3")
EVENTS_PER_ENTITY = 5
SETTLED_AGO_S = 120.0  # Kafka timestamp of the events applied before serving
RECENT_S = 500.0  # their event times: within the last 10 minutes
OLD_AGO_S = 3 * 24 * 3600.0  # an event far outside the replayed history
POLL_MS = 200
DEADLINE_S = 60.0
SCHEDULE_S = 0.2
LINEAGE = Lineage({}, FEATURES.fingerprint(), {}, {}, "test", {"type": "operator"}, "test")
# Same feature names, wrong computation: the ratio divides by the 10-minute sum instead
# of the hourly mean. (All events fall in the 10-minute window, whatever the clock: the
# sum is never the hourly mean, which a nearby hour boundary may leave undefined.) The
# states it reads are the training definitions' (the same state fingerprint): a serving
# definition that folded other states would read other states, and every feature would
# differ.
BROKEN = dataclasses.replace(
    FEATURES,
    ratios=(Ratio("amount_vs_hourly_mean", "amount", "amount_sum_10m_every_1m"),),
)
BROKEN_FEATURES = {"amount_vs_hourly_mean"}


@dataclass
class Deployment:
    settings: Settings
    registry: Registry
    pipeline: FeaturePipeline
    events: Any  # a consumer of the events topic: what the worker has read so far
    serving: FeatureSet = FEATURES  # the definitions the predictor serves with

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.settings.topic_prefix)

    def send(
        self, topic: Topic, records: Sequence[tuple[str, dict[str, Any], float | None]]
    ) -> list[Any]:
        """Send (key, value, Kafka timestamp) records; their partition and offset."""
        producer = make_producer(self.settings)
        try:
            futures = [
                producer.send(
                    self.topic(topic),
                    key=key.encode(),
                    value=orjson.dumps(value),
                    timestamp_ms=None if at is None else int(at * 1000),
                )
                for key, value, at in records
            ]
            producer.flush(timeout=30)
            return [f.get(timeout=30) for f in futures]
        finally:
            producer.close()

    def apply_events(self) -> None:
        """The feature worker's pipeline over every event sent so far and not applied."""
        self.pipeline.handle([RawRecord.of(r) for r in drain(self.events)])

    def serve(self, requests: list[dict[str, Any]]) -> None:
        """A real predictor answers ``requests``, read from their topic like a group member."""
        self.send(Topic.PREDICTION_REQUESTS, [(r["entity_id"], r, None) for r in requests])
        consumer = assigned(self.settings, self.topic(Topic.PREDICTION_REQUESTS))
        try:
            records = drain(consumer)
        finally:
            consumer.close()
        assert len(records) == len(requests)
        predictor = Predictor(self.settings, self.registry, "m", features=self.serving, schema=None)
        try:
            outcome = predictor.handle(records)
        finally:
            predictor.consumer.close(autocommit=False)
            predictor.producer.close()
        assert (outcome.answered, outcome.errors) == (len(requests), 0)

    def alerts(self) -> int:
        consumer = make_consumer(self.settings, group_id=None)
        try:
            where = TopicPartition(self.topic(Topic.DRIFT_ALERTS), 0)
            return int(consumer.end_offsets([where])[where])
        finally:
            consumer.close()


def assigned(settings: Settings, topic: str) -> Any:
    consumer = make_consumer(settings, group_id=None)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


def drain(consumer: Any) -> list[Any]:
    """Every record from the consumer's positions up to the current end offsets."""
    partitions = list(consumer.assignment())
    end = consumer.end_offsets(partitions)
    records: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while any(consumer.position(tp) < end[tp] for tp in partitions):
        assert time.monotonic() < deadline, "records did not arrive"
        for batch in consumer.poll(timeout_ms=POLL_MS).values():
            records += batch
    return records


def event(entity: str, event_id: str, at: float, features: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "entity_id": entity,
        "event_time": datetime.fromtimestamp(at, UTC).isoformat(),
        "features": features,
    }


def trained() -> Any:
    rng = random.Random(7)
    xs = [{"amount": rng.uniform(0, 100)} for _ in range(200)]
    return make_pipeline(DictVectorizer(sparse=False), LogisticRegression()).fit(
        xs, [x["amount"] > 50 for x in xs]
    )


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings) -> Iterator[Deployment]:
    settings = deployment_settings("skew", partitions=3, model_name="m", skew_every_s=SCHEDULE_S)
    registry = open_registry(settings, announce=False)
    registry.register("m", "sklearn", trained(), {"log_loss": 0.3}, LINEAGE)
    registry.promote("m", 1, "test", "initial")
    events = assigned(settings, topic_name(Topic.EVENTS, settings.topic_prefix))
    running = Deployment(settings, registry, build_pipeline(settings, FEATURES, None), events)
    yield running
    events.close()


REQUESTS: list[dict[str, Any]] = [
    *({"request_id": f"r-{e}", "entity_id": e, "features": {}} for e in ENTITIES),
    {"request_id": "r-own", "entity_id": "u2", "features": {"amount": 42.0, "country": "ZZ"}},
    {"request_id": "r-new", "entity_id": "u-new", "features": {"amount": 7.0}},
]


@dataclass(frozen=True)
class Traffic:
    old: tuple[str, int]  # where the old event is: "topic[partition]", offset
    first_after: tuple[str, int]  # where the first event sent after serving is
    last_country: dict[str, str]  # per entity, as of serving


def a_day_of_traffic(deployment: Deployment) -> Traffic:
    """An old event and recent ones applied, one more still in flight when the
    requests are answered, then events appended after serving."""
    rng = random.Random(11)
    now = time.time()
    old = event("u0", "old", now - OLD_AGO_S, {"amount": 1.0, "channel": "app"})
    settled = [
        event(
            entity,
            f"{entity}-{i}",
            now - rng.uniform(SETTLED_AGO_S + 10, RECENT_S),
            {"amount": round(rng.uniform(1, 100), 2), "country": rng.choice("ABC")},
        )
        for entity in ENTITIES
        for i in range(EVENTS_PER_ENTITY)
    ]
    sent = deployment.send(
        Topic.EVENTS,
        [
            ("u0", old, now - OLD_AGO_S),
            *((e["entity_id"], e, now - SETTLED_AGO_S) for e in settled),
        ],
    )
    deployment.apply_events()
    in_flight = event("u0", "u0-late", time.time() - 5, {"amount": 500.0, "country": "C"})
    deployment.send(Topic.EVENTS, [("u0", in_flight, None)])
    deployment.serve(REQUESTS)
    time.sleep(READ_SLACK_S)  # what comes next was surely appended after serving
    later = [
        ("u1", event("u1", f"u1-after-{i}", time.time(), {"amount": 900.0 + i}), None)
        for i in range(3)
    ]
    after = deployment.send(Topic.EVENTS, later)
    deployment.apply_events()
    last = {
        entity: max((e for e in settled if e["entity_id"] == entity), key=lambda e: e["event_time"])
        for entity in ENTITIES
    }
    return Traffic(
        old=(f"{sent[0].topic}[{sent[0].partition}]", sent[0].offset),
        first_after=(f"{after[0].topic}[{after[0].partition}]", after[0].offset),
        last_country={entity: e["features"]["country"] for entity, e in last.items()},
    )


AGGREGATES = sum(len(a.names()) for a in FEATURES.aggregates)


def test_serving_through_the_true_definitions_shows_no_skew(deployment: Deployment) -> None:
    traffic = a_day_of_traffic(deployment)
    check = run_check(deployment.settings, FEATURES)
    report = check.report
    assert report.checked == len(REQUESTS)
    assert not report.skewed, report.as_dict()
    assert check.alert is None
    assert deployment.alerts() == 0
    assert report.compared >= len(REQUESTS) * AGGREGATES
    # u0's "channel" comes only from the old event; "u-new" has no last event at all.
    assert report.unverified == 2
    # The history read starts after the old event and ends before the later ones.
    where, offset = traffic.old
    assert report.window.offsets[where][0] > offset
    where, offset = traffic.first_after
    assert report.window.offsets[where][1] < offset

    stop = threading.Event()
    on_demand = deployment.settings.model_copy(update={"skew_every_s": 0.0})
    worker = threading.Thread(target=run_scheduled, args=(on_demand, stop, FEATURES))
    worker.start()
    worker.join(timeout=DEADLINE_S)
    assert not worker.is_alive(), "a check scheduled every 0 s must not loop"


def test_a_broken_serving_definition_raises_a_skew_alert_naming_it(
    deployment: Deployment,
) -> None:
    traffic = a_day_of_traffic(dataclasses.replace(deployment, serving=BROKEN))
    check = run_check(deployment.settings, FEATURES, publish=False)
    assert check.alert is not None
    assert deployment.alerts() == 0
    report = check.report
    assert report.checked == len(REQUESTS)
    assert {f.feature for f in report.features} == BROKEN_FEATURES
    assert report.skewed_requests == len(ENTITIES) + 1  # "r-new" has neither feature to break
    assert_examples_are_what_was_served_and_what_is_true(deployment, check, traffic)

    published = scheduled_alert(deployment)
    assert published["kind"] == "skew"
    assert published["alert_id"] == check.alert.alert_id
    assert published["model_version"] == "1"
    assert [e["feature"] for e in published["evidence"]] == [f.feature for f in report.features]
    assert {e["feature"] for e in published["examples"]} == BROKEN_FEATURES
    assert DriftAlert.model_validate(published).examples == check.alert.examples


def assert_examples_are_what_was_served_and_what_is_true(
    deployment: Deployment, check: SkewCheck, traffic: Traffic
) -> None:
    snapshots = SnapshotStore(
        make_redis(deployment.settings), deployment.settings.topic_prefix, 3600
    ).fetch(r["request_id"] for r in REQUESTS)
    entity_of = {r["request_id"]: r["entity_id"] for r in REQUESTS}
    for feature in check.report.features:
        assert feature.examples
        for example in feature.examples:
            served = snapshots[example.request_id].features
            assert example.served == served.get(feature.feature)
            if feature.feature == "amount_vs_hourly_mean":
                # The true ratio of the parts, which were served correctly.
                amount, mean = served["amount"], served["amount_mean_1h"]
                assert isinstance(amount, float)
                if mean is None:
                    assert example.recomputed is None
                else:
                    assert isinstance(mean, float)
                    assert example.recomputed == pytest.approx(amount / mean)
            else:
                own = "ZZ" if example.request_id == "r-own" else None
                country = own or traffic.last_country[entity_of[example.request_id]]
                assert (example.served, example.recomputed) == (None, country)


def scheduled_alert(deployment: Deployment) -> dict[str, Any]:
    """The first alert the scheduled check publishes."""
    stop = threading.Event()
    worker = threading.Thread(target=run_scheduled, args=(deployment.settings, stop, FEATURES))
    worker.start()
    try:
        found = next(
            read_topic(
                deployment.settings,
                deployment.topic(Topic.DRIFT_ALERTS),
                from_beginning=True,
                max_messages=1,
                idle_timeout_s=DEADLINE_S,
            ),
            None,
        )
    finally:
        stop.set()
        worker.join(timeout=DEADLINE_S)
    assert found is not None, "the scheduled check published no alert"
    assert not worker.is_alive()
    value: dict[str, Any] = found.value
    return value
