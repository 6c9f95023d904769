"""SIGTERM mid-stream, then a restart: nothing lost, nothing done twice (issue 8, item 3).

A worker stopped with SIGTERM must finish the work in hand, flush what it produces and
commit, so that its successor starts exactly where it stopped. Checked on real Kafka
and Redis with `eddy run features` and `eddy run learner` processes while a producer
keeps writing:

- the stopped worker exits 0, and what it committed equals what it applied;
- the restarted worker re-reads nothing (its own counters: no duplicate event seen);
- every input is applied exactly once (Redis counts, learned examples);
- the output topics hold no duplicate id at all (a crash may repeat outputs; a clean
  stop may not).
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from eddy.services.config.settings import Settings
from eddy.services.workers.features import app_id
from eddy.streams.dead_letters.letter import SOURCE_OFFSET, SOURCE_PARTITION
from eddy.streams.messages.contracts import Label
from eddy.streams.messages.validation import encode
from eddy.streams.store.snapshots import Snapshot, SnapshotStore
from eddy.streams.transport.admin import committed_offsets
from eddy.streams.transport.clients import make_admin, make_consumer, make_producer, make_redis
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.feature_workers import (
    FeatureDeployment,
    applied_counts,
    event,
    quiet_hour_base,
)
from tests.integration.learners import BASE_TIME, LearnerDeployment, examples, synthetic
from tests.network import free_port, get
from tests.waiting import wait_until

CHUNK = 40
CHUNK_PAUSE_S = 0.05
BACKLOG_CHUNK = 400
STOP_WAIT_S = 60
READ_S = 30.0  # only bounds a hang: reading stops at the end offsets
POLL_MS = 200
FEATURES_METRICS_OFFSET = 1
LEARNER_METRICS_OFFSET = 2
WARM_UP = 200
# The waits for the workers: test_learner's deadline and pace, which they used to share.
DEADLINE_S = 120.0
POLL_S = 0.3


Outgoing = tuple[str, bytes | None, bytes]  # topic, key, value


class Streamer(threading.Thread):
    """Sends ``records`` in small chunks with short pauses: a steady stream."""

    def __init__(self, settings: Settings, records: list[Outgoing], chunk: int = CHUNK) -> None:
        super().__init__(name="streamer", daemon=True)
        self.settings, self.records, self.chunk = settings, records, chunk
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = make_producer(self.settings)
        try:
            for start in range(0, len(self.records), self.chunk):
                for topic, key, value in self.records[start : start + self.chunk]:
                    producer.send(topic, key=key, value=value)
                producer.flush(timeout=60)
                time.sleep(CHUNK_PAUSE_S)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc
        finally:
            producer.close()

    def finish(self) -> None:
        self.join(timeout=STOP_WAIT_S)
        assert not self.is_alive(), "the stream did not finish"
        assert self.error is None, repr(self.error)


def stop_gracefully(process: subprocess.Popen[bytes], logs: Callable[[], str]) -> None:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_WAIT_S)
    assert code == 0, f"SIGTERM did not end the worker cleanly (exit {code})\n{logs()}"


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    admin = make_admin(settings)
    try:
        offsets = committed_offsets(admin, group)
    finally:
        admin.close()
    return {(tp.topic, tp.partition): offset for tp, offset in offsets.items()}


class Seen(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: Any  # the JSON value, or the raw bytes when not JSON
    headers: dict[str, str]


def every_record(settings: Settings, topic: str) -> list[Seen]:
    """Every record of ``topic`` up to its end offsets as of the call (no consumer group)."""
    consumer = make_consumer(settings, group_id=None)
    seen: list[Seen] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + READ_S
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for tp, records in consumer.poll(timeout_ms=POLL_MS).items():
                seen += [_seen(r) for r in records if r.offset < ends[tp]]
    finally:
        consumer.close()
    return seen


def _seen(raw: Any) -> Seen:
    try:
        value = orjson.loads(raw.value)
    except orjson.JSONDecodeError:
        value = raw.value
    headers = {k: v.decode() for k, v in raw.headers or []}
    return Seen(raw.topic, raw.partition, raw.offset, value, headers)


def scraped(port: int, family: str) -> dict[str, float]:
    """A counter's samples on a worker's /metrics, by their labels' values."""
    text = get(f"http://127.0.0.1:{port}/metrics").decode()
    return {
        ",".join(sample.labels.values()): sample.value
        for metric in text_string_to_metric_families(text)
        if metric.name == family
        for sample in metric.samples
        if sample.name == f"{family}_total"
    }


@pytest.fixture
def deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> Iterator[FeatureDeployment]:
    settings = deployment_settings("gs", partitions=3, feature_batch_size=50)
    deployment = FeatureDeployment(settings, tmp_path, [])
    yield deployment
    for worker in deployment.workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)


def test_feature_worker_sigterm_mid_stream_then_restart_applies_everything_once(
    deployment: FeatureDeployment,
) -> None:
    settings = deployment.settings
    base = quiet_hour_base()
    entities = [f"g{i}" for i in range(40)]
    events_topic = deployment.topic(Topic.EVENTS)
    stream: list[Outgoing] = []
    for j in range(80):
        for entity in entities:
            label = {"label": True} if j % 2 else {}
            value = event(entity, f"{entity}-{j}", base + j, 1.0, **label)
            stream.append((events_topic, entity.encode(), value))
        stream.append((events_topic, b"bad", b"not json %d" % j))  # one malformed per round
    valid = Counter(key.decode() for _, key, _ in stream if key and key != b"bad")
    labelled = {f"{e}-{j}" for e in entities for j in range(80) if j % 2}
    malformed = len(stream) - sum(valid.values())
    warm_up, rest = stream[: len(entities)], stream[len(entities) :]
    store = deployment.store()

    def applied() -> int:
        return sum(applied_counts(store, entities, base + 120).values())

    first = deployment.start_worker()
    Streamer(settings, warm_up).run()
    wait_until(
        lambda: applied() == len(warm_up),
        "the worker to start applying",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    streamer = Streamer(settings, rest, chunk=BACKLOG_CHUNK)  # the worker never idles
    streamer.start()
    wait_until(
        lambda: applied() > len(warm_up),
        "the stream to be flowing",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    stop_gracefully(first, deployment.logs)
    at_stop = applied()
    assert at_stop < sum(valid.values()), "everything was applied before the stop"

    letters_at_stop = len(every_record(settings, deployment.topic(Topic.DEAD_LETTER)))
    offsets = committed(settings, app_id(settings))
    assert sum(offsets.values()) == at_stop + letters_at_stop, (
        "the committed offsets are not exactly the records handled"
    )

    port = free_port()
    deployment.settings = settings.model_copy(
        update={"metrics_port": port - FEATURES_METRICS_OFFSET}
    )
    deployment.start_worker()
    streamer.finish()
    wait_until(
        lambda: applied_counts(store, entities, base + 120) == dict(valid),
        "every event to be applied",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )

    # The worker counts a batch once its effects are written: read the count once it
    # covers every event the restart handled, then check how it split.
    rest = sum(valid.values()) - at_stop
    wait_until(
        lambda: sum(scraped(port, "eddy_events").get(v, 0) for v in ("new", "duplicate")) >= rest,
        "the restarted worker's count of the events it handled",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    seen = scraped(port, "eddy_events")
    assert seen.get("duplicate", 0) == 0, "the restarted worker re-read applied events"
    assert seen["new"] == rest
    examples = Counter(
        r.value["example_id"]
        for r in every_record(settings, deployment.topic(Topic.TRAINING_EXAMPLES))
    )
    assert set(examples) == labelled
    assert max(examples.values()) == 1, "a training example was sent twice"
    letters = every_record(settings, deployment.topic(Topic.DEAD_LETTER))
    sources = Counter((r.headers[SOURCE_PARTITION], r.headers[SOURCE_OFFSET]) for r in letters)
    assert len(letters) == len(sources) == malformed, "a dead letter was lost or sent twice"


def with_metrics(deployment: LearnerDeployment) -> int:
    """The next learner started serves /metrics on a port of its own: returns it."""
    port = free_port()
    deployment.settings = deployment.settings.model_copy(
        update={"metrics_port": port - LEARNER_METRICS_OFFSET}
    )
    return port


def learned_by(port: int) -> float:
    return scraped(port, "eddy_examples_learned").get("", 0.0)


@pytest.fixture
def learner_deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> Iterator[LearnerDeployment]:
    settings = deployment_settings(
        "gsl",
        partitions=2,
        # Checkpoints only on the way out: the stop alone must save the state.
        checkpoint_every=10_000_000,
        checkpoint_interval_s=3600.0,
        snapshot_every=0,
    )
    deployment = LearnerDeployment(settings, tmp_path, [])
    yield deployment
    deployment.kill_running()


def interleave(
    in_order: list[Outgoing], others: list[Outgoing], rng: random.Random
) -> list[Outgoing]:
    """``in_order`` in its order, with ``others`` shuffled in at random places."""
    shuffled = others[:]
    rng.shuffle(shuffled)
    slots = [True] * len(in_order) + [False] * len(shuffled)
    rng.shuffle(slots)
    ordered, rest = iter(in_order), iter(shuffled)
    return [next(ordered) if keep else next(rest) for keep in slots]


def test_learner_sigterm_mid_stream_then_restart_learns_every_example_once(
    learner_deployment: LearnerDeployment,
) -> None:
    deployment = learner_deployment
    settings = deployment.settings
    examples_topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    labels_topic = deployment.topic(Topic.LABELS)
    rows = synthetic(4000, seed=31)
    half = len(rows) // 2
    rows = rows[:half] + [(x, not y) for x, y in rows[half:]]  # the concept flips: alerts
    learned = examples(rows, deployment.topic(Topic.TRAINING_EXAMPLES), entities=11)
    requests = [f"req-{i}" for i in range(300)]
    SnapshotStore(make_redis(settings), settings.topic_prefix, 3600).record(
        [
            (r, Snapshot(f"u{i % 11}", BASE_TIME + i, dict(rows[i][0])))
            for i, r in enumerate(requests)
        ]
    )
    labels = [
        Label(
            request_id=r,
            label=rows[i][1],
            event_time=datetime.fromtimestamp(BASE_TIME + i + 60, UTC),
        )
        for i, r in enumerate(requests)
    ]
    in_order: list[Outgoing] = [(examples_topic, e.entity_id.encode(), encode(e)) for e in learned]
    others = [(examples_topic, e.entity_id.encode(), encode(e)) for e in learned[::9]]  # again
    others += [(labels_topic, (label.request_id or "").encode(), encode(label)) for label in labels]
    # Duplicates and labels land anywhere; the examples keep their order, so the flip is a
    # change in time that the learner's detectors see (shuffled, it is only noise).
    stream = interleave(in_order, others, random.Random(4))
    warm_up, rest = stream[:WARM_UP], stream[WARM_UP:]
    distinct = len(learned) + len(requests)

    first_port = with_metrics(deployment)
    first = deployment.start()
    Streamer(settings, warm_up).run()
    wait_until(
        lambda: learned_by(first_port) > 0,
        "the learner to start",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    streamer = Streamer(settings, rest)
    streamer.start()
    wait_until(
        lambda: learned_by(first_port) > WARM_UP,
        "learning mid-stream",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    stop_gracefully(first, deployment.logs)
    assert streamer.is_alive(), "the stream ended before the stop: not mid-stream"

    state = deployment.latest()
    assert state is not None, "no checkpoint on the way out"
    group = f"{settings.topic_prefix}learner-{settings.model_name}"
    assert committed(settings, group) == state.offsets, "the final checkpoint was not committed"
    assert not state.pending_labels  # every snapshot was there before its label
    read_before_stop = {
        r.value.get("example_id") or r.value.get("request_id")
        for topic in (examples_topic, labels_topic)
        for r in every_record(settings, topic)
        if r.offset < state.offsets.get((r.topic, r.partition), 0)
        and r.value.get("source", {}).get("topic") != labels_topic  # its own output
    }
    assert state.learner.examples == len(read_before_stop), "the checkpoint missed learned work"

    second_port = with_metrics(deployment)
    second = deployment.start()
    streamer.finish()
    rest_learned = distinct - state.learner.examples
    wait_until(
        lambda: learned_by(second_port) == rest_learned,
        "the rest learned",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    stop_gracefully(second, deployment.logs)
    final = deployment.latest()
    assert final is not None
    assert final.learner.examples == distinct
    every_id = {e.example_id for e in learned} | set(requests)
    assert len(final.learned) == len(every_id)
    assert all(record_id in final.learned for record_id in every_id)

    published = [r.value for r in every_record(settings, examples_topic)]
    joined = Counter(v["example_id"] for v in published if v["source"]["topic"] == labels_topic)
    assert set(joined) == set(requests)
    assert max(joined.values()) == 1, "a late-labelled example was published twice"
    alerts = Counter(
        r.value["alert_id"] for r in every_record(settings, deployment.topic(Topic.DRIFT_ALERTS))
    )
    assert alerts, "the flipped concept raised no alert: nothing to check for duplicates"
    assert max(alerts.values()) == 1, f"an alert was published twice: {alerts.most_common(3)}"


def test_a_rebalance_after_learning_commits_what_the_checkpoint_holds_without_new_records(
    learner_deployment: LearnerDeployment,
) -> None:
    """A rebalance seals the checkpoint without a commit (callbacks cannot block): the
    owner after it must commit the checkpoint's offsets even when no record follows, or
    the group's lag says work is waiting that was done (the chaos run's kill-learner)."""
    deployment = learner_deployment
    settings = deployment.settings
    rows = synthetic(500, seed=5)
    examples_topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    outgoing: list[Outgoing] = [
        (examples_topic, e.entity_id.encode(), encode(e)) for e in examples(rows, examples_topic)
    ]
    half = len(outgoing) // 2
    first_port = with_metrics(deployment)
    deployment.start()
    # The first half outlasts the member's start-up rebalances; the second half is
    # learned with no checkpoint (only on the way out) and so no commit.
    for sent in (half, len(outgoing)):
        Streamer(settings, outgoing[sent - half : sent]).run()
        wait_until(
            lambda n=sent: learned_by(first_port) == n,
            "examples learned",
            timeout_s=DEADLINE_S,
            every_s=POLL_S,
            logs=deployment.logs,
        )
    probe = make_consumer(settings, group_id=None)
    try:
        partitions = [TopicPartition(examples_topic, p) for p in range(settings.partitions)]
        ends = {(tp.topic, tp.partition): o for tp, o in probe.end_offsets(partitions).items()}
    finally:
        probe.close()
    group = f"{settings.topic_prefix}learner-{settings.model_name}"
    assert committed(settings, group) != ends, "committed without a rebalance: nothing to test"

    deployment.start()  # a standby joins: the group rebalances, nothing new arrives
    wait_until(
        lambda: {k: v for k, v in committed(settings, group).items() if k in ends} == ends,
        "the checkpoint's offsets committed after the rebalance",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    state = deployment.latest()
    assert state is not None
    assert state.learner.examples == len(rows)
