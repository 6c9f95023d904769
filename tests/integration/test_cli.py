"""The `eddy` command against the real broker, run as an operator would run it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import RIVER, Lineage
from eddy.streams.learning.models import make_model
from eddy.streams.messages.validation import MAX_MESSAGE_BYTES
from eddy.streams.store.estimates import PerformanceReport, save_reports
from eddy.streams.transport.clients import make_redis
from eddy.streams.transport.topics import Topic

EDDY = str(Path(sys.executable).with_name("eddy"))


def eddy(settings: Settings, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [EDDY, *args],
        input=stdin,
        env=settings.child_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


@pytest.fixture(scope="module")
def topics(stack: Settings) -> Settings:
    """Eddy's topics under a prefix of this module's own."""
    settings = stack.model_copy(update={"topic_prefix": f"eddy-cli-{uuid.uuid4().hex[:8]}."})
    created = eddy(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created") == len(Topic)
    return settings


def test_topics_create_is_idempotent_and_listed(topics: Settings) -> None:
    again = eddy(topics, "topics", "create")
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout
    assert again.stdout.count("exists") == len(Topic)
    listed = eddy(topics, "topics", "list")
    assert f"{topics.topic_prefix}model-updates  (1 partitions)" in listed.stdout
    assert f"{topics.topic_prefix}events  ({topics.partitions} partitions)" in listed.stdout


def _event(event_id: str, **changes: object) -> bytes:
    event = {
        "event_id": event_id,
        "entity_id": "u1",
        "event_time": "2026-01-01T00:00:00Z",
        "features": {"amount": 1.5},
    }
    return orjson.dumps({**event, **changes})


BAD_LINES: list[tuple[bytes, str, str]] = [
    (b'{"event_id": "\xff"}', "bad_utf8", "not UTF-8"),
    (b"{not json", "bad_json", "not JSON"),
    (b"[1, 2, 3]", "not_an_object", "expected a JSON object"),
    (_event("e-v2", schema_version=7), "unknown_schema_version", "schema_version 7"),
    (orjson.dumps({"features": {}}), "invalid_fields", "event_id: Field required"),
    (_event("e-type", entity_id=["u"]), "invalid_fields", "entity_id"),
    (_event("e-nan").replace(b"1.5", b"NaN"), "non_finite_number", "NaN"),
    (_event("e-future", event_time="2999-01-01T00:00:00Z"), "event_time_out_of_range", "future"),
    (_event("e-big", pad="x" * MAX_MESSAGE_BYTES), "too_large", "exceeds the limit"),
]


def test_produce_rejects_each_bad_line_with_its_reason_and_sends_the_rest(
    topics: Settings,
) -> None:
    good = _event(f"good-{uuid.uuid4().hex[:6]}")
    lines = b"\n".join([good, *(line for line, _, _ in BAD_LINES)]) + b"\n"

    result = eddy(topics, "produce", "events", stdin=lines)

    assert result.returncode == 1
    for number, (_, error_class, reason) in enumerate(BAD_LINES, start=2):
        expected = f"line {number}: rejected ({error_class})"
        assert expected in result.stderr, result.stderr
        line = next(x for x in result.stderr.splitlines() if x.startswith(f"line {number}:"))
        assert reason in line
    assert f"sent 1, rejected {len(BAD_LINES)}" in result.stderr

    consumed = eddy(topics, "consume", "events", "--json", "--timeout", "3")
    values = [orjson.loads(line)["value"] for line in consumed.stdout.splitlines()]
    assert values == [orjson.loads(good) | {"schema_version": 1}]


def test_produce_refuses_topics_without_a_contract(topics: Settings) -> None:
    result = eddy(topics, "produce", "dead-letter", stdin=b"{}\n")
    assert result.returncode == 2
    assert "only Eddy's workers write to it" in result.stderr


def test_status_reports_both_services_healthy(stack: Settings) -> None:
    result = eddy(stack, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kafka: healthy" in result.stdout
    assert "redis: healthy" in result.stdout
    assert "policy noeviction" in result.stdout, "eddy up's Redis never evicts feature state"
    assert "WARNING" not in result.stdout


def test_an_unknown_setting_stops_the_command_with_its_name(stack: Settings) -> None:
    env = stack.child_env() | {"EDDY_PARTITONS": "3"}
    result = subprocess.run(
        [EDDY, "topics", "list"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "EDDY_PARTITONS" in result.stderr


def test_alerts_watch_explains_each_alert(topics: Settings) -> None:
    alert = {
        "alert_id": "m:data:900",
        "model": "m",
        "kind": "data",
        "detector": "data_drift",
        "feature": "amount",
        "statistic": 0.9,
        "threshold": 0.25,
        "evidence": [{"feature": "amount", "test": "psi", "statistic": 0.9, "threshold": 0.25}],
        "model_version": "m@online",
        "action": "retrain",
    }
    sent = eddy(topics, "produce", "drift-alerts", stdin=orjson.dumps(alert) + b"\n")
    assert sent.returncode == 0, sent.stderr
    watcher = subprocess.Popen(
        [EDDY, "alerts", "watch", "--from-beginning"],
        env=topics.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert watcher.stdout is not None
        headline = watcher.stdout.readline().decode()
        evidence = watcher.stdout.readline().decode()
    finally:
        watcher.kill()
        watcher.wait(timeout=30)
        if watcher.stdout is not None:
            watcher.stdout.close()
    assert "DATA drift on m (m@online) -> retrain  [m:data:900]" in headline
    assert "psi=0.9000 > 0.2500  (3.6x)" in evidence


def test_alerts_watch_explains_the_estimate_s_alerts(topics: Settings) -> None:
    """An estimated degradation and labels that disagree with the estimate, as the
    learner raises them (the contract's own kinds and fields), read in words."""
    served = {"model": "m", "stream": "served", "model_version": "m@3", "action": "warn"}
    degradation = served | {
        "alert_id": "m:served:estimated_degradation:m@3:4000",
        "kind": "estimated_degradation",
        "detector": "cbpe",
        "feature": "estimated_accuracy",
        "statistic": 0.81,
        "threshold": 0.9,
        "evidence": [
            {"feature": "estimated_accuracy", "test": "cbpe", "statistic": 0.81, "threshold": 0.9},
            {"feature": "amount", "test": "psi", "statistic": 0.9, "threshold": 0.2},
        ],
        "metrics": {
            "estimated_accuracy": 0.81,
            "estimated_accuracy_lower": 0.79,
            "estimated_accuracy_upper": 0.83,
            "reference_accuracy": 0.95,
            "answers": 1000.0,
        },
    }
    disagreement = served | {
        "alert_id": "m:served:concept:m@3:700",
        "kind": "concept",
        "detector": "cbpe_disagreement",
        "statistic": 0.2,
        "threshold": 0.05,
        "metrics": {"estimated_accuracy": 0.9, "realized_accuracy": 0.7, "labelled": 500.0},
    }
    alerts = orjson.dumps(degradation) + b"\n" + orjson.dumps(disagreement) + b"\n"
    sent = eddy(topics, "produce", "drift-alerts", stdin=alerts)
    assert sent.returncode == 0, sent.stderr
    watcher = subprocess.Popen(
        [EDDY, "alerts", "watch", "--from-beginning"],
        env=topics.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines: list[str] = []
    try:
        assert watcher.stdout is not None
        while not any("LABELS DISAGREE" in line for line in lines):
            lines.append(watcher.stdout.readline().decode())
        lines.extend(watcher.stdout.readline().decode() for _ in range(2))
    finally:
        watcher.kill()
        watcher.wait(timeout=30)
        if watcher.stdout is not None:
            watcher.stdout.close()
    text = "".join(lines)
    assert "ESTIMATED DEGRADATION of m (m@3) -> warn" in text, text
    assert "estimated accuracy 0.8100 [0.7900, 0.8300] < 0.9000 (reference 0.9500)" in text
    assert "  amount           psi=0.9000 > 0.2000  (4.5x)" in text
    assert "LABELS DISAGREE WITH THE ESTIMATE of m (m@3) -> warn" in text
    assert "realized accuracy 0.7000, estimated 0.9000, 500 labelled answers" in text
    assert "concept drift: the estimate is not valid for this change" in text


def test_dlq_replay_sends_only_to_topics_eddy_reads(stack: Settings) -> None:
    """Anyone who can write to the dead-letter topic writes its headers: a replay must not
    publish to whatever topic they name (nor fail on a letter without them)."""
    settings = stack.model_copy(update={"topic_prefix": f"eddy-dlq-{uuid.uuid4().hex[:8]}."})
    assert eddy(settings, "topics", "create").returncode == 0
    events = f"{settings.topic_prefix}{Topic.EVENTS.value}"
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)

    def letter(source: str | None) -> None:
        headers = (
            []
            if source is None
            else [
                ("eddy.source.topic", source.encode()),
                ("eddy.source.partition", b"0"),
                ("eddy.source.offset", b"7"),
                ("eddy.error.class", b"bad_json"),
            ]
        )
        dead = f"{settings.topic_prefix}{Topic.DEAD_LETTER.value}"
        producer.send(dead, key=b"u1", value=b"{fixed", headers=headers, partition=0)

    letter(events)
    letter("__consumer_offsets")
    letter(f"{settings.topic_prefix}{Topic.PREDICTIONS.value}")
    letter(None)
    producer.flush()
    producer.close()
    replayed = eddy(settings, "dlq", "replay", "--all")
    assert replayed.returncode == 1, replayed.stderr
    assert replayed.stdout.splitlines() == [f"replayed 0@0 to {events}"]
    refused = replayed.stderr.splitlines()
    assert [line.split(":")[0] for line in refused] == ["refused 0@1", "refused 0@2", "refused 0@3"]
    assert "'__consumer_offsets' is not one Eddy's workers read" in refused[0]
    assert "no readable source headers" in refused[2]
    sent = eddy(settings, "consume", "events", "--json", "--timeout", "3")
    assert sent.stdout.count("{fixed") == 1, sent.stdout


def test_models_show_adds_the_learner_s_live_performance_of_the_version(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack.model_copy(
        update={"topic_prefix": f"eddy-show-{uuid.uuid4().hex[:8]}.", "data_dir": tmp_path}
    )
    registry = open_registry(settings, announce=False)
    lineage = Lineage({}, "fs", {}, {}, "test", {"type": "operator", "id": "t"}, "test")
    for _ in range(2):
        registry.register("m", RIVER, make_model("logistic"), {"accuracy": 0.9}, lineage)
    registry.promote("m", 1, "test", "first champion")

    before = eddy(settings, "models", "show", "m")
    assert before.returncode == 0, before.stderr
    assert "performance" not in orjson.loads(before.stdout)  # nothing reported: as before

    estimated = {"accuracy": 0.91, "accuracy_lower": 0.88, "accuracy_upper": 0.94}
    reported_at = time.time() - 30
    reports = [
        PerformanceReport(
            "m@1", estimated | {"answers": 1000.0}, 0.95, {"accuracy": 0.9}, 812.0, reported_at
        ),
        PerformanceReport("m@2", {"accuracy": 0.5, "answers": 100.0}, None, {}, 20.0, reported_at),
    ]
    redis = make_redis(settings)
    save_reports(redis, settings.topic_prefix, "m", reports)
    redis.close()

    champion = eddy(settings, "models", "show", "m")
    second = eddy(settings, "models", "show", "m", "2")

    assert champion.returncode == 0, champion.stderr
    shown = orjson.loads(champion.stdout)
    assert shown["name"] == "m@1"
    age = shown["performance"].pop("age_s")
    assert 30 <= age < 120
    assert shown["performance"] == {
        "estimated": estimated | {"answers": 1000.0},
        "reference_accuracy": 0.95,
        "realized": {"accuracy": 0.9},
        "calibrated_on": 812.0,
        "at": datetime.fromtimestamp(reported_at, UTC).isoformat(timespec="seconds"),
    }
    assert orjson.loads(second.stdout)["performance"]["estimated"]["accuracy"] == 0.5
