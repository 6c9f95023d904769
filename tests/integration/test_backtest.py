"""``eddy backtest`` against real Kafka: a range read back, replayed, reported, repeatably.

The history of the unit tests (STAGGER switching concept halfway, half the labels late on
``labels``) is produced to the session's topics with record timestamps at event time,
then backtested twice under the same two policies.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from eddy.services.backtest.command import Bound, render, run_backtest
from eddy.services.config.settings import Settings
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name
from tests.backtest_history import (
    COUNT,
    DRIFT_AT,
    NEVER,
    RETRAIN_ON_CONCEPT,
    STEP_S,
    deterministic,
    history,
    score_since,
)
from tests.factories import DeploymentSettings

SEND_TIMEOUT_S = 60.0
MS = 1000
FIRST_OFFSETS = 100
# The second backtest runs in a process of its own, with another string-hash seed: no
# state shared with the first, and no result resting on set or dict iteration order.
IN_ANOTHER_PROCESS = (
    "import sys; from pathlib import Path; "
    "from eddy.services.backtest.command import parse_bound, run_backtest; "
    "from eddy.services.config.settings import Settings; "
    "from eddy.streams.features.definitions import FEATURES; "
    "run_backtest(Settings.from_env(), Path(sys.argv[1]), features=FEATURES, schema=None, "
    "start=parse_bound(sys.argv[2]), out=Path(sys.argv[3]))"
)
PROCESS_TIMEOUT_S = 120


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings) -> Settings:
    return deployment_settings("bt")


def produce(settings: Settings, start: datetime) -> None:
    prefix = settings.topic_prefix
    events = topic_name(Topic.EVENTS, prefix)
    labels = topic_name(Topic.LABELS, prefix)
    producer = make_producer(settings, linger_ms=10)
    try:
        for event, late in history(start):
            key = event.entity_id.encode()
            stamp = int(event.event_time.timestamp() * MS)
            producer.send(events, key=key, value=encode(event), timestamp_ms=stamp)
            if late is not None:
                stamp = int(late.event_time.timestamp() * MS)
                producer.send(labels, key=key, value=encode(late), timestamp_ms=stamp)
        producer.flush(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["policy"]["name"]: p for p in report["policies"]}


def test_backtests_of_a_kafka_range_repeat_exactly_and_tell_policies_apart(
    deployment: Settings, tmp_path: Path
) -> None:
    # Recent enough for the topics' retention, whole seconds so the stamps are exact.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    produce(deployment, start)
    policies = tmp_path / "policies.json"
    policies.write_text(json.dumps({"policy": [RETRAIN_ON_CONCEPT, NEVER]}))

    first, first_path = run_backtest(
        deployment,
        policies,
        features=FEATURES,
        schema=None,
        start=Bound(time=start),
        out=tmp_path / "first.json",
    )
    second_path = tmp_path / "second.json"
    subprocess.run(
        [sys.executable, "-c", IN_ANOTHER_PROCESS, policies, start.isoformat(), second_path],
        env=deployment.child_env() | {"PYTHONHASHSEED": "1"},
        check=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    second = orjson.loads(second_path.read_bytes())

    # The range read back whole, every label joined, the report written as returned.
    events = first["range"]["events"]
    assert sum(r["to"] - r["from"] for r in events.values()) == COUNT
    counts = first["timeline"]["counts"]
    assert counts["events_new"] == COUNT
    assert counts["labels_joined"] == COUNT // 2
    assert orjson.loads(first_path.read_bytes()) == orjson.loads(orjson.dumps(first))

    # Same range, same policies: identical results, but for the CPU seconds.
    first = orjson.loads(first_path.read_bytes())
    assert first["range"] == second["range"]
    assert first["timeline"] == second["timeline"]
    assert [deterministic(p) for p in first["policies"]] == [
        deterministic(p) for p in second["policies"]
    ]
    assert all(p["compute"]["cpu_seconds"] >= 0 for p in first["policies"])

    # Two policies: the one that retrains on concept alerts recovers after the drift.
    reports = by_name(first)
    retrain, never = reports["retrain-on-concept"], reports["never-retrain"]
    drift = start + timedelta(seconds=DRIFT_AT * STEP_S)
    assert retrain["retrains_by_action"].get("promote", 0) >= 1
    assert never["retrains"] == []
    assert score_since(retrain, drift) > score_since(never, drift) + 0.2
    table = render(first)
    assert "retrain-on-concept" in table
    assert "never-retrain" in table


def test_an_offset_range_reads_those_offsets_of_every_partition(
    deployment: Settings, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    produce(deployment, start)
    policies = tmp_path / "policies.json"
    policies.write_text(json.dumps({"policy": [NEVER]}))

    report, path = run_backtest(
        deployment,
        policies,
        features=FEATURES,
        schema=None,
        start=Bound(offset=0),
        end=Bound(offset=FIRST_OFFSETS),
    )

    ranges = report["range"]["events"]
    assert len(ranges) == deployment.partitions
    assert all(r["from"] == 0 and r["to"] <= FIRST_OFFSETS for r in ranges.values())
    assert report["timeline"]["counts"]["events_read"] == sum(r["to"] for r in ranges.values())
    assert path.parent == deployment.data_dir / "backtests"
    assert orjson.loads(path.read_bytes())["range"] == report["range"]
