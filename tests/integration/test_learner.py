"""The learner process on real Kafka and Redis: crash consistency and the late-label join."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from eddy.services.ops.console import read_topic
from eddy.streams.dead_letters.letter import ERROR_CLASS, ERROR_REASON, source_of
from eddy.streams.learning.checkpoints import LearnerState
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from eddy.streams.messages.contracts import Label, ServedAnswers
from eddy.streams.messages.validation import encode
from eddy.streams.store.estimates import read_reports
from eddy.streams.store.recent_ids import RecentIds
from eddy.streams.store.snapshots import ServedAnswer, Snapshot, SnapshotStore
from eddy.streams.transport.clients import make_producer, make_redis
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.learners import (
    BASE_TIME,
    LearnerDeployment,
    examples,
    send_messages,
    synthetic,
)
from tests.waiting import wait_until

DEADLINE_S = 120.0
POLL_S = 0.3


@pytest.fixture
def learner_deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> Iterator[LearnerDeployment]:
    settings = deployment_settings(
        "learn", partitions=1, checkpoint_every=500, checkpoint_interval_s=1.0, label_wait_s=2
    )
    deployment = LearnerDeployment(settings, tmp_path, [])
    yield deployment
    deployment.kill_running()


def published_alerts(deployment: LearnerDeployment) -> list[dict[str, Any]]:
    """Every alert on the deployment's drift-alerts topic so far, in order."""
    return [
        r.value
        for r in read_topic(
            deployment.settings,
            deployment.topic(Topic.DRIFT_ALERTS),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=1.0,
        )
    ]


def learned(deployment: LearnerDeployment) -> int:
    state = deployment.latest()
    return 0 if state is None else state.learner.examples


def test_sigkill_at_random_points_ends_in_the_uninterrupted_state(
    learner_deployment: LearnerDeployment,
) -> None:
    deployment = learner_deployment
    rows = synthetic(15_000, seed=3)
    held_out = [x for x, _ in synthetic(200, seed=99)]
    stream = examples(rows, deployment.topic(Topic.TRAINING_EXAMPLES))
    send_messages(deployment.settings, deployment.topic(Topic.TRAINING_EXAMPLES), stream)

    rng = random.Random(5)
    killed_at = []
    for target in (rng.randint(2_000, 4_000), rng.randint(6_000, 8_000), 11_000):
        process = deployment.start()
        wait_until(
            lambda target=target: learned(deployment) >= target,  # type: ignore[misc]
            "a checkpoint past the kill point",
            timeout_s=DEADLINE_S,
            every_s=POLL_S,
            logs=deployment.logs,
        )
        time.sleep(rng.uniform(0, 0.2))  # somewhere between checkpoints
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        killed_at.append(learned(deployment))
    deployment.start()
    wait_until(
        lambda: learned(deployment) == len(rows),
        "all examples learned",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    assert min(killed_at) < len(rows), f"no kill landed mid-stream: {killed_at}"

    reference = Learner(LearnerConfig(model=deployment.settings.model_name))
    for i, example in enumerate(stream):
        reference.step(
            example.features,
            example.label,
            Position("t", 0, i, example.event_time.timestamp()),
        )
    state = deployment.latest()
    assert state is not None
    restored = state.learner
    assert restored.examples == reference.examples == len(rows)
    assert [restored.model.predict_proba_one(x) for x in held_out] == [
        reference.model.predict_proba_one(x) for x in held_out
    ]
    assert restored.metrics.report() == reference.metrics.report()


def test_late_shuffled_duplicated_and_missing_labels_join_their_snapshots(
    learner_deployment: LearnerDeployment,
) -> None:
    deployment = learner_deployment
    settings = deployment.settings
    rows = synthetic(300, seed=8)
    store = SnapshotStore(make_redis(settings), settings.topic_prefix, 3600)
    store.record(
        [
            (f"req-{i}", Snapshot(f"u{i % 5}", BASE_TIME + i, dict(x)))
            for i, (x, _) in enumerate(rows)
        ]
    )
    rng = random.Random(13)
    labelled = [i for i in range(len(rows)) if i % 10 != 0]  # every tenth never labelled
    labels = [
        Label(
            request_id=f"req-{i}",
            label=rows[i][1],
            event_time=datetime.fromtimestamp(BASE_TIME + i + rng.uniform(1, 600), UTC),
        )
        for i in labelled
    ]
    duplicates = rng.sample(labels, 40)
    unknown = [
        Label(request_id=f"ghost-{i}", label=True, event_time=datetime.now(UTC)) for i in range(7)
    ]
    everything = labels + duplicates + unknown
    rng.shuffle(everything)
    first, late = everything[: len(everything) // 2], everything[len(everything) // 2 :]

    deployment.start()
    send_messages(settings, deployment.topic(Topic.LABELS), first)
    time.sleep(1.0)  # the second half arrives later than the first
    send_messages(settings, deployment.topic(Topic.LABELS), late)

    def settled() -> bool:
        state = deployment.latest()
        return (
            state is not None
            and state.labels_joined == len(labelled)
            and state.labels_unmatched == len(unknown)
        )

    wait_until(
        settled,
        "every label joined or given up",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    state = deployment.latest()
    assert state is not None
    assert state.learner.examples == len(labelled), "a duplicate label was learned twice"
    assert store.recorded() == len(rows)
    coverage = state.labels_joined / store.recorded()
    assert coverage == pytest.approx(0.9)
    assert 1 <= state.label_latency_s_total / state.labels_joined <= 600


def test_labels_of_served_answers_raise_a_served_concept_alert_naming_the_version(
    learner_deployment: LearnerDeployment,
) -> None:
    """The champion's live error, from the answers the predictor recorded with each
    request's snapshot: it degrades while the online learner may not."""
    deployment = learner_deployment
    settings = deployment.settings
    count, change = 1_200, 600
    store = SnapshotStore(make_redis(settings), settings.topic_prefix, 3600)
    # The served version always answers True; the labels are True, then mostly False.
    truth = [True] * change + [i % 5 == 0 for i in range(count - change)]
    store.record(
        [
            (
                f"req-{i}",
                Snapshot(
                    f"u{i % 5}", BASE_TIME + i, {"x": float(i % 7)}, ServedAnswer("m@3", True)
                ),
            )
            for i in range(count)
        ]
    )
    deployment.start()
    send_messages(
        settings,
        deployment.topic(Topic.LABELS),
        [
            Label(
                request_id=f"req-{i}",
                label=truth[i],
                event_time=datetime.fromtimestamp(BASE_TIME + i + 1, UTC),
            )
            for i in range(count)
        ],
    )

    def alerts() -> list[dict[str, Any]]:
        return published_alerts(deployment)

    def served_concepts() -> dict[str, dict]:
        """The served concept alerts by scope: m@3's own, and every answer served's."""
        found = [a for a in alerts() if a["stream"] == "served" and a["kind"] == "concept"]
        return {a["alert_id"].split(":")[3]: a for a in found}

    wait_until(
        lambda: len(served_concepts()) == 2,
        "both served concept alerts",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    assert set(served_concepts()) == {"m@3", "all"}  # no other scope
    every = served_concepts()["all"]
    assert every["model_version"] == "m@3"  # the version answering when it fired
    alert = served_concepts()["m@3"]
    assert alert["model_version"] == "m@3"
    assert alert["action"] == "retrain"
    assert alert["alert_id"].startswith(f"{settings.model_name}:served:concept:m@3:")
    change_at = datetime.fromisoformat(alert["change_at"]).timestamp()
    assert abs(change_at - (BASE_TIME + change)) < 100  # where the answers went wrong
    assert alert["metrics"]["accuracy"] < 1.0


@pytest.mark.parametrize("reader_process", [True, False], ids=["reader-process", "one-thread"])
def test_malformed_examples_and_labels_are_dead_lettered_and_the_rest_learned(
    learner_deployment: LearnerDeployment, reader_process: bool
) -> None:
    """Both ways of reading (EDDY_LEARNER_READER_PROCESS): in a reader process, whose
    refused records reach the learner with what their dead letters need, and on the
    learner's own thread."""
    deployment = learner_deployment
    deployment.settings = deployment.settings.model_copy(
        update={"learner_reader_process": reader_process}
    )
    settings = deployment.settings
    good = examples(synthetic(50, seed=3), "events")
    # A label the binary model cannot learn (River raised on it: a crash loop).
    unlearnable = encode(good[0].model_copy(update={"example_id": "strange", "label": "yes"}))
    bad_examples = [b"{not json", unlearnable, orjson.dumps({"example_id": "x", "label": True})]
    unlearnable_label = orjson.dumps(
        {"request_id": "r2", "label": "maybe", "event_time": "2026-01-01T00:00:00Z"}
    )
    bad_labels = [
        b"\xff\xfe",
        orjson.dumps({"request_id": "r1", "label": {"nested": 1}}),
        unlearnable_label,
    ]
    producer = make_producer(settings)
    try:
        for i, example in enumerate(good):
            producer.send(deployment.topic(Topic.TRAINING_EXAMPLES), value=encode(example))
            if i in (10, 20, 30):
                producer.send(
                    deployment.topic(Topic.TRAINING_EXAMPLES), value=bad_examples[i // 10 - 1]
                )
        for raw in bad_labels:
            producer.send(deployment.topic(Topic.LABELS), value=raw)
        producer.flush(timeout=60)
    finally:
        producer.close()
    deployment.start()
    wait_until(
        lambda: learned(deployment) == len(good),
        "the good examples learned",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    letters = [
        record.original
        for record in read_topic(
            settings,
            deployment.topic(Topic.DEAD_LETTER),
            from_beginning=True,
            max_messages=6,
            idle_timeout_s=10,
        )
    ]
    sources = sorted(source_of(letter.headers) for letter in letters)
    assert sources == [
        (deployment.topic(Topic.LABELS), 0, 0),
        (deployment.topic(Topic.LABELS), 0, 1),
        (deployment.topic(Topic.LABELS), 0, 2),
        (deployment.topic(Topic.TRAINING_EXAMPLES), 0, 11),
        (deployment.topic(Topic.TRAINING_EXAMPLES), 0, 22),
        (deployment.topic(Topic.TRAINING_EXAMPLES), 0, 33),
    ]
    assert sorted(letter.value for letter in letters) == sorted(bad_examples + bad_labels)
    assert all(dict(letter.headers)[ERROR_REASON] for letter in letters)
    classes = {letter.value: dict(letter.headers)[ERROR_CLASS].decode() for letter in letters}
    assert classes[unlearnable] == classes[unlearnable_label] == "label_not_learnable"
    assert deployment.processes[0].poll() is None  # still running


def test_restored_checkpoints_refuse_tampering(learner_deployment: LearnerDeployment) -> None:
    deployment = learner_deployment
    store = deployment.checkpoints()
    path = store.save(LearnerState(Learner(LearnerConfig(model="default")), RecentIds(10)))
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert store.latest() is None


def test_online_snapshots_become_registry_versions_with_contiguous_lineage(
    learner_deployment: LearnerDeployment,
) -> None:
    from eddy.services.registry.opening import open_registry
    from eddy.services.registry.store import CHAMPION

    deployment = learner_deployment
    every = 1000
    deployment.settings = deployment.settings.model_copy(update={"snapshot_every": every})
    topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    stream = examples(synthetic(3 * every, seed=21), topic)
    deployment.start()
    registry = open_registry(deployment.settings, announce=False)
    model = deployment.settings.model_name

    def snapshot_ends() -> set[int]:
        ranges = [v.lineage.trained_on for v in registry.versions(model)]
        return {max(b for _, b in r.values()) for r in ranges if r}

    # A snapshot is taken at the first checkpoint with ``every`` examples learned since
    # the last one, and checkpoints fall where their cadence puts them: sent a round of
    # exactly ``every`` at a time, each snapshot ends where its round does.
    for start in range(0, len(stream), every):
        send_messages(deployment.settings, topic, stream[start : start + every])
        wait_until(
            lambda end=start + every - 1: end in snapshot_ends(),
            f"a snapshot ending at offset {start + every - 1}",
            timeout_s=DEADLINE_S,
            every_s=POLL_S,
            logs=deployment.logs,
        )
    versions = registry.versions(model)
    spans = [tuple(next(iter(v.lineage.trained_on.values()))) for v in versions]
    assert spans == [(0, 999), (1000, 1999), (2000, 2999)], "snapshots overlap or leave a gap"
    assert all(v.flavor == "river" for v in versions)
    champion = registry.alias(model, CHAMPION)
    assert champion is not None
    assert champion.version == 1
    assert registry.history(model)[0].reason == "cold start: first online snapshot"


def test_served_answers_become_a_live_estimate_and_an_estimated_degradation_before_labels(
    learner_deployment: LearnerDeployment,
) -> None:
    """No label at all: the answers a version served, as the predictor sends them,
    are enough for its estimate (in Redis and on /metrics' gauge) and, when they move to
    where the version hesitates, for an estimated-degradation alert naming it."""
    deployment = learner_deployment
    settings = deployment.settings
    at = datetime.fromtimestamp(BASE_TIME, UTC)
    rng = random.Random(7)
    sure = [rng.choice((0.03, 0.97)) for _ in range(2_000)]  # right about 97 % of the time
    unsure = [rng.choice((0.45, 0.55)) for _ in range(2_000)]  # about 55 %
    batches = [
        ServedAnswers(
            batch_id=f"b{i}",
            model=settings.model_name,
            model_version=f"{settings.model_name}@3",
            positives=(sure + unsure)[i : i + 200],
            served_at=at,
        )
        for i in range(0, 4_000, 200)
    ]
    others = ServedAnswers(  # another model's answers: not this learner's to watch
        batch_id="other", model="other", model_version="other@1", positives=[0.5], served_at=at
    )
    deployment.start()
    send_messages(settings, deployment.topic(Topic.SERVED_ANSWERS), [others, *batches])
    version = f"{settings.model_name}@3"
    redis = make_redis(settings)

    def degradation() -> list[dict[str, Any]]:
        return [a for a in published_alerts(deployment) if a["kind"] == "estimated_degradation"]

    wait_until(
        lambda: bool(degradation()),
        "an estimated degradation",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    (alert,) = degradation()
    assert alert["model_version"] == version
    assert alert["action"] == "warn"
    assert alert["stream"] == "served"
    assert alert["metrics"]["reference_accuracy"] == pytest.approx(0.97, abs=0.02)
    assert alert["statistic"] < alert["threshold"] < alert["metrics"]["reference_accuracy"]
    wait_until(
        lambda: (
            version in read_reports(redis, settings.topic_prefix, settings.model_name)
            and read_reports(redis, settings.topic_prefix, settings.model_name)[version].estimated[
                "answers"
            ]
            == 1_000
        ),
        "the version's performance report",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    report = read_reports(redis, settings.topic_prefix, settings.model_name)[version]
    assert report.estimated["accuracy"] == pytest.approx(0.55, abs=0.03)
    assert report.estimated["accuracy_lower"] < report.estimated["accuracy"]
    assert report.realized == {}  # no label yet
    assert set(read_reports(redis, settings.topic_prefix, "other")) == set()
