"""The feature worker end to end: real Kafka, real Redis, `eddy run features` processes.

Invariants checked (design §5): every malformed record dead-lettered exactly once with
its reason and original bytes; every valid event applied exactly once, even across a
SIGKILL; replays, duplicates and reordering within the allowed lateness leave the same
state; a Redis loss is repaired by a rebuild from Kafka.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from eddy.services.config.settings import Settings
from eddy.services.ops.console import read_topic
from eddy.services.workers.faust_app import EXIT_FAILED_BATCH
from eddy.services.workers.features import app_id, build_pipeline, rebuild
from eddy.streams.dead_letters.letter import (
    ERROR_CLASS,
    ERROR_REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
)
from eddy.streams.features.compute import encode_state, feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.store.online import OnlineStore
from eddy.streams.transport.admin import committed_offsets, ensure_topics
from eddy.streams.transport.clients import make_admin, make_producer, make_redis
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.feature_workers import (
    FeatureDeployment,
    applied_counts,
    event,
    kill_partway_and_finish,
    quiet_hour_base,
    send_records,
)
from tests.waiting import wait_until

DEADLINE_S = 120.0
POLL_S = 0.5
READ_IDLE_S = 5.0


@pytest.fixture
def deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> Iterator[FeatureDeployment]:
    settings = deployment_settings("fw", partitions=3, feature_batch_size=200)
    deployment = FeatureDeployment(settings, tmp_path, [])
    yield deployment
    for worker in deployment.workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def the_malformed_corpus(base: float) -> list[tuple[str, bytes | None, bytes | None]]:
    """(expected error class, key, value): more than 20 kinds of bad input."""
    good = orjson.loads(event("bad", "x", base, 1.0))

    def with_(**changes: Any) -> bytes:
        return orjson.dumps({**good, **changes})

    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    return [
        ("bad_utf8", b"bad", b'{"event_id": "\xc3\x28"}'),
        ("empty", b"bad", b""),
        ("empty", b"bad", None),  # a tombstone
        ("bad_json", b"bad", b'{"event_id": "x",'),
        ("not_an_object", b"bad", b"[1, 2]"),
        ("not_an_object", b"bad", b"42"),
        ("invalid_fields", b"bad", orjson.dumps({"features": {}})),  # missing ids
        ("invalid_fields", b"bad", with_(event_id="")),
        ("invalid_fields", b"bad", with_(entity_id=12)),
        ("invalid_fields", b"bad", with_(features={"amount": "a" * 5000})),
        ("invalid_fields", b"bad", with_(features=[1, 2])),
        ("non_finite_number", b"bad", with_(amount=1).replace(b'"amount":1', b'"amount":NaN')),
        ("non_finite_number", b"bad", with_(amount=1).replace(b'"amount":1', b'"amount":Infinity')),
        (
            "non_finite_number",
            b"bad",
            with_(amount=1).replace(b'"amount":1', b'"amount":-Infinity'),
        ),
        ("non_finite_number", b"bad", with_(amount=1).replace(b'"amount":1', b'"amount":1e309')),
        ("event_time_out_of_range", b"bad", with_(event_time="1970-01-01T00:00:00Z")),
        ("event_time_out_of_range", b"bad", with_(event_time=future)),
        ("too_large", b"bad", with_(padding="x" * 600_000)),
        (
            "too_deep",
            b"bad",
            with_(features={"a": 1}).replace(b'"a":1', b'"a":' + b"[" * 20 + b"]" * 20),
        ),
        ("duplicate_key", b"bad", b'{"event_id": "d", "event_id": "e"}'),
        ("unknown_schema_version", b"bad", with_(schema_version=99)),
        ("invalid_fields", b"bad", with_(unexpected_field=1)),  # unknown fields: rejected
        ("invalid_fields", b"bad", with_(event_time="2026-01-01T00:00:00")),  # no zone
        ("key_mismatch", b"someone-else", with_(event_id="mismatch")),
    ]


def test_malformed_input_is_dead_lettered_once_and_valid_events_applied(
    deployment: FeatureDeployment,
) -> None:
    base = quiet_hour_base()
    corpus = the_malformed_corpus(base)
    valid = [(b"good", event("good", f"g{i}", base + i, float(i))) for i in range(30)]
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(valid):
        mixed.append((key, value))
        if i < len(corpus):
            mixed.append(corpus[i][1:])
    worker = deployment.start_worker()
    send_records(deployment.settings, deployment.topic(Topic.EVENTS), mixed)

    store = deployment.store()
    wait_until(
        lambda: applied_counts(store, ["good"], base + 60)["good"] == len(valid),
        "the valid events to be applied",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    letters = list(
        read_topic(
            deployment.settings,
            deployment.topic(Topic.DEAD_LETTER),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=5.0,
        )
    )

    assert worker.poll() is None, "the worker died on input"
    assert len(letters) == len(corpus), [r.headers.get(ERROR_CLASS) for r in letters]
    by_value = {(r.original.key, r.original.value): r for r in letters}
    for error_class, key, value in corpus:
        letter = by_value[(key, value)]
        assert letter.headers[ERROR_CLASS] == error_class, letter.headers
        assert letter.headers[ERROR_REASON]
    sources = {(r.headers[SOURCE_PARTITION], r.headers[SOURCE_OFFSET]) for r in letters}
    assert len(sources) == len(corpus)


def test_duplicates_and_reordering_leave_the_state_of_one_in_order_pass(stack: Settings) -> None:
    """Through the worker's own pipeline, against real Redis and Kafka."""
    base = quiet_hour_base()
    rng = random.Random(7)
    entities = [f"e{i}" for i in range(5)]
    events = [
        (e.encode(), event(e, f"{e}-{j}", base + rng.uniform(0, 600), rng.uniform(-50, 500)))
        for e in entities
        for j in range(40)
    ]
    states = []
    for passes in ("in order", "twice, shuffled within each key"):
        settings = stack.model_copy(update={"topic_prefix": f"eddy-dup-{uuid.uuid4().hex[:8]}."})
        ensure_topics(settings)
        batch = list(events)
        if passes != "in order":
            batch = batch + batch
            rng.shuffle(batch)  # per-key order is shuffled too; all within the lateness
        pipeline = build_pipeline(settings, FEATURES, None, repairs=True)  # cached states
        records = [_raw(settings, i, key, value) for i, (key, value) in enumerate(batch)]
        for start in range(0, len(records), 37):
            pipeline.handle(records[start : start + 37])
        store = OnlineStore(
            make_redis(settings), settings.topic_prefix, 3600, states=FEATURES.state_fingerprint()
        )
        states.append({e: encode_state(s.state) for e, s in store.load(entities).items()})
    assert states[0] == states[1]


def test_a_cached_state_another_worker_wrote_since_is_read_again(stack: Settings) -> None:
    """A worker folds into the states it wrote last (its cache); when another worker
    wrote an entity meanwhile (both owned the partition during a rebalance), the
    compare-and-set refuses the stale copy and the entity is read again: nothing the
    other wrote is overwritten."""
    settings = stack.model_copy(update={"topic_prefix": f"eddy-cache-{uuid.uuid4().hex[:8]}."})
    ensure_topics(settings)
    base = quiet_hour_base()
    cached = build_pipeline(settings, FEATURES, None, repairs=True)
    other = build_pipeline(settings, FEATURES, None)
    try:
        for offset, pipeline in enumerate([cached, other, cached]):
            value = event("u", f"u-{offset}", base + offset, 10.0 * (offset + 1))
            pipeline.handle([_raw(settings, offset, b"u", value)])
    finally:
        cached.close()
        other.close()
    store = OnlineStore(
        make_redis(settings), settings.topic_prefix, 3600, states=FEATURES.state_fingerprint()
    )
    stored = store.load(["u"])["u"]
    assert sorted(stored.state.seen) == ["u-0", "u-1", "u-2"]
    vector = feature_vector(stored.state, FEATURES, base + 3)
    assert (vector["amount_count_1h"], vector["amount_sum_1h"]) == (3, 60.0)
    assert stored.rev == 3


def _raw(settings: Settings, offset: int, key: bytes, value: bytes) -> Any:
    from eddy.streams.dead_letters.letter import RawRecord

    return RawRecord(f"{settings.topic_prefix}events", 0, offset, key, value, [])


@pytest.mark.parametrize("engine", ["poll", "faust"])
def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    deployment: FeatureDeployment, engine: str
) -> None:
    """Either engine (EDDY_FEATURE_ENGINE) commits only what the pipeline made durable."""
    deployment.settings = deployment.settings.model_copy(update={"feature_engine": engine})
    base = quiet_hour_base()
    entities = [f"c{i}" for i in range(40)]
    rng = random.Random(11)
    events = [
        (e.encode(), event(e, f"{e}-{j}", base + j * 0.5, rng.uniform(0, 100), label=j % 2))
        for j in range(60)
        for e in entities
    ]
    labelled = sum(1 for _, v in events if b'"label":1' in v or b'"label":0' in v)
    partway = kill_partway_and_finish(
        deployment, events, entities, base + 120, deadline_s=DEADLINE_S, every_s=POLL_S
    )
    examples = list(
        read_topic(
            deployment.settings,
            deployment.topic(Topic.TRAINING_EXAMPLES),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=5.0,
        )
    )
    by_id: dict[str, list[Any]] = {}
    for record in examples:
        by_id.setdefault(record.value["example_id"], []).append(record.value)

    assert 0 < partway <= len(events) // 2
    assert len(by_id) == labelled, "a training example was lost"
    for copies in by_id.values():  # redelivered copies are identical
        assert all(copy == copies[0] for copy in copies)


def test_a_worker_whose_events_topic_is_deleted_says_so_and_stops(
    deployment: FeatureDeployment,
) -> None:
    """faust would wait for a deleted topic's partitions for ever, healthy to every
    probe; and no broker Eddy starts brings the topic back by itself."""
    deployment.settings = deployment.settings.model_copy(update={"topic_check_s": 1.0})
    worker = deployment.start_worker()
    producer = make_producer(deployment.settings)
    base = quiet_hour_base()
    producer.send(deployment.topic(Topic.EVENTS), key=b"u", value=event("u", "e-before", base, 1.0))
    producer.flush()
    producer.close()
    store = deployment.store()
    wait_until(  # running, reading the topic
        lambda: "e-before" in store.load(["u"])["u"].state.seen,
        "the event to be applied",
        timeout_s=DEADLINE_S,
        logs=deployment.logs,
        alive=lambda: worker.poll() is None,
    )
    admin = make_admin(deployment.settings)
    try:
        admin.delete_topics([deployment.topic(Topic.EVENTS)])
    finally:
        admin.close()
    try:
        code = worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running\n{deployment.logs()}")
    assert code == EXIT_FAILED_BATCH
    assert f"topic {deployment.topic(Topic.EVENTS)} no longer exists" in deployment.logs()


def test_a_flushed_redis_is_rebuilt_identically_from_kafka(deployment: FeatureDeployment) -> None:
    base = quiet_hour_base()
    entities = [f"r{i}" for i in range(10)]
    events = [
        (e.encode(), event(e, f"{e}-{j}", base + j, float(j))) for j in range(20) for e in entities
    ]
    deployment.start_worker()
    send_records(deployment.settings, deployment.topic(Topic.EVENTS), events)
    store = deployment.store()
    wait_until(
        lambda: set(applied_counts(store, entities, base + 60).values()) == {20},
        "the events to be applied",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    before = {e: encode_state(s.state) for e, s in store.load(entities).items()}
    for worker in deployment.workers:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)

    client = make_redis(deployment.settings)
    for key in client.scan_iter(match=f"{deployment.settings.topic_prefix}features:*"):
        client.delete(key)
    assert all(s.rev == 0 for s in store.load(entities).values())

    totals = rebuild(deployment.settings, FEATURES, None)
    after = {e: encode_state(s.state) for e, s in store.load(entities).items()}
    assert after == before
    assert totals["new"] == len(events)


def test_a_rebuild_before_the_worker_leaves_its_events_training_examples_to_send(
    deployment: FeatureDeployment,
) -> None:
    """Events no worker has processed yet are not the rebuild's: folded there without
    side outputs, they would be duplicates to the worker, which would send no training
    example for them (found by review: `eddy apply` before `eddy run all`)."""
    base = quiet_hour_base()
    entities = [f"w{i}" for i in range(5)]
    labelled = [
        (e.encode(), event(e, f"{e}-{j}", base + j, float(j), label=j % 2 == 0))
        for j in range(8)
        for e in entities
    ]
    send_records(deployment.settings, deployment.topic(Topic.EVENTS), labelled)
    totals = rebuild(deployment.settings, FEATURES, None)
    assert totals["new"] == 0, "nothing committed by the feature workers: nothing rebuilt"
    deployment.start_worker()
    store = deployment.store()
    wait_until(
        lambda: set(applied_counts(store, entities, base + 60).values()) == {8},
        "the events to be applied",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    examples = {
        record.value["example_id"]
        for record in read_topic(
            deployment.settings,
            deployment.topic(Topic.TRAINING_EXAMPLES),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=READ_IDLE_S,
        )
    }
    assert examples == {f"{e}-{j}" for j in range(8) for e in entities}


class PrivateRedis:
    """A redis-server of a test's own, without persistence: killed, it comes back empty."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        self.server = subprocess.Popen(
            [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        errors: list[redis.ConnectionError] = []

        def answers() -> bool:
            try:
                client.ping()
            except redis.ConnectionError as exc:  # still starting
                errors.append(exc)
                return False
            return True

        wait_until(
            answers,
            f"the private redis-server on port {self.port} to answer",
            timeout_s=30,
            every_s=0.1,
            logs=lambda: f"the last error: {errors[-1]!r}",
        )
        return self.server

    def kill(self) -> None:
        self.server.kill()
        self.server.wait(timeout=30)


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.server.terminate()
    server.server.wait(timeout=30)


@pytest.fixture
def private_redis(private_redis_server: PrivateRedis) -> str:
    """A redis-server of this test's own (its memory limit is changed under load)."""
    return private_redis_server.url


def test_a_redis_that_comes_back_without_acknowledged_writes_is_repaired_from_kafka(
    deployment: FeatureDeployment, private_redis_server: PrivateRedis
) -> None:
    """Offsets are committed once Redis acknowledged the writes; a Redis that then comes
    back without them (no persistence here; a lagging replica or lost disk elsewhere)
    would lose those events for good. The watermark written with the states shows it,
    and the worker re-applies the lost offsets from the events topic by itself."""
    deployment.settings = deployment.settings.model_copy(
        update={"redis_url": private_redis_server.url}
    )
    base = quiet_hour_base()
    entities = [f"lost-{i}" for i in range(10)]

    def round_of(first: int, count: int) -> list[tuple[bytes | None, bytes | None]]:
        return [
            (e.encode(), event(e, f"{e}-{j}", base + j, float(j)))
            for j in range(first, first + count)
            for e in entities
        ]

    deployment.start_worker()
    send_records(deployment.settings, deployment.topic(Topic.EVENTS), round_of(0, 10))
    store = deployment.store()
    wait_until(
        lambda: set(applied_counts(store, entities, base + 60).values()) == {10},
        "the first events applied",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    private_redis_server.kill()
    private_redis_server.start()
    assert set(applied_counts(store, entities, base + 60).values()) == {0}, "Redis came back empty"

    send_records(deployment.settings, deployment.topic(Topic.EVENTS), round_of(10, 5))
    wait_until(
        lambda: set(applied_counts(store, entities, base + 60).values()) == {15},
        "every event applied again, the lost ones included",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    assert "lost writes it had acknowledged" in deployment.logs()
    assert all(worker.poll() is None for worker in deployment.workers)


@pytest.mark.parametrize("engine", ["poll", "faust"])
def test_a_batch_redis_refuses_ends_the_worker_unacknowledged_and_a_restart_applies_it(
    deployment: FeatureDeployment, private_redis: str, engine: str
) -> None:
    """faust restarts a failed agent in-process and acknowledges the batch in hand: a
    batch that failed for good (not an outage) was committed unapplied. Redis out of
    memory is such a failure: the worker must exit with nothing committed, whichever
    engine consumes the batches."""
    deployment.settings = deployment.settings.model_copy(
        update={"redis_url": private_redis, "feature_engine": engine}
    )
    refusing = redis.Redis.from_url(private_redis)
    refusing.config_set("maxmemory", 1)  # every write: OOM command not allowed
    base = quiet_hour_base()
    entities = [f"oom-{i}" for i in range(5)]
    records = [
        (entity.encode(), event(entity, f"{entity}-{n}", base + n, 1.0))
        for n in range(4)
        for entity in entities
    ]
    send_records(deployment.settings, deployment.topic(Topic.EVENTS), records)
    worker = deployment.start_worker()
    try:
        code = worker.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker went on past a refused batch\n{deployment.logs()}")
    assert code == EXIT_FAILED_BATCH, deployment.logs()
    admin = make_admin(deployment.settings)
    try:
        committed = committed_offsets(admin, app_id(deployment.settings))
    finally:
        admin.close()
    assert not any(committed.values()), f"committed unapplied: {committed}"

    refusing.config_set("maxmemory", 0)
    deployment.start_worker()
    every = dict.fromkeys(entities, 4)
    wait_until(
        lambda: applied_counts(deployment.store(), entities, base + 10) == every,
        "every refused event applied after the restart",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
