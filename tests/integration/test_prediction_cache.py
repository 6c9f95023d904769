"""Static serving against real Kafka and Redis: cached answers are never stale.

The models here score one feature, ``seq``, which the test's feature writes set to the
entity's write count: the snapshot a predictor records for each request therefore
names the entity revision that request read, and each model version gives every
``seq`` its own probability. So an answer's probabilities show which model and which
features made it, and a cache serving an older model or older features cannot hide.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import Registry
from eddy.services.serving.cache import Entry
from eddy.services.serving.predictor import Predictor
from eddy.services.serving.scoring import Loaded, score_batch
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.definitions import FEATURES
from eddy.streams.features.pipeline import FeaturePipeline
from eddy.streams.store import keys
from eddy.streams.store.online import OnlineStore
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import make_producer, make_redis
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings
from tests.integration.predictors import LINEAGE, Service, answers_consumer
from tests.waiting import wait_until

DEADLINE_S = 60.0
# How long a precompute test waits for one write's answer before writing again.
REWRITE_AFTER_S = 5.0
SLOPE = 25.0  # gentle: every seq step moves the probability well past 6 decimals
THRESHOLDS = {1: 20.0, 2: 35.0, 3: 50.0, 4: 65.0}  # one model version each
ENTITIES = [f"hot-{i}" for i in range(6)]
# Load: batches of requests every tick, a feature write every few ms, swaps in between.
TICK_S = 0.1
TICKS = 40
REQUESTS_PER_TICK = 30
# The load stays at most this many ticks ahead of the answers: a predictor that falls
# behind would otherwise drain the whole load in a few batches between two swaps.
TICKS_AHEAD = 3
WRITE_EVERY_S = 0.03
SWAP_POLL_S = 0.02
MIN_CACHED_SHARE = 20  # at least one answer in 20 served from the cache
# Steps that must end within one time step of the cache are started this far from its end.
STEP_MARGIN_S = 10.0


def seq_model(threshold: float) -> Any:
    """P(True) = a logistic curve in ``seq`` around ``threshold``: a model whose answer
    tells the seq it saw."""
    xs, ys, weights = [], [], []
    for seq in range(201):
        p = 1 / (1 + math.exp(-(seq - threshold) / SLOPE))
        for label, weight in ((True, p), (False, 1 - p)):
            xs.append({"seq": float(seq)})
            ys.append(label)
            weights.append(weight)
    pipeline = make_pipeline(DictVectorizer(sparse=False), LogisticRegression())
    return pipeline.fit(xs, ys, logisticregression__sample_weight=weights)


def register_versions(registry: Registry) -> None:
    for version, threshold in THRESHOLDS.items():
        registry.register("m", "sklearn", seq_model(threshold), {"log_loss": 0.5}, LINEAGE)
        assert registry.get("m", version).version == version


@dataclass
class FeatureWriter:
    """Writes features as the feature worker does: the event goes to ``events`` (where
    the precomputer sees it), then through the feature pipeline into the online store.
    Each write of an entity sets ``seq`` to its revision."""

    settings: Settings
    revs: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        prefix = self.settings.topic_prefix
        self.topic = topic_name(Topic.EVENTS, prefix)
        self.producer = make_producer(self.settings)
        self.pipeline = FeaturePipeline(
            fs=FEATURES,
            store=OnlineStore(
                make_redis(self.settings),
                prefix,
                self.settings.feature_ttl_s,
                states=FEATURES.state_fingerprint(),
            ),
            producer=self.producer,
            dead_letter_topic=topic_name(Topic.DEAD_LETTER, prefix),
            examples_topic=topic_name(Topic.TRAINING_EXAMPLES, prefix),
            max_future=timedelta(seconds=self.settings.max_event_time_skew_s),
            schema=None,
        )

    def write(self, entity_id: str) -> int:
        rev = self.revs[entity_id] + 1
        event = {
            "event_id": f"{entity_id}-{rev}",
            "entity_id": entity_id,
            "event_time": datetime.now(UTC).isoformat(),
            "features": {"seq": rev},
        }
        key, value = entity_id.encode(), orjson.dumps(event)
        sent = self.producer.send(self.topic, key=key, value=value).get(timeout=30)
        counts = self.pipeline.handle(
            [RawRecord(sent.topic, sent.partition, sent.offset, key, value, [])]
        )
        assert counts["new"] == 1, counts
        self.revs[entity_id] = rev
        return rev

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def service(deployment_settings: DeploymentSettings, tmp_path: Path) -> Iterator[Service]:
    settings = deployment_settings("cache", model_name="m", prediction_cache="all")
    running = Service(settings, open_registry(settings), None, tmp_path / "predictor.log")
    yield running
    running.stop()


def expected(models: dict[int, Loaded], version: int, features: dict[str, Any]) -> Any:
    scored = score_batch(models[version], [features])[0]
    return scored.prediction, scored.proba


def test_cached_answers_never_come_from_an_older_model_or_older_features(
    service: Service,
) -> None:
    settings = service.settings
    register_versions(service.registry)
    service.registry.promote("m", 1, "test", "initial")
    writer = FeatureWriter(settings)
    for entity_id in ENTITIES:
        writer.write(entity_id)
    service.start()
    consumer = answers_consumer(service)
    rng = random.Random(5)
    requests: list[dict[str, Any]] = [
        {"request_id": f"r{i}", "entity_id": rng.choice(ENTITIES), "features": {}}
        for i in range(TICKS * REQUESTS_PER_TICK)
    ]
    answers: list[tuple[int, dict[str, Any]]] = []  # (answer's Kafka timestamp, answer)
    answered = threading.Event()

    def load() -> None:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
        try:
            for start in range(0, len(requests), REQUESTS_PER_TICK):
                while len(answers) < start - TICKS_AHEAD * REQUESTS_PER_TICK:
                    if answered.wait(SWAP_POLL_S):
                        return
                for request in requests[start : start + REQUESTS_PER_TICK]:
                    producer.send(
                        service.topic(Topic.PREDICTION_REQUESTS),
                        key=str(request["entity_id"]).encode(),
                        value=orjson.dumps(request),
                    )
                producer.flush()
                time.sleep(TICK_S)
        finally:
            producer.close()

    def collect() -> None:
        deadline = time.monotonic() + DEADLINE_S
        while len(answers) < len(requests) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                answers.extend((r.timestamp, orjson.loads(r.value)) for r in records)
        answered.set()

    def write_features() -> None:
        pick = random.Random(6)
        while not answered.is_set():
            writer.write(pick.choice(ENTITIES))
            time.sleep(WRITE_EVERY_S)

    def swap() -> None:
        """Each next version once a share of the answers is out, however fast the
        predictor goes: every version serves a part of the load."""
        for version in sorted(THRESHOLDS)[1:]:
            share = (version - 1) * len(requests) // len(THRESHOLDS)
            while len(answers) < share and not answered.wait(SWAP_POLL_S):
                pass
            service.registry.promote("m", version, "test", "swap under load")

    threads = [threading.Thread(target=f) for f in (load, collect, write_features, swap)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    consumer.close()
    if len(answers) < len(requests):
        pytest.fail(f"{len(answers)} of {len(requests)} answers\n{service.log.read_text()}")
    assert sorted(a["request_id"] for _, a in answers) == sorted(r["request_id"] for r in requests)
    assert not [a for _, a in answers if a.get("error")]

    redis = make_redis(settings)
    ids = [a["request_id"] for _, a in answers]
    seen = SnapshotStore(redis, settings.topic_prefix, settings.label_window_s).fetch(ids)
    raw_log: list[bytes] = redis.mget([keys.request_log(settings.topic_prefix, i) for i in ids])  # type: ignore[assignment]
    logged = {i: orjson.loads(raw) for i, raw in zip(ids, raw_log, strict=True)}
    models = {
        v: Loaded("m", v, "sklearn", service.registry.load("m", v)) for v in sorted(THRESHOLDS)
    }

    cached = [(ts, a) for ts, a in answers if a["cached"]]
    cached_versions = {a["model_version"] for _, a in cached}
    cached_revs = {int(seen[a["request_id"]].features["seq"] or 0) for _, a in cached}
    # Not vacuous: the cache served under several champions, after a swap, and after
    # feature writes. (A batch's first request for an entity under a new champion or
    # revision misses, so how many hits there are depends on the batch sizes.)
    stats = f"{len(cached)} cached of {len(answers)}, versions {cached_versions}"
    assert len(cached) >= len(answers) // MIN_CACHED_SHARE, stats
    assert len(cached_versions) >= 2, stats
    assert max(cached_versions) > "1", stats
    assert max(cached_revs) > 1, cached_revs

    # Older features: every answer is its version's answer on the features its request
    # read, and a cached one was computed from exactly the revision that request read.
    for _, answer in answers:
        features = seen[answer["request_id"]].features
        assert (answer["prediction"], answer["proba"]) == expected(
            models, int(answer["model_version"]), features
        ), answer
        if answer["cached"]:
            assert logged[answer["request_id"]]["cache"]["rev"] == features["seq"], answer

    # Older model: one predictor answers batch after batch, so every answer sent before
    # a cached one (an earlier Kafka timestamp) came from that batch's champion or an
    # earlier one; the cached answer's version is never below any of them.
    newest_before = 0
    for _, sent_together in groupby(sorted(answers, key=lambda ta: ta[0]), key=lambda ta: ta[0]):
        group = [answer for _, answer in sent_together]
        for answer in group:
            if answer["cached"]:
                assert int(answer["model_version"]) >= newest_before, (answer, newest_before)
        newest_before = max(newest_before, *(int(a["model_version"]) for a in group))
    assert service.process is not None
    assert service.process.poll() is None


def wait_for_step_room(step_s: int) -> None:
    """Start a sequence that must stay inside one time step well before the step ends."""
    left = step_s - time.time() % step_s
    if left < STEP_MARGIN_S:
        time.sleep(left)


def test_policy_all_precomputes_an_answer_when_features_change(service: Service) -> None:
    settings = service.settings
    register_versions(service.registry)
    service.registry.promote("m", 1, "test", "initial")
    service.start()
    writer = FeatureWriter(settings)
    redis = make_redis(settings)
    key = f"{settings.topic_prefix}answer:{{never-asked}}:m"
    # The precomputer starts at the topic's end once its group has joined, which takes
    # as long as it takes: a write made before is not its to see. Write again until one
    # is answered, each wait well inside one time step of the answer's digest.
    answered: list[tuple[int, Entry]] = []  # (the write's revision, its answer)

    def a_write_answered() -> bool:
        """Writes again; true once a write's answer is precomputed."""
        wait_for_step_room(60)
        rev = writer.write("never-asked")
        entry = precomputed(redis, key, rev, REWRITE_AFTER_S)
        if entry is not None:
            answered.append((rev, entry))
        return bool(answered)

    wait_until(
        a_write_answered,
        "a precomputed answer for any write",
        timeout_s=DEADLINE_S,
        every_s=0,  # each ask writes, then waits REWRITE_AFTER_S for the answer
        logs=service.log.read_text,
    )
    ((rev, entry),) = answered
    writer.close()
    assert entry.version == 1
    assert (entry.scored.prediction, entry.scored.proba) == expected(
        {1: Loaded("m", 1, "sklearn", service.registry.load("m", 1))}, 1, {"seq": rev}
    )


def precomputed(redis: Any, key: str, rev: int, wait_s: float) -> Entry | None:
    """The cached answer for revision ``rev`` once it is there, or None after ``wait_s``."""
    give_up = time.monotonic() + wait_s
    while time.monotonic() < give_up:
        entry = Entry.decode(redis.get(key))  # type: ignore[arg-type]
        if entry is not None and entry.rev == rev:
            return entry
        time.sleep(0.05)
    return None


@dataclass
class Polled:
    """A request record as kafka-python hands it to the predictor."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def test_hot_entities_are_cached_and_invalidated_by_writes_and_swaps(
    deployment_settings: DeploymentSettings,
) -> None:
    settings = deployment_settings("hot", prediction_cache="hot", prediction_cache_hot_requests=3)
    registry = open_registry(settings, announce=False)
    register_versions(registry)
    registry.promote("m", 1, "test", "initial")
    predictor = Predictor(settings, registry, "m", features=FEATURES, schema=None)
    assert predictor.cache is not None
    writer = FeatureWriter(settings)
    redis = make_redis(settings)
    asked = Counter[str]()

    def ask(entity_id: str, features: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = f"{entity_id}-{sum(asked.values())}"
        asked[entity_id] += 1
        body = {"request_id": request_id, "entity_id": entity_id, "features": features or {}}
        record = Polled(
            predictor.requests_topic,
            0,
            0,
            entity_id.encode(),
            orjson.dumps(body),
            time.time() * 1000,
        )
        outcome = predictor.handle([record])
        raw = redis.get(keys.request_log(settings.topic_prefix, request_id))
        answer: dict[str, Any] = orjson.loads(raw)["output"]  # type: ignore[arg-type]
        assert outcome.cached == int(answer["cached"])
        return answer

    try:
        wait_for_step_room(predictor.cache.timing.step_s)
        writer.write("h")
        first = [ask("h") for _ in range(3)]  # the third makes it hot: its answer is kept
        assert [a["cached"] for a in first] == [False, False, False]
        assert redis.get(predictor.cache.key("h")) is not None
        hit = ask("h")
        assert hit["cached"]
        assert hit["model_version"] == "1"
        assert hit["proba"] == first[-1]["proba"]

        assert not ask("cold")["cached"]
        assert redis.get(predictor.cache.key("cold")) is None  # asked once: not hot

        assert not ask("h", {"seq": 150})["cached"]  # its own features: another vector

        writer.write("h")  # rev 2: the entry is stale
        after_write = ask("h")
        assert not after_write["cached"]
        assert after_write["proba"] != hit["proba"]
        assert ask("h")["cached"]

        registry.promote("m", 2, "test", "swap")
        predictor.watcher.refresh()  # what the watcher thread does on model-updates
        after_swap = ask("h")
        assert not after_swap["cached"]
        assert after_swap["model_version"] == "2"
        again = ask("h")
        assert again["cached"]
        assert again["model_version"] == "2"
        assert again["proba"] == after_swap["proba"] != after_write["proba"]

        usage = predictor.cache.usage()
        assert usage.answers == 1  # only the hot entity
        assert usage.counters == 2  # h and cold were counted
        assert usage.answer_bytes > 0
        assert usage.counter_bytes > 0
    finally:
        writer.close()
        predictor.consumer.close(autocommit=False)
        predictor.producer.close()
