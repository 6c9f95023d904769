"""The governance report's assembly and HTML, on records a real registry wrote.

Deployment intervals are checked on a hand-made history with known times; the rest runs
on a registry in ``tmp_path`` driven the way the retrainer, the learner's snapshot hook
and the live evaluator drive it, so the audit entries have their real shape. Checked:
every section is there with the recorded values; anything not recorded says so and is
listed with what would record it; the HTML escapes everything and loads nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from eddy.services.governance.report import (
    NOT_APPLICABLE,
    NOT_RECORDED,
    STILL_SERVING,
    FoundAlert,
    ReportInputs,
    assemble,
    iso,
    render_html,
    served_intervals,
)
from eddy.services.promotion.live_evaluation import LiveEvaluator, RecordedAnswer
from eddy.services.promotion.rules import OfflineGate, RollbackGuard, offline_decision
from eddy.services.registry.store import (
    CHALLENGER,
    CHAMPION,
    RIVER,
    SKLEARN,
    Deployment,
    Lineage,
    Registry,
    Version,
)
from eddy.streams.drift.estimate import DISAGREEMENT_DETECTOR
from eddy.streams.features.definitions import FEATURES
from eddy.streams.learning.models import make_model
from eddy.streams.messages.contracts import DriftAlert, DriftEvidence, DriftKind, DriftWindow
from eddy.streams.store.estimates import PerformanceReport

MODEL = "fraud"
ALERT_ID = "fraud:concept:1200"
TOPIC = "eddy.drift-alerts"
SECTIONS = [
    "report",
    "provenance",
    "triggering_alerts",
    "data",
    "features",
    "training",
    "validation",
    "comparison",
    "deployment",
    "live",
    "live_estimate",
    "not_recorded",
]


def at(t: float, alias: str, version: int | None, previous: int | None, reason: str) -> Deployment:
    return Deployment(MODEL, alias, version, previous, t, f"actor-{t:g}", reason)


HISTORY = [
    at(10, CHAMPION, 1, None, "cold start"),
    at(20, CHALLENGER, 2, None, "below the margin"),
    at(30, CHAMPION, 2, 1, "live: challenger better"),
    at(30.5, CHALLENGER, None, 2, "promoted to champion: live: challenger better"),
    at(35, CHAMPION, 2, 2, "re-promoted by hand"),
    at(40, CHAMPION, 1, 2, "rollback: error rate too high"),
    at(50, CHAMPION, 2, 1, "operator decision"),
]


def test_intervals_follow_promotions_rollbacks_and_challenger_stints() -> None:
    def ended(t: float, how: str, reason: str) -> dict[str, str]:
        return {"how": how, "actor": f"actor-{t:g}", "reason": reason}

    assert served_intervals(HISTORY, 2) == [
        {
            "alias": CHALLENGER,
            "from": iso(20),
            "to": iso(30.5),
            "started_by": ended(20, "set as challenger", "below the margin"),
            "ended_by": ended(
                30.5, "promoted to champion", "promoted to champion: live: challenger better"
            ),
        },
        {
            "alias": CHAMPION,
            "from": iso(30),
            "to": iso(40),  # re-promoting at 35 does not split the interval
            "started_by": ended(30, "promotion", "live: challenger better"),
            "ended_by": ended(40, "rolled back to version 1", "rollback: error rate too high"),
        },
        {
            "alias": CHAMPION,
            "from": iso(50),
            "to": STILL_SERVING,
            "started_by": ended(50, "promotion", "operator decision"),
            "ended_by": None,
        },
    ]
    first = served_intervals(HISTORY, 1)
    assert [(i["from"], i["to"]) for i in first] == [(iso(10), iso(30)), (iso(40), iso(50))]
    assert [i["started_by"]["how"] for i in first] == ["promotion", "rollback"]
    assert [i["ended_by"]["how"] for i in first] == ["replaced by version 2"] * 2
    assert served_intervals(HISTORY, 3) == []


def sklearn_model() -> Pipeline:
    pipeline = Pipeline([("encode", DictVectorizer(sparse=False)), ("model", LogisticRegression())])
    return pipeline.fit([{"a": 0.0}, {"a": 1.0}, {"a": 0.1}, {"a": 0.9}], [0, 1, 0, 1])


def retrained_lineage(**changes: Any) -> Lineage:
    fields: dict[str, Any] = {
        "trained_on": {"eddy.events[0]": [100, 180], "eddy.events[2]": [101, 179]},
        "feature_set": FEATURES.fingerprint(),
        "params": {"estimator": "logistic_regression", "max_iter": 1000, "C": 1.0},
        "libraries": {"scikit-learn": "1.7.2", "river": "0.22.0"},
        "code_version": "abc1234",
        "trigger": {"type": "alert", "id": ALERT_ID, "burst": ALERT_ID},
        "trainer": "retrainer (eddy)",
        "window": {
            "examples": 160,
            "train": 128,
            "holdout": 32,
            "from": "2026-01-01T00:01:40+00:00",
            "to": "2026-01-01T00:04:20+00:00",
        },
    }
    return Lineage(**(fields | changes))


def retrain(registry: Registry, metrics: dict[str, float], lineage: Lineage) -> Version:
    """Register and decide as eddy/services/training/retrainer.py does (decision audited with
    trigger)."""
    champion = registry.alias(MODEL, CHAMPION)
    version = registry.register(MODEL, SKLEARN, sklearn_model(), metrics, lineage)
    decision = offline_decision(
        metrics,
        {"log_loss": 0.5} if champion else None,
        lineage.window.get("holdout", 0),
        OfflineGate(min_holdout=10),
    )
    registry.record_decision(
        MODEL,
        version.version,
        lineage.trainer,
        {
            "action": decision.action,
            "reason": decision.reason,
            "evidence": decision.evidence,
            "champion": champion.version if champion else None,
            "trigger": lineage.trigger,
        },
    )
    if decision.action == "promote":
        registry.promote(MODEL, version.version, lineage.trainer, decision.reason)
    return version


def found_alert() -> FoundAlert:
    alert = DriftAlert(
        alert_id=ALERT_ID,
        model=MODEL,
        kind=DriftKind.DATA,
        detector="psi",
        feature="amount",
        statistic=0.41,
        threshold=0.2,
        window=DriftWindow(offsets={"eddy.training-examples[0]": (5, 90)}),
        action="retrain",
        evidence=[DriftEvidence(feature="amount", test="psi", statistic=0.41, threshold=0.2)],
    )
    return FoundAlert(alert, TOPIC, 0, 7)


def inputs(
    registry: Registry, version: int, alerts: dict[str, FoundAlert] | None = None
) -> ReportInputs:
    return ReportInputs(
        version=registry.get(MODEL, version),
        history=registry.history(MODEL),
        audit=registry.audit_log(MODEL),
        alerts={ALERT_ID: found_alert()} if alerts is None else alerts,
        alerts_topic=TOPIC,
        features=FEATURES,
        generated_at=1_800_000_000.0,
    )


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path, b"governance-test-key")


def test_a_retrained_version_reports_every_recorded_field(registry: Registry) -> None:
    first = retrain(registry, {"log_loss": 0.5, "accuracy": 0.8}, retrained_lineage())
    metrics = {"log_loss": 0.3, "accuracy": 0.9, "slice:region=eu:accuracy": 0.95}
    second = retrain(registry, {**metrics, "slice:region=eu:n": 20.0}, retrained_lineage())
    report = assemble(inputs(registry, second.version))

    assert list(report) == SECTIONS
    assert json.loads(json.dumps(report)) == report
    assert report["report"]["name"] == f"{MODEL}@2"
    provenance = report["provenance"]
    assert provenance["trained_by"] == provenance["registered_by"] == "retrainer (eddy)"
    assert provenance["registered_at"] == iso(second.created_at)
    assert provenance["artifact_sha256"] == second.artifact
    assert provenance["trigger"] == {"type": "alert", "id": ALERT_ID, "burst": ALERT_ID}
    assert provenance["published"]["alias"] == CHAMPION
    assert provenance["published"]["by"] == "retrainer (eddy)"

    (alert,) = report["triggering_alerts"]
    assert alert["found_at"] == {"topic": TOPIC, "partition": 0, "offset": 7}
    assert alert["alert"]["evidence"] == [
        {"feature": "amount", "test": "psi", "statistic": 0.41, "threshold": 0.2}
    ]

    data = report["data"]
    assert [
        (o["topic"], o["partition"], o["first_offset"], o["last_offset"]) for o in data["offsets"]
    ] == [
        ("eddy.events", 0, 100, 180),
        ("eddy.events", 2, 101, 179),
    ]
    assert data["time_span"] == {
        "from": "2026-01-01T00:01:40+00:00",
        "to": "2026-01-01T00:04:20+00:00",
    }
    assert data["rows"] == {"examples": 160, "train": 128, "holdout": 32}
    assert data["label_coverage"]["labelled_training_rows"] == 160

    features = report["features"]
    assert features["hash"] == features["current_definitions_hash"] == FEATURES.fingerprint()
    assert features["matches_current_definitions"] is True
    names = [n for a in features["definitions"]["aggregates"] for n in a["features"]]
    assert "amount_mean_1h" in names
    assert features["source"].endswith("at code version abc1234")

    assert report["training"]["params"] == {
        "C": 1.0,
        "estimator": "logistic_regression",
        "max_iter": 1000,
    }
    assert report["training"]["libraries"] == {"river": "0.22.0", "scikit-learn": "1.7.2"}
    assert report["validation"]["overall"] == {"accuracy": 0.9, "log_loss": 0.3}
    assert report["validation"]["per_slice"] == {"region=eu": {"accuracy": 0.95, "n": 20.0}}

    comparison = report["comparison"]
    assert comparison["champion_version"] == first.version
    assert comparison["decision"] == "promote"
    assert comparison["evidence"]["champion"] == 0.5
    assert comparison["evidence"]["candidate"] == 0.3

    (interval,) = report["deployment"]["intervals"]
    assert interval["alias"] == CHAMPION
    assert interval["to"] == STILL_SERVING
    assert report["deployment"]["serving_now"] == [CHAMPION]
    assert [(e["from_version"], e["to_version"]) for e in report["deployment"]["events"]] == [
        (1, 2)
    ]

    # Only what no producer records yet is missing, and each gap says what would record it.
    gaps = {g["field"]: g["needs"] for g in report["not_recorded"]}
    assert set(gaps) == {"data.label_coverage.late_label_coverage", "live", "live_estimate"}
    assert data["label_coverage"]["late_label_coverage"] == NOT_RECORDED
    assert report["live"] == NOT_RECORDED
    assert "eddy_label_coverage" in gaps["data.label_coverage.late_label_coverage"]


def test_a_first_version_had_no_champion_and_no_slices(registry: Registry) -> None:
    retrain(registry, {"log_loss": 0.5}, retrained_lineage(code_version="unknown"))
    report = assemble(inputs(registry, 1))
    assert report["comparison"]["champion_version"].startswith("none")
    assert report["validation"]["per_slice"] == NOT_RECORDED
    assert report["provenance"]["code_version"] == NOT_RECORDED
    fields = {g["field"] for g in report["not_recorded"]}
    assert {"validation.per_slice", "provenance.code_version"} <= fields


def test_an_alert_gone_from_its_topic_is_said_to_be_missing(registry: Registry) -> None:
    retrain(registry, {"log_loss": 0.5}, retrained_lineage())
    report = assemble(inputs(registry, 1, alerts={}))
    (alert,) = report["triggering_alerts"]
    assert alert["alert_id"] == ALERT_ID
    assert alert["alert"] == NOT_RECORDED
    assert alert["found_at"] == f"not found on {TOPIC}"
    assert f"triggering_alerts.{ALERT_ID}" in {g["field"] for g in report["not_recorded"]}


def test_an_online_snapshot_says_what_its_producer_does_not_record(registry: Registry) -> None:
    lineage = Lineage(
        trained_on={"eddy.training-examples[1]": [0, 499]},
        feature_set="online",
        params={"kind": "logistic", "detector": "adwin"},
        libraries={"river": "0.22.0"},
        code_version="abc1234",
        trigger={"type": "checkpoint", "id": "checkpoint-000000000500.sealed"},
        trainer="learner",
        window={"examples": 1500, "since": 1000},
    )
    registry.register(MODEL, RIVER, make_model("logistic"), {"accuracy": 0.7}, lineage)
    registry.promote(MODEL, 1, "learner", "cold start: first online snapshot")
    report = assemble(inputs(registry, 1, alerts={}))

    assert report["triggering_alerts"].startswith(NOT_APPLICABLE)
    assert report["data"]["rows"]["examples"] == 500
    assert report["data"]["rows"]["holdout"].startswith(NOT_APPLICABLE)
    assert report["validation"]["basis"].startswith("prequential")
    assert report["features"]["matches_current_definitions"] is False
    for missing in (
        report["data"]["time_span"],
        report["features"]["definitions"],
        report["comparison"],
        report["live"],
    ):
        assert missing == NOT_RECORDED
    fields = {g["field"] for g in report["not_recorded"]}
    assert {"data.time_span", "features.definitions", "comparison", "live"} <= fields
    assert all(
        "announcements.py" in g["needs"]
        for g in report["not_recorded"]
        if g["field"] in ("data.time_span", "comparison")
    )


def test_live_decisions_are_reported_for_both_roles(registry: Registry) -> None:
    retrain(registry, {"log_loss": 0.6, "accuracy": 0.8}, retrained_lineage())
    retrain(registry, {"log_loss": 0.3, "accuracy": 0.9}, retrained_lineage())
    registry.register(MODEL, SKLEARN, sklearn_model(), {"accuracy": 0.9}, retrained_lineage())
    registry.set_alias(MODEL, CHALLENGER, 3, "retrainer (eddy)", "below the margin")
    evaluator = LiveEvaluator(registry, MODEL, guard=RollbackGuard(min_samples=4, confidence=0.8))
    answers = [RecordedAnswer(f"r{i}", MODEL, v, i % 2 == 0) for i in range(6) for v in (2, 3)]
    labels = {f"r{i}": True for i in range(6)}
    evaluator.compare(answers, labels)
    # On the same 6 recent examples the champion (2) got 3 right, the previous one (1) all.
    evaluator.guard_champion([i % 2 == 0 for i in range(6)], [True] * 6, trivial_accuracy=0.0)

    report = assemble(inputs(registry, 2))
    decisions = report["live"]["decisions"]
    assert [(d["role"], d["other_version"], d["action"]) for d in decisions] == [
        ("champion", 3, "wait"),
        ("champion (rollback guard)", 1, "rollback"),
    ]
    assert decisions[1]["evidence"]["champion_accuracy"] == 0.5
    assert decisions[1]["evidence"]["samples"] == 6
    assert decisions[1]["decided_by"] == "live evaluator"
    (interval,) = report["deployment"]["intervals"]
    assert interval["ended_by"]["how"] == "rolled back to version 1"
    assert interval["ended_by"]["actor"] == "live evaluator"
    assert report["deployment"]["serving_now"] == []

    challenger = assemble(inputs(registry, 3))["live"]["decisions"]
    assert [(d["role"], d["other_version"], d["action"]) for d in challenger] == [
        ("challenger", 2, "wait")
    ]


def test_the_html_escapes_everything_and_loads_nothing(registry: Registry) -> None:
    hostile = "<script>alert('x')</script> & \"quoted\""
    lineage = retrained_lineage(trainer=hostile, params={hostile: hostile}, code_version="unknown")
    retrain(registry, {"log_loss": 0.5}, lineage)
    registry.promote(MODEL, 1, hostile, hostile)
    page = render_html(assemble(inputs(registry, 1, alerts={})))

    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert not re.search(r"(?i)\b(src|href)=|<link|@import|url\(", page)
    assert page.count('class="missing"') >= 4  # code version, alert, live, late labels
    for title in ("The triggering alert", "Deployment history", "Live metrics since deployment"):
        assert title in page


def test_the_live_estimate_says_whether_labels_found_it_invalid(registry: Registry) -> None:
    version = retrain(registry, {"log_loss": 0.3, "accuracy": 0.9}, retrained_lineage())
    performance = PerformanceReport(
        version.name,
        {"accuracy": 0.81, "accuracy_lower": 0.78, "accuracy_upper": 0.84, "answers": 1e3},
        0.93,
        {"accuracy": 0.62},
        640.0,
        1_800_000_000.0,
    )
    disagreed = DriftAlert(
        alert_id=f"{MODEL}:served:estimate_disagrees:{version.name}:700",
        model=MODEL,
        kind=DriftKind.CONCEPT,
        detector=DISAGREEMENT_DETECTOR,
        statistic=0.19,
        threshold=0.07,
        model_version=version.name,
        action="warn",
    )
    plain = assemble(replace(inputs(registry, version.version), performance=performance))
    estimate = plain["live_estimate"]
    assert estimate["valid"] == "no disagreement with the labels seen"
    assert estimate["latest"]["estimated"]["accuracy"] == 0.81
    assert estimate["latest"]["realized"] == {"accuracy": 0.62}
    assert "covariate shift" in estimate["basis"]
    assert json.loads(json.dumps(plain)) == plain

    found = FoundAlert(disagreed, TOPIC, 0, 9)
    flagged = assemble(
        replace(inputs(registry, version.version), performance=performance, estimate_alerts=[found])
    )
    assert flagged["live_estimate"]["valid"].startswith("no: labels disagreed")
    assert flagged["live_estimate"]["alerts"][0]["where"] == f"{TOPIC}[0]@9"
    assert "live_estimate" not in {g["field"] for g in flagged["not_recorded"]}
    assert "Live performance estimate" in render_html(flagged)
