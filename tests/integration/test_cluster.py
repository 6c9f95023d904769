"""Eddy on the clustered stack: three KRaft brokers (replication factor 3, two in sync)
and a Redis Cluster of three masters with a replica each (``scripts/stack.sh up
--cluster``), through redis-py's cluster client (``EDDY_REDIS_CLUSTER``).

A batch's keys spread over every master: these tests hold the store's per-slot reads and
compare-and-set, the per-master watermarks, the per-slot snapshot counts, and a feature
worker and a predictor end to end, with entity ids that would break a naive hash tag.
The faults (a broker or a Redis master killed under load) are the chaos suite's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from redis.cluster import RedisCluster
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from eddy.services.config.settings import PROJECT_ROOT, Settings
from eddy.services.registry.opening import open_registry
from eddy.streams.features.compute import EntityState, apply_event
from eddy.streams.features.definitions import FEATURES
from eddy.streams.store import keys
from eddy.streams.store.online import OnlineStore, StoredState
from eddy.streams.store.slots import slot_of
from eddy.streams.store.snapshots import Snapshot, SnapshotStore
from eddy.streams.transport.clients import make_redis
from eddy.streams.transport.topics import Topic
from tests import factories
from tests.integration.feature_workers import (
    FeatureDeployment,
    event,
    kill_partway_and_finish,
    quiet_hour_base,
)
from tests.integration.predictors import LINEAGE, Service, answers_consumer
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
# Where scripts/stack.sh keeps the cluster the session started (its pid files).
STACK_DATA = Path(os.environ.get("EDDY_DATA_DIR") or PROJECT_ROOT / ".eddy")
# The port of redis-1 (STACK_CLUSTER_REDIS_PORT): node N listens on it + N - 1.
CLUSTER_FIRST_PORT = int(os.environ.get("STACK_CLUSTER_REDIS_PORT") or 17001)
DEADLINE_S = 120.0
POLL_S = 0.5
# Ids a naive hash tag would split over slots (the empty one only where the contracts
# allow it: in the store, not in an event).
ODD_IDS = ["}u{", "{u}", "~x", "a{b}c"]


@pytest.fixture
def cluster(cluster_stack: Settings, tmp_path: Path) -> Settings:
    """The clustered stack's settings for one test, its topics created (RF 3)."""
    return factories.deployment_settings(cluster_stack, tmp_path / "data", "cluster")


def client_of(settings: Settings) -> RedisCluster:
    client = make_redis(settings)
    assert isinstance(client, RedisCluster)
    return client


def test_the_cluster_is_what_it_claims(cluster: Settings) -> None:
    roles = Counter(
        "master" if "master" in node["flags"] else "replica"
        for node in client_of(cluster).cluster_nodes().values()
    )
    assert roles == {"master": 3, "replica": 3}
    assert cluster.replication_factor == 3
    assert len(cluster.kafka_bootstrap.split(",")) == 3


def test_a_batch_over_every_master_is_read_and_written_with_its_lost_races_told(
    cluster: Settings,
) -> None:
    client = client_of(cluster)
    store = OnlineStore(client, cluster.topic_prefix, 3600, states="s1")
    ids = [f"u{i}" for i in range(400)] + [*ODD_IDS, ""]
    masters = {client.get_node_from_key(store.key(e)).name for e in ids}
    assert len(masters) == 3, "the batch should span every master"

    read = store.load(ids)
    assert {stored.rev for stored in read.values()} == {0}
    assert store.save(read, {"events:0": 41, "events:1": 7}) == []
    assert {stored.rev for stored in store.load(ids).values()} == {1}

    # A second writer still holding revision 0 for some entities on every master loses
    # exactly those, and the others it writes.
    stale = {e: StoredState(0, EntityState()) for e in ids[::9]}
    fresh = {e: s for e, s in store.load(ids[1::9]).items() if e not in stale}
    lost = store.save({**stale, **fresh}, {"events:0": 42})
    assert sorted(lost) == sorted(stale)
    after = store.load(ids)
    assert {after[e].rev for e in fresh} == {2}
    assert {after[e].rev for e in stale} == {1}

    # Watermarks are raised on every master, never lowered.
    store.save({}, {"events:0": 30})
    assert store.watermarks_of(["events:0", "events:1", "events:2"]) == {
        "events:0": 42,
        "events:1": 7,
        "events:2": -1,
    }


def test_a_master_that_lost_its_watermark_shows_the_loss(cluster: Settings) -> None:
    """A replica promoted without the last writes of its master has a lower watermark
    than the others: the lowest counts, so the pipeline repairs what it lacks."""
    client = client_of(cluster)
    store = OnlineStore(client, cluster.topic_prefix, 3600, states="s2")
    store.save({"u1": StoredState(0, EntityState())}, {"events:0": 99})
    marks = list(client.scan_iter(match=f"{cluster.topic_prefix}features:s2:applied:*"))
    assert len(marks) == 3, "one watermark per master"
    client.hset(marks[1], "events:0", 50)
    assert store.watermarks_of(["events:0"]) == {"events:0": 50}
    client.delete(marks[2])
    assert store.watermarks_of(["events:0"]) == {"events:0": -1}


def test_snapshots_over_every_slot_are_counted_once(cluster: Settings) -> None:
    client = client_of(cluster)
    snapshots = SnapshotStore(client, cluster.topic_prefix, 3600)
    batch = [(f"r{i}", Snapshot(f"u{i % 7}", 1.0, {"amount": float(i)})) for i in range(300)]
    odd = [(record_id, Snapshot("u1", 2.0, {"amount": 1.0})) for record_id in [*ODD_IDS, ""]]
    snapshots.record(batch + odd)
    snapshots.record(batch[:100])  # a redelivered batch records nothing new
    assert SnapshotStore(client, cluster.topic_prefix, 3600).recorded() == 305
    found = snapshots.fetch([record_id for record_id, _ in batch + odd])
    assert len(found) == 305
    assert found["}u{"].at == 2.0
    assert found["r7"].features == {"amount": 7.0}
    assert len({slot_of(snapshots.key(record_id)) for record_id, _ in batch}) > 100

    snapshots.record_labels([("r1", True), ("{u}", False)])
    assert snapshots.fetch_labels(["r1", "{u}", "r2"]) == {"r1": True, "{u}": False}


def test_a_killed_feature_worker_on_the_cluster_loses_nothing_and_counts_nothing_twice(
    cluster: Settings, tmp_path: Path
) -> None:
    deployment = FeatureDeployment(cluster, tmp_path, [])
    base = quiet_hour_base()
    entities = [f"c{i}" for i in range(30)] + ODD_IDS
    rng = random.Random(3)
    events = [
        (e.encode(), event(e, f"{e}-{j}", base + j * 0.5, rng.uniform(0, 100)))
        for j in range(40)
        for e in entities
    ]
    try:
        kill_partway_and_finish(
            deployment, events, entities, base + 120, deadline_s=DEADLINE_S, every_s=POLL_S
        )
        store = deployment.store()
        marks = store.watermarks_of([f"{deployment.topic(Topic.EVENTS)}:{p}" for p in range(3)])
        assert sum(offset + 1 for offset in marks.values()) == len(events)
    finally:
        for worker in deployment.workers:
            worker.kill()
            worker.wait(timeout=30)


@pytest.fixture
def service(cluster: Settings, tmp_path: Path) -> Iterator[Service]:
    settings = cluster.model_copy(update={"model_name": "m", "prediction_cache": "hot"})
    running = Service(settings, open_registry(settings), None, tmp_path / "predictor.log")
    yield running
    running.stop()


def test_the_predictor_on_the_cluster_answers_every_request_with_online_features(
    service: Service,
) -> None:
    with_champion(service)
    store = OnlineStore(
        make_redis(service.settings),
        service.settings.topic_prefix,
        3600,
        states=FEATURES.state_fingerprint(),
    )
    entities = [f"u{i}" for i in range(40)] + ODD_IDS
    states = {}
    for n, entity in enumerate(entities):
        state = EntityState()
        apply_event(state, FEATURES, f"e{n}", time.time() - 30, {"amount": 90.0 * (n % 2)})
        states[entity] = StoredState(0, state)
    assert store.save(states) == []
    service.start()
    consumer = answers_consumer(service)
    requests = [
        {"request_id": f"q{i}", "entity_id": entities[i % len(entities)], "features": {}}
        for i in range(400)
    ]
    send_all(service, requests)
    answers = collect(consumer, len(requests), service)
    consumer.close()
    assert {a["request_id"] for a in answers} == {r["request_id"] for r in requests}
    asked = {r["request_id"]: entities.index(r["entity_id"]) for r in requests}
    for answer in answers:
        n = asked[answer["request_id"]]
        assert answer.get("error") is None, answer
        assert answer["prediction"] is (n % 2 == 1), "the online amount was not used"
        assert answer["model_version"] == "1"
    snapshots = SnapshotStore(make_redis(service.settings), service.settings.topic_prefix, 3600)
    served = snapshots.fetch([r["request_id"] for r in requests])
    assert len(served) == len(requests)
    hot = [keys.hot_requests(service.settings.topic_prefix, e, "m") for e in entities]
    assert sum(int(v or 0) for v in make_redis(service.settings).mget_nonatomic(hot)) == len(
        requests
    )


def collect(consumer: KafkaConsumer, count: int, service: Service) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(found) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(found)} of {count} answers\n{service.log.read_text()[-3000:]}")
        for records in consumer.poll(timeout_ms=200).values():
            found += [orjson.loads(r.value) for r in records]
    return found


def test_a_killed_master_is_ridden_out_by_the_predictor_and_a_new_client_finds_the_cluster(
    service: Service,
) -> None:
    """kill -9 of the node ``EDDY_REDIS_URL`` names, made a master first: the predictor
    waits out the failover in-process (no restart) and answers every request, and a
    client created while that node is down starts from the other nodes."""
    with_champion(service)
    url = urlparse(service.settings.redis_url)
    url_node = master_again(service.settings, url.hostname or "", url.port or 0)
    service.start()
    assert service.process is not None
    consumer = answers_consumer(service)
    pid_file = STACK_DATA / "cluster" / url_node / "redis.pid"
    pid = int(pid_file.read_text())
    assert f":{url.port}" in Path(f"/proc/{pid}/cmdline").read_text()
    try:
        os.kill(pid, signal.SIGKILL)
        requests = [
            {"request_id": f"f{i}", "entity_id": f"u{i % 9}", "features": {"amount": 70.0}}
            for i in range(200)
        ]
        send_all(service, requests)
        answers = collect(consumer, len(requests), service)
        by_id: dict[str, set[Any]] = {}
        for answer in answers:
            assert answer.get("error") is None, answer
            by_id.setdefault(answer["request_id"], set()).add(answer["prediction"])
        assert set(by_id) == {r["request_id"] for r in requests}
        assert all(len(predictions) == 1 for predictions in by_id.values())
        assert service.process.poll() is None, "the predictor ended instead of waiting"
        assert "Redis unavailable; retrying" in service.log.read_text()
        assert make_redis(service.settings).ping()
    finally:
        consumer.close()
        restarted = start_node(url_node)
    assert restarted.returncode == 0, restarted.stderr


def master_again(settings: Settings, host: str, port: int) -> str:
    """Make the node at ``host:port`` a master with its replica in sync, as every node
    sees it (an earlier run's kill left it a replica, or stopped); returns its name."""
    name = f"redis-{port - CLUSTER_FIRST_PORT + 1}"
    if start_node(name).returncode != 0:  # "already running" when it runs
        pytest.fail(f"could not start {name}")
    node = redis.Redis(host=host, port=port)
    if node.execute_command("ROLE")[0] != b"master":
        node.execute_command("CLUSTER", "FAILOVER")
    seeds = [n.rsplit(":", 1) for n in settings.redis_cluster_nodes.split(",")]
    peers = [redis.Redis(host=h, port=int(p)) for h, p in seeds]

    def settled() -> bool:
        role = node.execute_command("ROLE")
        seen = [peer.execute_command("CLUSTER", "NODES").decode() for peer in peers]
        return (
            role[0] == b"master"
            and len(role[2]) == 1
            and all(f"{host}:{port}@" in view and _is_master(view, port) for view in seen)
        )

    wait_until(settled, f"{name} to be a master every node agrees on", timeout_s=DEADLINE_S)
    return name


def _is_master(cluster_nodes: str, port: int) -> bool:
    line = next(line for line in cluster_nodes.splitlines() if f":{port}@" in line)
    return "master" in line.split()[2] and "fail" not in line.split()[2]


def start_node(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK_SCRIPT), "start-node", name, "--cluster"],
        env={**os.environ, "STACK_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )


def with_champion(service: Service) -> None:
    rng = random.Random(5)
    xs = [{"amount": rng.uniform(0, 100)} for _ in range(300)]
    model = make_pipeline(DictVectorizer(sparse=False), LogisticRegression())
    model.fit(xs, [x["amount"] > 50 for x in xs])
    service.registry.register("m", "sklearn", model, {"log_loss": 0.3}, LINEAGE)
    service.registry.promote("m", 1, "test", "initial")


def send_all(service: Service, requests: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=service.settings.kafka_bootstrap.split(","))
    for request in requests:
        producer.send(service.topic(Topic.PREDICTION_REQUESTS), value=orjson.dumps(request))
    producer.flush()
    producer.close()
