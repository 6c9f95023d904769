"""The monitor's status API and dashboard, over HTTP, against a real registry and Kafka."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from eddy.services.ops.metrics import ROLE_OFFSETS
from eddy.services.ops.monitor import CHART_JS
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_consumer, make_producer
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings
from tests.monitoring import champion_and_alert
from tests.network import free_port, get
from tests.processes import start_eddy
from tests.waiting import wait_until


def test_status_api_and_dashboard_show_models_history_and_alerts(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> None:
    settings = deployment_settings(
        "mon",
        model_name="m",
        monitor_port=free_port(),
        metrics_port=free_port() - 10,  # no service serves there: empty samples
        monitor_sample_s=0.5,
    )
    _registry, alert = champion_and_alert(settings)
    producer = make_producer(settings)
    topic = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
    # Anyone can write to the alerts topic: a record that is not an alert is left off the
    # dashboard, and the alerts after it still show (it once ended the reading thread).
    producer.send(topic, key=b"m", value=b"not an alert").get(timeout=30)
    producer.send(topic, key=b"m", value=encode(alert)).get(timeout=30)
    requests = topic_name(Topic.PREDICTION_REQUESTS, settings.topic_prefix)
    for _ in range(5):
        producer.send(requests, value=b"{}", partition=0).get(timeout=30)
    producer.close()
    # A predictors group that has committed 2 of the 5 requests: 3 behind.
    lagging = make_consumer(settings, group_id=f"{settings.topic_prefix}predictors")
    lagging.assign([TopicPartition(requests, 0)])
    lagging.commit({TopicPartition(requests, 0): OffsetAndMetadata(2, "", -1)})
    lagging.close()

    monitor = start_eddy(settings, tmp_path / "monitor.log", "run", "monitor")
    base = f"http://127.0.0.1:{settings.monitor_port}"
    status: dict[str, Any] = {}

    def status_complete() -> bool:
        status.clear()
        status.update(orjson.loads(get(f"{base}/api/status")))
        return bool(status["alerts"] and status["series"] and status["lag"])

    try:
        wait_until(
            status_complete,
            "the status to show alerts, samples and lag",
            timeout_s=30,
            every_s=0.5,
            logs=lambda: f"status: {status}\n{(tmp_path / 'monitor.log').read_text()[-3000:]}",
        )
        page = get(f"{base}/").decode()
        chart = get(f"{base}/static/chart.umd.js")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/nothing-here", timeout=5)
    finally:
        monitor.terminate()
        monitor.wait(timeout=30)

    assert status["aliases"] == {"champion": 1}
    assert status["lag"] == {f"{settings.topic_prefix}predictors": {f"{requests}[0]": 3}}
    assert status["versions"][0]["lineage"]["trigger"] == {"type": "alert", "id": "a1"}
    assert status["history"][0]["reason"] == "first champion"
    assert [a["alert_id"] for a in status["alerts"]] == ["m:concept:5"]
    assert status["series"]
    assert status["series"][-1]["accuracy"] is None  # no learner running: nothing made up
    assert '<script src="/static/chart.umd.js">' in page
    assert chart == CHART_JS.read_bytes()


def test_status_api_carries_the_champion_s_estimated_and_realized_accuracy(
    deployment_settings: DeploymentSettings, tmp_path: Path
) -> None:
    """A learner's /metrics of the test's own (prometheus_client serving the learner's
    gauge, as the learner does) reports version 1's estimate, then labels realize it."""
    learner = CollectorRegistry()
    served = Gauge(
        "eddy_served_performance", "", ["model", "version", "metric", "figure"], registry=learner
    )
    learner_port = free_port()
    server, thread = start_http_server(learner_port, "127.0.0.1", learner)
    settings = deployment_settings(
        "mon-estimate",
        model_name="m",
        monitor_port=free_port(),
        metrics_port=learner_port - ROLE_OFFSETS["learner"],
        monitor_sample_s=0.3,
    )
    champion_and_alert(settings)  # version 1 is the champion
    served.labels("m", "m@2", "accuracy", "estimate").set(0.5)  # not the champion's
    monitor = start_eddy(settings, tmp_path / "monitor.log", "run", "monitor")
    base = f"http://127.0.0.1:{settings.monitor_port}"
    series: list[dict[str, Any]] = []

    def sampled(key: str) -> bool:
        series[:] = orjson.loads(get(f"{base}/api/status"))["series"]
        return any(point.get(key) is not None for point in series)

    def wait_for(key: str) -> None:
        wait_until(
            lambda: sampled(key),
            f"a sample with {key}",
            timeout_s=30,
            every_s=0.3,
            logs=lambda: f"series: {series[-3:]}\n{(tmp_path / 'monitor.log').read_text()[-3000:]}",
        )

    try:
        wait_for("served_version")  # sampled before the learner estimated anything
        served.labels("m", "m@1", "accuracy", "estimate").set(0.91)
        served.labels("m", "m@1", "accuracy", "lower").set(0.88)
        served.labels("m", "m@1", "accuracy", "upper").set(0.94)
        served.labels("m", "m@1", "log_loss", "estimate").set(0.3)
        wait_for("estimated_accuracy")
        estimated = list(series)
        served.labels("m", "m@1", "accuracy", "realized").set(0.9)
        wait_for("realized_accuracy")
    finally:
        monitor.terminate()
        monitor.wait(timeout=30)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    # Before the estimate the samples had none: gaps, not zeros, nor version 2's figures.
    assert estimated[0]["served_version"] == "m@1"
    assert estimated[0]["estimated_accuracy"] is None
    last = series[-1]
    assert {k: v for k, v in last.items() if "accuracy" in k} == {
        "accuracy": None,  # the learner reports no rolling accuracy here
        "estimated_accuracy": 0.91,
        "estimated_accuracy_lower": 0.88,
        "estimated_accuracy_upper": 0.94,
        "realized_accuracy": 0.9,
    }
