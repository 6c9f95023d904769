"""The prediction service over real Kafka and Redis, driven as outside applications would."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from eddy.services.ops.console import read_topic
from eddy.services.registry.opening import open_registry
from eddy.services.registry.tracing import trace_request
from eddy.services.serving.client import PredictionClient
from eddy.streams.features.compute import EntityState, apply_event
from eddy.streams.features.definitions import FEATURES
from eddy.streams.store.online import OnlineStore, StoredState
from eddy.streams.store.snapshots import ServedAnswer, SnapshotStore
from eddy.streams.transport.clients import make_admin, make_redis
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.predictors import LINEAGE, Service, answers_consumer
from tests.waiting import wait_until

DEADLINE_S = 60.0


def trained(seed: int, flip: bool = False) -> Any:
    rng = random.Random(seed)
    xs = [{"amount": rng.uniform(0, 100)} for _ in range(300)]
    ys = [(x["amount"] > 50) != flip for x in xs]
    return make_pipeline(DictVectorizer(sparse=False), LogisticRegression()).fit(xs, ys)


def collect(
    consumer: KafkaConsumer, count: int, service: Service
) -> list[tuple[int, dict[str, Any]]]:
    found: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(found) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(found)} of {count} answers\n{service.log.read_text()[-3000:]}")
        for tp, records in consumer.poll(timeout_ms=200).items():
            found += [(tp.partition, orjson.loads(r.value)) for r in records]
    return found


def send_requests(
    service: Service, requests: list[bytes | dict[str, Any]], key: bytes = b"k"
) -> None:
    producer = KafkaProducer(bootstrap_servers=service.settings.kafka_bootstrap)
    try:
        for request in requests:
            value = request if isinstance(request, bytes) else orjson.dumps(request)
            producer.send(service.topic(Topic.PREDICTION_REQUESTS), key=key, value=value)
        producer.flush()
    finally:
        producer.close()


@pytest.fixture
def service(deployment_settings: DeploymentSettings, tmp_path: Path) -> Iterator[Service]:
    settings = deployment_settings("pred", model_name="m")
    running = Service(settings, open_registry(settings), None, tmp_path / "predictor.log")
    yield running
    running.stop()


def with_champion(service: Service) -> None:
    service.registry.register("m", "sklearn", trained(1), {"log_loss": 0.3}, LINEAGE)
    service.registry.promote("m", 1, "test", "initial")


def test_requests_from_a_plain_producer_get_answers_with_version_and_features(
    service: Service,
) -> None:
    with_champion(service)
    state = EntityState()
    apply_event(state, FEATURES, "e1", time.time() - 30, {"amount": 80.0})
    OnlineStore(
        make_redis(service.settings),
        service.settings.topic_prefix,
        3600,
        states=FEATURES.state_fingerprint(),
    ).save({"u1": StoredState(0, state)})
    service.start()
    consumer = answers_consumer(service)
    send_requests(
        service,
        [
            {"request_id": "r-online", "entity_id": "u1", "features": {}},
            {"request_id": "r-own", "entity_id": "u2", "features": {"amount": 10.0}},
        ],
    )
    answers = {a["request_id"]: a for _, a in collect(consumer, 2, service)}
    consumer.close()
    online, own = answers["r-online"], answers["r-own"]
    assert online["prediction"] is True, "the online feature amount=80 was not used"
    assert own["prediction"] is False
    assert online["model"] == "m"
    assert online["model_version"] == "1"
    assert set(online["proba"]) == {"False", "True"}
    assert 25 <= online["freshness_s"] <= 120
    assert online["latency_ms"] >= 0
    assert "freshness_s" not in own or own["freshness_s"] is None

    # What was served is kept with the features it was served with: the label that
    # comes back for the request scores the champion itself.
    snapshots = SnapshotStore(make_redis(service.settings), service.settings.topic_prefix, 3600)
    served = snapshots.fetch(["r-online", "r-own"])
    assert served["r-online"].served == ServedAnswer("m@1", True, online["proba"]["True"])
    assert served["r-own"].served == ServedAnswer("m@1", False, own["proba"]["True"])

    traced = trace_request(service.settings, service.registry, "r-online")
    assert traced is not None
    assert traced["model"]["name"] == "m@1"
    assert traced["caused_by"] == {"type": "alert", "id": "m:concept:7"}
    assert traced["lineage"]["trained_on"] == {"events[0]": [0, 99]}


def test_each_kind_of_bad_request_gets_an_error_answer_and_a_dead_letter(
    service: Service,
) -> None:
    with_champion(service)
    service.start()
    consumer = answers_consumer(service)
    bad: list[bytes | dict[str, Any]] = [
        b"{not json",
        {"request_id": "r-no-entity", "features": {}},
        {"request_id": "r-unknown-field", "entity_id": "u", "colour": "red"},
        b'{"request_id": "r-nan", "entity_id": "u", "features": {"amount": NaN}}',
        {"request_id": "r-bad-reply", "entity_id": "u", "reply_topic": "no spaces allowed"},
        {"request_id": "r-ok", "entity_id": "u", "features": {"amount": 99.0}},
    ]
    send_requests(service, bad)
    answers = [a for _, a in collect(consumer, len(bad), service)]
    consumer.close()
    errors = [a for a in answers if a.get("error")]
    assert len(errors) == len(bad) - 1
    assert all(a["error"]["code"] == "invalid_request" for a in errors)
    by_id = {a["request_id"]: a for a in answers}
    assert "entity_id" in by_id["r-no-entity"]["error"]["message"]
    assert by_id["r-nan"]["error"]["message"].startswith("non_finite_number")
    assert by_id["r-ok"]["prediction"] is True
    letters = list(
        read_topic(
            service.settings,
            service.topic(Topic.DEAD_LETTER),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=3.0,
        )
    )
    assert len(letters) == len(bad) - 1
    assert service.process is not None
    assert service.process.poll() is None


def test_hostile_requests_get_error_answers_and_the_predictor_keeps_serving(
    service: Service,
) -> None:
    """Each of these ended or stalled the predictor once: a deep nesting re-parsed to
    salvage its id (RecursionError), an integer beyond 64 bits (overflow when scored),
    reply topics internal to the broker or Eddy's own (a non-retriable send error, or
    answers read back as control messages), an object of many keys with a repeat, an
    object of more keys than any message may have."""
    with_champion(service)
    service.start()
    consumer = answers_consumer(service)
    deep = b'{"request_id": "r-deep", "entity_id": "u", "x": ' + b"[" * 200_000
    keys = ", ".join(f'"f{i}": 1' for i in range(2_000))  # within the bound: checked
    repeated = f'{{"request_id": "r-keys", "entity_id": "u", "features": {{{keys}, '
    too_many = ", ".join(f'"f{i}": 1' for i in range(30_000))
    too_many_keys = f'{{"request_id": "r-many", "entity_id": "u", "x": {{{too_many}}}}}'
    hostile: list[bytes | dict[str, Any]] = [
        deep + b"]" * 200_000 + b"}",
        b'{"request_id": "r-int", "entity_id": "u", "features": {"amount": 1' + b"0" * 400 + b"}}",
        {"request_id": "r-internal", "entity_id": "u", "reply_topic": "__consumer_offsets"},
        {
            "request_id": "r-own",
            "entity_id": "u",
            "reply_topic": service.topic(Topic.CONTROL),
        },
        (repeated + '"f1999": 2}}').encode(),
        too_many_keys.encode(),
        {"request_id": "r-unknown", "entity_id": "u", "reply_topic": "app.nobody-made-this"},
        {"request_id": "r-ok", "entity_id": "u", "features": {"amount": 99.0}},
    ]
    send_requests(service, hostile)
    answers = {a["request_id"]: a for _, a in collect(consumer, len(hostile), service)}
    consumer.close()
    assert answers.pop("r-ok")["prediction"] is True
    assert all(a["error"]["code"] == "invalid_request" for a in answers.values()), answers
    messages = {rid: a["error"]["message"] for rid, a in answers.items()}
    assert messages["r-int"].startswith("number_out_of_range")
    assert messages["r-internal"].startswith("forbidden_reply_topic")
    assert messages["r-own"].startswith("forbidden_reply_topic")
    assert messages["r-unknown"].startswith("unknown_reply_topic")
    assert messages["r-keys"] == "duplicate_key: key 'f1999' appears more than once"
    assert messages["r-many"].startswith("too_many_keys"), "refused before its fields"
    named = {"r-int", "r-internal", "r-own", "r-keys", "r-many", "r-unknown"}
    deep_id = next(rid for rid in messages if rid not in named)
    assert messages[deep_id].startswith("too_deep"), "a too-deep request is not parsed again"
    assert service.process is not None
    assert service.process.poll() is None


def test_an_answer_goes_to_the_reply_topic_the_application_created(service: Service) -> None:
    reply_topic = f"{service.settings.topic_prefix}app-replies"
    admin = make_admin(service.settings)
    try:
        admin.create_topics([NewTopic(reply_topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    with_champion(service)
    service.start()
    send_requests(
        service,
        [{"request_id": "r-app", "entity_id": "u", "reply_topic": reply_topic}],
    )
    (answer,) = read_topic(
        service.settings, reply_topic, from_beginning=True, max_messages=1, idle_timeout_s=60
    )
    assert answer.value["request_id"] == "r-app"
    assert answer.value.get("error") is None


def test_a_predictor_whose_requests_topic_is_deleted_says_so_and_stops(service: Service) -> None:
    """kafka-python's consumer would poll a deleted topic's nothing for ever, healthy to
    every probe; and no broker Eddy starts brings the topic back by itself."""
    service.settings = service.settings.model_copy(update={"topic_check_s": 1.0})
    with_champion(service)
    service.start()
    consumer = answers_consumer(service)
    send_requests(service, [{"request_id": "r-before", "entity_id": "u"}])
    collect(consumer, 1, service)  # serving: past its start, reading the topic
    consumer.close()
    admin = make_admin(service.settings)
    try:
        admin.delete_topics([service.topic(Topic.PREDICTION_REQUESTS)])
    finally:
        admin.close()
    assert service.process is not None
    try:
        code = service.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running\n{service.log.read_text()[-3000:]}")
    assert code != 0
    log = service.log.read_text()
    assert f"topic {service.topic(Topic.PREDICTION_REQUESTS)} no longer exists" in log, log[-3000:]


def test_a_cold_start_answers_no_champion_instead_of_guessing(service: Service) -> None:
    service.start()
    client = PredictionClient(service.settings)
    try:
        answer = client.predict("u", {"amount": 1.0}, timeout_s=30)
    finally:
        client.close()
    assert answer.prediction is None
    assert answer.error is not None
    assert answer.error.code == "no_champion"


def test_a_live_model_swap_loses_no_request_and_versions_move_forward(
    service: Service,
) -> None:
    with_champion(service)
    service.registry.register("m", "sklearn", trained(2, flip=True), {"log_loss": 0.2}, LINEAGE)
    service.start()
    consumer = answers_consumer(service)
    producer = KafkaProducer(bootstrap_servers=service.settings.kafka_bootstrap)
    sent: list[str] = []
    answers: list[tuple[int, dict[str, Any]]] = []
    features = {"amount": 75.0}

    def load_until(version: str) -> None:
        """Steady load (50 requests every 0.1 s) until an answer names ``version``:
        however long the predictor takes to start or notice the swap, it is under load."""
        deadline = time.monotonic() + DEADLINE_S
        while not any(a["model_version"] == version for _, a in answers):
            if time.monotonic() > deadline:
                pytest.fail(f"no answer from version {version}\n{service.log.read_text()[-3000:]}")
            for _ in range(50):
                request_id, entity_id = f"r{len(sent)}", f"u{len(sent) % 30}"
                request = {"request_id": request_id, "entity_id": entity_id, "features": features}
                producer.send(
                    service.topic(Topic.PREDICTION_REQUESTS),
                    key=entity_id.encode(),
                    value=orjson.dumps(request),
                )
                sent.append(request_id)
            producer.flush()
            time.sleep(0.1)
            for tp, records in consumer.poll(timeout_ms=0).items():
                answers.extend((tp.partition, orjson.loads(r.value)) for r in records)

    try:
        load_until("1")
        service.registry.promote("m", 2, "test", "swap under load")
        load_until("2")
    finally:
        producer.close()
    answers += collect(consumer, len(sent) - len(answers), service)
    consumer.close()

    assert sorted(a["request_id"] for _, a in answers) == sorted(sent)
    assert not [a for _, a in answers if a.get("error")]
    assert {a["model_version"] for _, a in answers} == {"1", "2"}
    for partition in range(3):
        sequence = [a["model_version"] for p, a in answers if p == partition]
        assert sequence == sorted(sequence), f"partition {partition} went back to version 1"
    for _, answer in answers:  # each answer is the named version's own prediction
        assert answer["prediction"] is (answer["model_version"] == "1")


def test_a_killed_predictor_loses_no_request_and_repeats_answers_identically(
    service: Service,
) -> None:
    with_champion(service)
    service.start()
    total = 600
    requests: list[bytes | dict[str, Any]] = [
        {"request_id": f"k{i}", "entity_id": f"u{i % 7}", "features": {"amount": float(i % 100)}}
        for i in range(total)
    ]
    consumer = answers_consumer(service)
    send_requests(service, requests[:300])
    answers = collect(consumer, 1, service)  # it is answering
    assert service.process is not None
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(timeout=30)
    send_requests(service, requests[300:])
    service.start()
    expected = {r["request_id"] for r in requests if isinstance(r, dict)}
    deadline = time.monotonic() + DEADLINE_S
    while {a["request_id"] for _, a in answers} != expected:
        if time.monotonic() > deadline:
            missing = expected - {a["request_id"] for _, a in answers}
            pytest.fail(
                f"{len(missing)} requests never answered\n{service.log.read_text()[-3000:]}"
            )
        answers += [
            (tp.partition, orjson.loads(r.value))
            for tp, rs in consumer.poll(timeout_ms=200).items()
            for r in rs
        ]
    consumer.close()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for _, answer in answers:
        by_id.setdefault(answer["request_id"], []).append(answer)
    assert set(by_id) == expected
    for copies in by_id.values():
        assert {c["prediction"] for c in copies} == {copies[0]["prediction"]}
        assert {c["model_version"] for c in copies} == {"1"}


def request_records(service: Service, count: int) -> list[Any]:
    """The records on the requests topic, as a predictor's poll returns them."""
    consumer = answers_consumer(service)
    partitions = [TopicPartition(service.topic(Topic.PREDICTION_REQUESTS), p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(records) < count and time.monotonic() < deadline:
        records += [r for rs in consumer.poll(timeout_ms=200).values() for r in rs]
    consumer.close()
    return records


def test_a_redelivered_request_gets_its_logged_answer_even_after_a_swap(
    service: Service,
) -> None:
    """What a crash between sending and committing looks like to the partition's next
    owner: the same records again, while a new champion (here: the opposite concept)
    serves. The window covers the records a crash can leave uncommitted after an
    assignment; those the log has no answer for are new requests, scored by the champion
    of the moment."""
    from eddy.services.serving.predictor import Predictor

    with_champion(service)
    batch = service.settings.predictor_batch_size
    send_requests(
        service,
        [
            {"request_id": f"r{i}", "entity_id": "u1", "features": {"amount": float(i)}}
            for i in range(batch + 20)
        ],
    )
    records = request_records(service, batch + 20)
    partition = (records[0].topic, records[0].partition)
    first_owner = Predictor(service.settings, service.registry, "m", features=FEATURES, schema=None)
    try:
        first_owner.handle(records[:batch])
    finally:
        first_owner.consumer.close(autocommit=False)
    service.registry.register("m", "sklearn", trained(1, flip=True), {"log_loss": 0.3}, LINEAGE)
    service.registry.promote("m", 2, "test", "the opposite concept")

    next_owner = Predictor(service.settings, service.registry, "m", features=FEATURES, schema=None)
    try:
        next_owner.redelivery.assigned([partition])
        next_owner.handle(records)  # the uncommitted batch again, then 20 new requests
    finally:
        next_owner.consumer.close(autocommit=False)
    consumer = answers_consumer(service)
    answers = collect(consumer, 2 * batch + 20, service)
    consumer.close()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for _, answer in answers:
        by_id.setdefault(answer["request_id"], []).append(answer)
    for i in range(batch):
        first, again = by_id[f"r{i}"]
        assert again == first
        assert first["model_version"] == "1"
    for i in range(batch, batch + 20):
        (only,) = by_id[f"r{i}"]
        assert only["model_version"] == "2"
        assert only["prediction"] is (float(i) <= 50)


def test_an_unreadable_request_log_entry_means_answering_afresh(service: Service) -> None:
    from eddy.services.serving.predictor import Predictor
    from eddy.streams.store import keys

    with_champion(service)
    send_requests(service, [{"request_id": "odd", "entity_id": "u1", "features": {"amount": 70.0}}])
    (record,) = request_records(service, 1)
    redis = make_redis(service.settings)
    redis.set(keys.request_log(service.settings.topic_prefix, "odd"), b"{not json")
    predictor = Predictor(service.settings, service.registry, "m", features=FEATURES, schema=None)
    try:
        predictor.redelivery.assigned([(record.topic, record.partition)])
        outcome = predictor.handle([record])
    finally:
        predictor.consumer.close(autocommit=False)
    assert (outcome.answered, outcome.errors) == (1, 0)
    logged = orjson.loads(redis.get(keys.request_log(service.settings.topic_prefix, "odd")))
    assert logged["output"]["model_version"] == "1"


def test_an_answer_another_owner_logged_first_is_the_one_sent_again(service: Service) -> None:
    """Two live owners of one partition: the old one (its commit will be refused) logs
    and sends an answer after the new one looked the log up. The new one must not send a
    different answer: its log write finds the entry and it sends the logged answer. An
    entry left by another record under a reused request id is replaced, as before."""
    from eddy.services.ops import metrics
    from eddy.services.serving.predictor import Predictor
    from eddy.streams.store import keys

    with_champion(service)
    send_requests(
        service,
        [
            {"request_id": f"r{i}", "entity_id": "u1", "features": {"amount": 70.0}}
            for i in range(3)
        ],
    )
    records = request_records(service, 3)
    redis = make_redis(service.settings)
    reused = keys.request_log(service.settings.topic_prefix, "r2")
    redis.set(reused, orjson.dumps({"source": "elsewhere[0]@7", "output": {"request_id": "r2"}}))
    old_owner = Predictor(service.settings, service.registry, "m", features=FEATURES, schema=None)
    try:
        old_owner.handle(records[:1])
    finally:
        old_owner.consumer.close(autocommit=False)
    service.registry.register("m", "sklearn", trained(1, flip=True), {"log_loss": 0.3}, LINEAGE)
    service.registry.promote("m", 2, "test", "the opposite concept")
    new_owner = Predictor(service.settings, service.registry, "m", features=FEATURES, schema=None)
    resent_before = metrics.REQUESTS.labels("resent")._value.get()
    try:
        outcome = new_owner.handle(records)  # no record is a suspect: its lookup came first
    finally:
        new_owner.consumer.close(autocommit=False)
    assert outcome.answered == 3
    consumer = answers_consumer(service)
    answers = collect(consumer, 4, service)
    consumer.close()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for _, answer in answers:
        by_id.setdefault(answer["request_id"], []).append(answer)
    first, again = by_id["r0"]
    assert again == first
    assert first["model_version"] == "1"
    assert [a["model_version"] for a in by_id["r1"] + by_id["r2"]] == ["2", "2"]
    assert metrics.REQUESTS.labels("resent")._value.get() - resent_before == 1
    replaced = orjson.loads(redis.get(reused))
    assert replaced["source"] != "elsewhere[0]@7"
    assert replaced["output"]["model_version"] == "2"


def test_eddy_score_writes_the_champions_predictions_beside_the_file(
    service: Service, tmp_path: Path
) -> None:
    with_champion(service)
    table = tmp_path / "batch.csv"
    table.write_text("entity_id,amount\nu1,90\nu2,10\nu3,\n")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("eddy")), "score", str(table)],
        env=service.settings.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    scored = (tmp_path / "batch.scored.csv").read_text().splitlines()
    assert scored[0] == "entity_id,amount,prediction,model_version,proba_False,proba_True"
    assert scored[1].split(",")[2:4] == ["True", "m@1"]
    assert scored[2].split(",")[2:4] == ["False", "m@1"]
    assert len(scored) == 4


def test_the_predictor_serves_prometheus_metrics(service: Service) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:  # a free port; the predictor adds its role offset
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] - 4
    service.settings = service.settings.model_copy(update={"metrics_port": base})
    with_champion(service)
    service.start()
    consumer = answers_consumer(service)
    send_requests(service, [b"{not json"])  # refused: an error answer and a dead letter
    assert collect(consumer, 1, service)[0][1]["error"]["code"] == "invalid_request"
    consumer.close()
    client = PredictionClient(service.settings)
    try:
        client.predict("u", {"amount": 70.0}, timeout_s=30)
    finally:
        client.close()
    url = f"http://127.0.0.1:{base + 4}/metrics"
    answered = 'eddy_requests_total{outcome="answered"} '
    scraped: list[str] = []

    def counted() -> bool:
        scraped.append(urllib.request.urlopen(url, timeout=10).read().decode())
        return answered in scraped[-1]

    # The predictor counts an answer once the broker acknowledged it, and the client
    # may read that answer first: the count follows within moments, never before.
    wait_until(counted, "the answered request in the metrics", timeout_s=10, every_s=0.1)
    text = scraped[-1]
    assert f"{answered}1.0" in text
    assert 'eddy_dead_letters_total{source="prediction-requests"} 1.0' in text
    assert (
        f'eddy_consumer_lag{{partition="0",topic="{service.topic(Topic.PREDICTION_REQUESTS)}"}}'
        in text
    )
    assert 'eddy_serving_version{alias="champion",model="m"} 1.0' in text
    assert "eddy_request_latency_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text
    # What the learner's live estimate reads (gathered for a second, then sent): the
    # one answer scored, not the refusal.
    sent: list[Any] = []

    def served_sent() -> bool:
        sent[:] = read_topic(
            service.settings,
            service.topic(Topic.SERVED_ANSWERS),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=0.5,
        )
        return bool(sent)

    wait_until(served_sent, "the served answers", timeout_s=10, every_s=0.2)
    (served,) = sent
    assert served.value["model_version"] == "m@1"
    assert len(served.value["positives"]) == 1
