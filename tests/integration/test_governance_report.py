"""A version made end to end has every governance field in its report, with the right values.

On real Kafka: training examples on ``training-examples`` (each partition's source offsets
known), drift alerts on ``drift-alerts``, two real retrains (the second one triggered by
an alert burst and compared with the first), a rollback by the live rollback guard, an
operator's promotion and an operator's rollback. Then ``write_report`` and checks of
each field the issue lists against the data the test published and the registry's own
records. The triggering alerts are found on the topic by id; an unknown id is not.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest

from eddy.services.config.settings import Settings
from eddy.services.governance.report import NOT_RECORDED, STILL_SERVING
from eddy.services.governance.sources import alerts_topic, find_alerts, write_report
from eddy.services.promotion.live_evaluation import LiveEvaluator
from eddy.services.promotion.rules import RollbackGuard
from eddy.services.registry.lineage import LIBRARIES, iso
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHAMPION, Registry, trainer_identity
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.services.training.retrainer import Retrainer
from eddy.streams.features.definitions import FEATURES
from eddy.streams.learning.slices import split
from eddy.streams.messages.contracts import (
    DriftAlert,
    DriftEvidence,
    DriftKind,
    DriftWindow,
    SourceOffset,
    TrainingExample,
)
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings

MODEL = "fraud"
PARTITIONS = 3
WINDOW = 900  # the retrain window: the last 300 examples of each partition
FIRST, SECOND = 900, 1500  # examples of the first concept, then of the flipped one
BASE = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
SEND_TIMEOUT_S = 30
LIVE_ANSWERS, LIVE_WRONG = 40, 30


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings) -> Settings:
    return deployment_settings(
        "gov",
        partitions=PARTITIONS,
        retrain_window=WINDOW,
        retrain_min_holdout=50,
        retrain_estimator="logistic_regression",
    )


def publish_examples(settings: Settings, start: int, count: int, flipped: bool) -> None:
    """Example ``i`` goes to partition ``i % 3`` with source offset ``i``: lineage is known."""
    topic = topic_name(Topic.TRAINING_EXAMPLES, settings.topic_prefix)
    rng = random.Random(start)
    producer = make_producer(settings, linger_ms=10)
    try:
        for i in range(start, start + count):
            x = {"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1)}
            example = TrainingExample(
                example_id=f"ex-{i}",
                entity_id=f"u{i % 11}",
                event_time=datetime.fromtimestamp(BASE + i, UTC),
                label=(x["a"] + 0.5 * x["b"] > 0) != flipped,
                features=x,
                feature_set=FEATURES.fingerprint(),
                source=SourceOffset(topic="events", partition=i % PARTITIONS, offset=i),
            )
            producer.send(
                topic, key=example.entity_id.encode(), value=encode(example), partition=i % 3
            )
        producer.flush(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()


def publish_alert(settings: Settings, examples: int, feature: str) -> DriftAlert:
    alert = DriftAlert(
        alert_id=f"{MODEL}:data:{examples}",
        model=MODEL,
        kind=DriftKind.DATA,
        detector="psi",
        feature=feature,
        statistic=0.37,
        threshold=0.2,
        window=DriftWindow(
            offsets={"training-examples[0]": (examples - 90, examples - 1)},
            times=(
                datetime.fromtimestamp(BASE + examples - 90, UTC),
                datetime.fromtimestamp(BASE + examples - 1, UTC),
            ),
        ),
        model_version="1",
        action="retrain",
        evidence=[
            DriftEvidence(feature=feature, test="psi", statistic=0.37, threshold=0.2),
            DriftEvidence(feature="b", test="ks", statistic=0.21, threshold=0.2),
        ],
        metrics={"rolling_accuracy": 0.55},
    )
    producer = make_producer(settings)
    try:
        producer.send(alerts_topic(settings), key=MODEL.encode(), value=encode(alert)).get(
            timeout=SEND_TIMEOUT_S
        )
    finally:
        producer.close()
    return alert


def make_history(settings: Settings, registry: Registry) -> list[DriftAlert]:
    """v1 from one alert, v2 from a burst of two; v2 is rolled back, re-promoted, rolled back."""
    retrainer = Retrainer(settings, registry)
    publish_examples(settings, 0, FIRST, flipped=False)
    first = publish_alert(settings, FIRST, "a")
    retrainer.retrain(MODEL, Trigger(TriggerKind.ALERT, first.alert_id, burst=(first.alert_id,)))

    publish_examples(settings, FIRST, SECOND, flipped=True)
    burst = [publish_alert(settings, FIRST + SECOND, "a"), publish_alert(settings, 2399, "b")]
    ids = [a.alert_id for a in burst]
    outcome = retrainer.retrain(MODEL, Trigger(TriggerKind.ALERT, ids[0], burst=tuple(ids)))
    assert outcome.decision.action == "promote", outcome.decision.reason

    # Live: on the same 40 recent labelled examples version 2 got 30 wrong, version 1 none
    # → the rollback guard restores version 1.
    guard = RollbackGuard(min_samples=LIVE_ANSWERS)
    LiveEvaluator(registry, MODEL, guard=guard).guard_champion(
        [i >= LIVE_WRONG for i in range(LIVE_ANSWERS)],
        [True] * LIVE_ANSWERS,
        trivial_accuracy=0.0,
    )
    registry.promote(MODEL, 2, trainer_identity("eddy models promote"), "operator: data bug fixed")
    registry.rollback(MODEL, trainer_identity("eddy models rollback"), "audit drill")
    return [first, *burst]


def test_the_report_of_a_version_made_end_to_end_has_every_field(
    deployment: Settings, tmp_path: Path
) -> None:
    registry = open_registry(deployment, announce=False)
    first, *burst = make_history(deployment, registry)
    json_path, html_path = write_report(deployment, FEATURES, MODEL, 2, tmp_path / "reports")
    assert (json_path.name, html_path.name) == (f"{MODEL}-v2.json", f"{MODEL}-v2.html")
    report = json.loads(json_path.read_text())
    record = registry.get(MODEL, 2)

    # Who or what trained and published it, and why.
    provenance = report["provenance"]
    trainer = f"retrainer ({deployment.client_id})"
    assert provenance["trained_by"] == provenance["registered_by"] == trainer
    assert provenance["registered_at"] == iso(record.created_at)
    assert provenance["artifact_sha256"] == record.artifact
    assert provenance["code_version"] == record.lineage.code_version != NOT_RECORDED
    ids = [a.alert_id for a in burst]
    assert provenance["trigger"] == {"type": "alert", "id": ids[0], "burst": ",".join(ids)}
    assert (provenance["published"]["alias"], provenance["published"]["by"]) == (CHAMPION, trainer)

    # The triggering alerts, found on drift-alerts by id, with their evidence.
    found = report["triggering_alerts"]
    assert [a["alert_id"] for a in found] == ids
    assert [a["found_at"] for a in found] == [
        {"topic": alerts_topic(deployment), "partition": 0, "offset": offset} for offset in (1, 2)
    ]
    assert [a["alert"] for a in found] == [a.model_dump(mode="json") for a in burst]
    assert found[0]["alert"]["evidence"][0] == {
        "feature": "a",
        "test": "psi",
        "statistic": 0.37,
        "threshold": 0.2,
    }

    # Which data: the last 300 examples of each partition, all of the flipped concept.
    total = FIRST + SECOND
    data = report["data"]
    assert [
        (o["topic"], o["partition"], o["first_offset"], o["last_offset"]) for o in data["offsets"]
    ] == [("events", p, total - WINDOW + p, total - PARTITIONS + p) for p in range(PARTITIONS)]
    assert data["time_span"] == {
        "from": datetime.fromtimestamp(BASE + total - WINDOW, UTC).isoformat(),
        "to": datetime.fromtimestamp(BASE + total - 1, UTC).isoformat(),
    }
    holdout = int(WINDOW * deployment.retrain_holdout)
    assert data["rows"] == {"examples": WINDOW, "train": WINDOW - holdout, "holdout": holdout}
    assert data["label_coverage"]["labelled_training_rows"] == WINDOW
    assert data["label_coverage"]["late_label_coverage"] == NOT_RECORDED

    # Feature definitions and their hash; parameters and library versions.
    features = report["features"]
    assert features["hash"] == FEATURES.fingerprint()
    assert features["matches_current_definitions"] is True
    assert features["definitions"]["allowed_lateness_s"] == FEATURES.allowed_lateness_s
    params = report["training"]["params"]
    assert (params["estimator"], params["max_iter"]) == ("logistic_regression", 1000)
    assert params == dict(sorted(record.lineage.params.items()))
    assert report["training"]["libraries"] == {n: metadata.version(n) for n in sorted(LIBRARIES)}

    # Validation metrics overall and per slice; the champion it was compared with.
    overall, per_slice = split(record.metrics)
    assert report["validation"]["overall"] == overall
    assert report["validation"]["overall"]["accuracy"] > 0.9
    assert report["validation"]["per_slice"] == (per_slice or NOT_RECORDED)
    comparison = report["comparison"]
    assert (comparison["champion_version"], comparison["decision"]) == (1, "promote")
    assert comparison["decided_by"] == trainer
    evidence = comparison["evidence"]
    assert evidence["metric"] == deployment.retrain_metric
    assert evidence["candidate"] == record.metrics[deployment.retrain_metric] < evidence["champion"]

    # Deployment history: served from-to, by whom or what.
    history = [d for d in registry.history(MODEL) if d.alias == CHAMPION]
    promoted, guarded, operator, drill = history[1:]
    assert [d.version for d in history] == [1, 2, 1, 2, 1]
    intervals = report["deployment"]["intervals"]
    assert [(i["from"], i["to"]) for i in intervals] == [
        (iso(promoted.at), iso(guarded.at)),
        (iso(operator.at), iso(drill.at)),
    ]
    assert [(i["started_by"]["how"], i["started_by"]["actor"]) for i in intervals] == [
        ("promotion", trainer),
        ("promotion", operator.actor),
    ]
    assert [(i["ended_by"]["how"], i["ended_by"]["actor"]) for i in intervals] == [
        ("rolled back to version 1", guarded.actor),
        ("rolled back to version 1", drill.actor),
    ]
    assert "eddy models rollback" in drill.actor
    assert report["deployment"]["serving_now"] == []
    assert STILL_SERVING not in {i["to"] for i in intervals}

    # Live metrics since: the guard's evidence.
    (live,) = report["live"]["decisions"]
    assert (live["role"], live["action"]) == ("champion (rollback guard)", "rollback")
    assert live["evidence"]["samples"] == LIVE_ANSWERS
    assert live["evidence"]["champion_accuracy"] == 1 - LIVE_WRONG / LIVE_ANSWERS
    assert live["evidence"]["previous_accuracy"] == 1.0

    # Gaps are named; the HTML shows the same report, escaped, self-contained.
    assert {g["field"] for g in report["not_recorded"]} >= {
        "data.label_coverage.late_label_coverage"
    }
    page = html_path.read_text()
    for text in (*ids, "rolled back to version 1", FEATURES.fingerprint(), "late_label_coverage"):
        assert text in page
    assert "<script" not in page

    first_report = json.loads(
        write_report(deployment, FEATURES, MODEL, 1, tmp_path / "reports")[0].read_text()
    )
    assert first_report["triggering_alerts"][0]["alert"] == first.model_dump(mode="json")
    assert first_report["comparison"]["champion_version"].startswith("none")
    assert first_report["deployment"]["serving_now"] == [CHAMPION]


def test_an_alert_id_not_on_the_topic_is_not_found(deployment: Settings) -> None:
    alert = publish_alert(deployment, 10, "a")
    found = find_alerts(deployment, MODEL, [alert.alert_id, f"{MODEL}:data:11"])
    assert list(found) == [alert.alert_id]
    assert find_alerts(deployment, "another-model", [alert.alert_id]) == {}
