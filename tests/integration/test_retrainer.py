"""Drift alert → retrained, validated, registered and promoted model, on real Kafka.

Also: a worse candidate is not promoted, rollback restores the previous champion and is
audited, every alias change is announced on ``model-updates``, and tampered artifacts
are refused while the champion stays as it was.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eddy.services.config.settings import Settings
from eddy.services.ops.console import read_topic
from eddy.services.ops.poll_loop import Consumed
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHALLENGER, CHAMPION, Registry
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.services.training.bursts import Burst, fold
from eddy.services.training.core import REFITTED_ON
from eddy.services.training.retrainer import AlertListener, Retrainer
from eddy.streams.messages.contracts import (
    DriftAlert,
    DriftWindow,
)
from eddy.streams.messages.validation import encode
from eddy.streams.store.serialization import IntegrityError
from eddy.streams.transport.admin import committed_offsets
from eddy.streams.transport.clients import make_admin, make_producer
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import Topic, topic_name
from tests import alerts
from tests.factories import DeploymentSettings
from tests.integration.training_examples import BASE, concept, publish_examples
from tests.processes import start_eddy
from tests.waiting import wait_until

DEADLINE_S = 90.0
POLL_S = 0.3
MODEL = "fraud"


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings) -> Settings:
    return deployment_settings(
        "rt",
        retrain_window=4000,
        retrain_debounce_s=1.0,
        retrain_estimator="logistic_regression",
        model_name=MODEL,
    )


def concept_alert(alert_id: str, window: DriftWindow | None = None) -> DriftAlert:
    """An ADWIN concept alert on this module's model asking for a retrain."""
    return alerts.concept_alert(alert_id, MODEL, window)


def publish_alert(settings: Settings, alert_id: str, model: str = MODEL) -> None:
    topic = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
    alert = concept_alert(alert_id).model_copy(update={"model": model})
    producer = make_producer(settings)
    try:
        producer.send(topic, key=model.encode(), value=encode(alert)).get(timeout=30)
    finally:
        producer.close()


def announcements(settings: Settings) -> list[dict[str, object]]:
    topic = topic_name(Topic.MODEL_UPDATES, settings.topic_prefix)
    return [
        r.value
        for r in read_topic(
            settings, topic, from_beginning=True, max_messages=None, idle_timeout_s=3.0
        )
    ]


@pytest.fixture
def retrainer_process(deployment: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_eddy(deployment, tmp_path / "retrainer.log", "run", "retrainer")
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def test_a_drift_alert_yields_a_promoted_model_announced_on_model_updates(
    deployment: Settings, retrainer_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    publish_examples(deployment, concept(3000, seed=1, flipped=False), start=0)
    for n in range(3):  # a burst: one retrain
        publish_alert(deployment, f"{MODEL}:concept:{1000 + n}")
    registry = open_registry(deployment, announce=False)
    wait_until(
        lambda: registry.alias(MODEL, CHAMPION) is not None,
        "a champion",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=lambda: (tmp_path / "retrainer.log").read_text()[-3000:],
        alive=lambda: retrainer_process.poll() is None,
    )

    champion = registry.alias(MODEL, CHAMPION)
    assert champion is not None
    assert champion.version == 1
    assert len(registry.versions(MODEL)) == 1, "one retrain per alert burst"
    assert champion.lineage.trigger["type"] == "alert"
    assert champion.lineage.trigger["id"] == f"{MODEL}:concept:1000"
    assert champion.lineage.feature_set == "fs-test"
    assert sum(b - a + 1 for a, b in champion.lineage.trained_on.values()) >= 2000
    assert champion.metrics["accuracy"] > 0.9
    updates = announcements(deployment)
    assert [(u["model"], u["alias"], u["version"]) for u in updates] == [(MODEL, CHAMPION, "1")]


def test_an_alert_for_a_model_nobody_deploys_is_dead_lettered_and_creates_none(
    deployment: Settings, retrainer_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    publish_examples(deployment, concept(600, seed=2, flipped=False), start=0)
    publish_alert(deployment, "frod:concept:1", model="frod")
    publish_alert(deployment, f"{MODEL}:concept:2")
    registry = open_registry(deployment, announce=False)
    wait_until(
        lambda: registry.alias(MODEL, CHAMPION) is not None,
        "a champion",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=lambda: (tmp_path / "retrainer.log").read_text()[-3000:],
        alive=lambda: retrainer_process.poll() is None,
    )
    letters = list(
        read_topic(
            deployment,
            topic_name(Topic.DEAD_LETTER, deployment.topic_prefix),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=3.0,
        )
    )
    assert [r.headers["eddy.error.class"] for r in letters] == ["unknown_model"]
    assert registry.models() == [MODEL], "the forged name created a model"


def test_worse_candidates_stay_challengers_and_rollback_is_audited(deployment: Settings) -> None:
    registry = open_registry(deployment)
    retrainer = Retrainer(deployment, registry)
    publish_examples(deployment, concept(3000, seed=2, flipped=False), start=0)
    first = retrainer.retrain(MODEL, Trigger(TriggerKind.OPERATOR, "test"))
    assert first.decision.action == "promote"

    # Same concept again: no better by the margin → challenger, champion unchanged.
    second = retrainer.retrain(MODEL, Trigger(TriggerKind.SCHEDULE, "nightly"))
    assert second.decision.action == "challenger"
    assert registry.aliases(MODEL) == {CHAMPION: 1, CHALLENGER: 2}
    promoted, challenger = registry.versions(MODEL)
    window = promoted.lineage.window
    assert window[REFITTED_ON] == window["examples"], "served: refitted on its holdout too"
    assert REFITTED_ON not in challenger.lineage.window, "a challenger stays as it was judged"

    # The concept flips: the retrained model wins clearly and is promoted.
    publish_examples(deployment, concept(4000, seed=3, flipped=True), start=3000)
    third = retrainer.retrain(MODEL, Trigger(TriggerKind.ALERT, "fraud:concept:9"))
    assert third.decision.action == "promote", third.decision.reason
    assert registry.aliases(MODEL)[CHAMPION] == 3

    restored = registry.rollback(MODEL, "operator test", "the new model misbehaves")
    assert restored == 1
    assert registry.aliases(MODEL)[CHAMPION] == 1
    audit = registry.audit_log(MODEL)
    assert [e["action"] for e in audit].count("decision") == 3
    assert audit[-1]["action"] == "set champion"
    assert "rollback" in audit[-1]["details"]["reason"]
    history = registry.history(MODEL)
    assert [(d.alias, d.previous, d.version) for d in history if d.alias == CHAMPION] == [
        (CHAMPION, None, 1),
        (CHAMPION, 1, 3),
        (CHAMPION, 3, 1),
    ]
    assert [u["version"] for u in announcements(deployment) if u["alias"] == CHAMPION] == [
        "1",
        "3",
        "1",
    ]


def test_tampered_artifacts_are_refused_and_the_champion_is_unchanged(
    deployment: Settings, tmp_path: Path
) -> None:
    registry = open_registry(deployment, announce=False)
    retrainer = Retrainer(deployment, registry)
    publish_examples(deployment, concept(3000, seed=4, flipped=False), start=0)
    retrainer.retrain(MODEL, Trigger(TriggerKind.OPERATOR, "test"))
    champion = registry.alias(MODEL, CHAMPION)
    assert champion is not None
    artifact = registry.root / "artifacts" / champion.artifact
    original = artifact.read_bytes()

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    artifact.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError):
        registry.load(MODEL, champion.version)

    wrong_key = Registry(registry.root, b"not the deployment key")
    artifact.write_bytes(original)
    with pytest.raises(IntegrityError, match="HMAC"):
        wrong_key.load(MODEL, champion.version)

    assert registry.load(MODEL, champion.version) is not None
    assert registry.alias(MODEL, CHAMPION) == champion


def test_an_alert_read_again_after_a_crash_is_not_retrained_twice(deployment: Settings) -> None:
    # The retrainer registers, then commits the alert's offset: killed in between (or
    # dropped from its group by a retrain longer than the max poll interval), it reads
    # the alert again. The registry already names it, so it must not train again.
    publish_examples(deployment, concept(1000, seed=5, flipped=False), start=0)
    registry = open_registry(deployment, announce=False)
    listener = AlertListener(deployment, Retrainer(deployment, registry))
    now = time.monotonic()
    try:
        listener._retrain(MODEL, Burst(now, ("a1",), None, now), now)
        assert [v.lineage.trigger["burst"] for v in registry.versions(MODEL)] == ["a1"]

        listener._retrain(MODEL, Burst(now, ("a1",), None, now), now)
        listener._retrain(MODEL, Burst(now, ("a1", "a2"), None, now), now)
    finally:
        listener.consumer.close()
        listener.producer.close()
    assert [v.lineage.trigger["burst"] for v in registry.versions(MODEL)] == ["a1", "a2"]


def test_a_concept_burst_learns_only_after_the_drift_and_waits_for_enough_of_it(
    deployment: Settings,
) -> None:
    # Before the change: 3000 examples of one concept. A concept alert fires at the
    # example of second 2999. Training on the window would teach mostly the old concept;
    # the retrain must wait for examples after it, then learn from those alone.
    settings = deployment.model_copy(update={"retrain_min_holdout": 50})
    publish_examples(settings, concept(3000, seed=6, flipped=False), start=0)
    registry = open_registry(settings, announce=False)
    retrainer = Retrainer(settings, registry)
    retrainer.retrain(MODEL, Trigger(TriggerKind.OPERATOR, "first champion"))
    seen = datetime.fromtimestamp(BASE + 2999, UTC)
    alert = concept_alert(
        f"{MODEL}:concept:3000",
        DriftWindow(times=(datetime.fromtimestamp(BASE + 2000, UTC), seen)),
    )
    listener = AlertListener(settings, retrainer)
    now = time.monotonic()
    try:
        burst = fold(None, alert, now, debounce_s=0.0)
        retry = listener._retrain(MODEL, burst, now)
        assert retry is not None, "nothing after the drift yet: wait"
        assert retry.due > now
        assert len(registry.versions(MODEL)) == 1

        publish_examples(settings, concept(300, seed=7, flipped=True), start=3000)
        assert listener._retrain(MODEL, retry, retry.due) is None
    finally:
        listener.consumer.close()
        listener.producer.close()

    retrained = registry.versions(MODEL)[-1]
    assert retrained.lineage.window["examples"] == 300
    assert retrained.lineage.window["after_drift_seen"] == seen.isoformat()
    assert retrained.lineage.window["from"] > seen.isoformat()
    assert retrained.metrics["accuracy"] > 0.9, "the new concept, learned cleanly"
    champion = registry.alias(MODEL, CHAMPION)
    assert champion is not None
    assert champion.version == retrained.version


def test_examples_with_labels_the_model_kind_cannot_learn_are_left_out_of_a_fit(
    deployment: Settings,
) -> None:
    """A string label in a binary model's window would make scikit-learn fit classes
    of strings ("True", "yes"): the learner dead-letters such examples, the retrainer
    leaves them out."""
    assert deployment.learner_kind == "logistic"  # binary: true/false or 0/1
    rows: list[tuple[dict[str, float], Any]] = list(concept(40, seed=3, flipped=False))
    rows += [({"a": 0.5, "b": 0.5}, "yes"), ({"a": -0.5, "b": 0.1}, 7)]
    publish_examples(deployment, rows, start=0)
    retrainer = Retrainer(deployment, open_registry(deployment, announce=False))
    window = retrainer.recent_examples(100)
    assert len(window) == 40
    assert {type(e.label) for e in window} == {bool}


def test_a_handled_batch_is_committed_before_a_review_longer_than_a_session(
    deployment: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener committed a batch only after the review that followed it: a review
    that outlasts the max poll interval, the group's session and its own period ended
    every turn in a refused commit, and the listener handled the same batch for ever
    (found by the chaos full mode's fuzz: behind the slow-retrain scenario's 5 s max poll
    interval, reviews of a window full of junk took 70 s). Each review here checks, as
    it starts, that every alert handled so far is committed."""
    settings = deployment.model_copy(
        update={"consumer_max_poll_interval_ms": 2_000, "live_evaluation_every_s": 1.0}
    )
    sent = 20
    group = group_id(settings.topic_prefix, "retrainer", MODEL)
    handled: list[int] = []
    uncommitted_at_review: list[tuple[int, int]] = []
    reviewing_admin = make_admin(settings)
    handle = AlertListener._handle

    def counting_handle(listener: AlertListener, batch: list[Consumed]) -> None:
        handle(listener, batch)
        handled.extend(consumed.record.offset for consumed in batch)

    reviewing = threading.Event()

    def slow_review(_listener: AlertListener, _model: str) -> None:
        committed = sum(committed_offsets(reviewing_admin, group).values())
        if committed < min(len(handled), sent):
            uncommitted_at_review.append((len(handled), committed))
        reviewing.set()
        time.sleep(settings.consumer_session_timeout_ms / 1000 + 2)

    monkeypatch.setattr(AlertListener, "_handle", counting_handle)
    monkeypatch.setattr(AlertListener, "_review", slow_review)
    listener = AlertListener(settings, Retrainer(settings, open_registry(settings)))
    running = threading.Thread(target=listener.run, daemon=True)
    running.start()
    # The alerts arrive during a review: the batch after it meets a review already due.
    assert reviewing.wait(timeout=DEADLINE_S), "no review started"
    alerts = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
    producer = make_producer(settings)
    try:
        for n in range(sent):
            producer.send(alerts, key=MODEL.encode(), value=f"not an alert {n}".encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
    admin = make_admin(settings)
    committed: dict[Any, int] = {}

    def all_committed() -> bool:
        committed.clear()
        committed.update(committed_offsets(admin, group))
        return sum(committed.values()) >= sent

    try:
        wait_until(
            all_committed,
            f"the listener to commit all {sent} alerts (refused each turn?)",
            timeout_s=DEADLINE_S,
            every_s=1.0,
            logs=lambda: f"committed: {committed}",
            alive=running.is_alive,
        )
    finally:
        admin.close()
        listener.stop()
        running.join(timeout=DEADLINE_S)
        reviewing_admin.close()
    assert uncommitted_at_review == [], "(handled, committed) as a review started"
