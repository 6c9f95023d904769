"""Prometheus metrics and liveness: every Eddy process serves ``/metrics`` and
``/healthz`` on 127.0.0.1.

``/healthz`` answers 200 with a JSON verdict while the process is healthy and 503 once
its liveness check (:mod:`eddy.services.ops.liveness`) finds it stalled; a process without a
liveness check answers 200 (it is up). Each role has its own port, ``EDDY_METRICS_PORT``
plus the role's offset (features +1, learner +2, retrainer +3, predictor +4); 0 turns
metrics off. A second process of the same role on one host cannot bind the port and
runs without an endpoint (it says so in its log). Process CPU and memory come with
prometheus-client's process collector.

The metric objects live here, named once, so dashboards and alerts have one list::

    eddy_events_total{verdict}            feature worker: new, duplicate, too_late, invalid
    eddy_dead_letters_total{source}       records dead-lettered, by source topic
    eddy_batch_seconds{role}              time to process one batch
    eddy_examples_learned_total           learner
    eddy_drift_alerts_total{kind}         learner: data, concept, prediction
    eddy_model_metric{metric}             learner's prequential metrics (rolling and cumulative)
    eddy_label_coverage / eddy_label_latency_seconds   learner's late-label join
    eddy_drift_statistic{feature,test}    learner: latest drift statistic per feature
    eddy_served_performance{model,version,metric,figure}   learner: each served version's
                                          accuracy, roc_auc, log_loss: estimated from its
                                          answers (figure estimate, lower, upper) and
                                          realized from its labels (figure realized)
    eddy_retrains_total{action}, eddy_retrain_seconds  retrainer
    eddy_requests_total{outcome}          predictor: answered, invalid_request, no_champion,
                                          resent (a repeat of an answer counted before)
    eddy_request_latency_seconds          predictor: request timestamp → answer
    eddy_serving_version{model,alias}     version number each alias serves
    eddy_consumer_lag{topic,partition}    records behind the end of the log
    eddy_healthy                          1 while the liveness check passes, 0 when stalled
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import orjson
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.exposition import MetricsHandler

from eddy.services.config.settings import Settings

log = logging.getLogger(__name__)

ROLE_OFFSETS = {"features": 1, "learner": 2, "retrainer": 3, "predictor": 4, "monitor": 5}
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

EVENTS = Counter("eddy_events_total", "Events handled by the feature worker.", ["verdict"])
STORE_LOSSES = Counter(
    "eddy_online_store_losses_total",
    "Times the online store came back without writes it had acknowledged (then repaired).",
)
EVENTS_REPAIRED = Counter(
    "eddy_events_repaired_total", "Events re-applied from Kafka after an online-store loss."
)
DEAD_LETTERS = Counter("eddy_dead_letters_total", "Records dead-lettered.", ["source"])
BATCH_SECONDS = Histogram("eddy_batch_seconds", "Time to process one batch.", ["role"])
EXAMPLES_LEARNED = Counter("eddy_examples_learned_total", "Examples the learner learned.")
DRIFT_ALERTS = Counter("eddy_drift_alerts_total", "Drift alerts raised.", ["kind"])
MODEL_METRIC = Gauge("eddy_model_metric", "The learner's prequential metrics.", ["metric"])
SLICE_METRIC = Gauge(
    "eddy_slice_metric", "The learner's prequential metrics per slice.", ["slice", "metric"]
)
LABEL_COVERAGE = Gauge("eddy_label_coverage", "Share of recorded snapshots that got a label.")
LABEL_LATENCY = Gauge("eddy_label_latency_seconds", "Mean delay from prediction to label.")
RETRAINS = Counter("eddy_retrains_total", "Retrains by decision.", ["action"])
RETRAIN_SECONDS = Histogram("eddy_retrain_seconds", "Duration of one retrain.")
REQUESTS = Counter("eddy_requests_total", "Prediction requests by outcome.", ["outcome"])
PREDICTION_CACHE = Counter(
    "eddy_prediction_cache_total", "Champion answers by cache outcome (hit, miss).", ["outcome"]
)
REQUEST_LATENCY = Histogram(
    "eddy_request_latency_seconds", "Request timestamp to answer.", buckets=LATENCY_BUCKETS
)
SERVING_VERSION = Gauge("eddy_serving_version", "Version each alias serves.", ["model", "alias"])
DRIFT_STATISTIC = Gauge(
    "eddy_drift_statistic", "Latest data-drift statistic per feature.", ["feature", "test"]
)
DRIFT_UNTRACKED = Gauge(
    "eddy_drift_untracked_values",
    "Values of features past EDDY_DRIFT_MAX_FEATURES the data-drift monitor did not track "
    "(since the learner started).",
)
SERVED_PERFORMANCE = Gauge(
    "eddy_served_performance",
    "Each served version's performance: estimated from its answers before labels "
    "(figure estimate, lower, upper) and realized from the labels joined to them (realized).",
    ["model", "version", "metric", "figure"],
)
CONCEPT_UNCONFIRMED = Gauge(
    "eddy_concept_unconfirmed",
    "Online-learner concept detections not raised because the served answers' error, over "
    "the same span, clearly rose less than half as much (checkpointed with the learner).",
)
CONSUMER_LAG = Gauge("eddy_consumer_lag", "Records behind the log end.", ["topic", "partition"])
HEALTHY = Gauge("eddy_healthy", "1 while the liveness check passes, 0 when stalled.")

HEALTH_PATH = "/healthz"
_health: tuple[bool, dict[str, Any]] = (
    True,
    {"status": "ok", "reason": "running; no liveness check in this process"},
)
HEALTHY.set(1)


def count_dead_letters(source: str, letters: int) -> None:
    """What a :class:`~eddy.streams.dead_letters.sink.DeadLetterSink` is handed to count."""
    DEAD_LETTERS.labels(source).inc(letters)


def report_health(healthy: bool, detail: Mapping[str, Any]) -> None:
    """What ``/healthz`` answers from now on (the liveness watchdog calls this)."""
    global _health
    _health = (healthy, dict(detail))
    HEALTHY.set(1 if healthy else 0)


def health() -> tuple[bool, dict[str, Any]]:
    """The current verdict and its JSON detail."""
    return _health


class _Handler(MetricsHandler):
    """prometheus-client's ``/metrics`` handler, plus ``/healthz``."""

    def do_GET(self) -> None:
        if urlparse(self.path).path != HEALTH_PATH:
            super().do_GET()
            return
        healthy, detail = health()
        body = orjson.dumps(detail)
        self.send_response(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(role: str, settings: Settings) -> int | None:
    """Start this process's ``/metrics`` and ``/healthz`` endpoint in a daemon thread;
    returns the port, or None if off."""
    if not settings.metrics_port:
        return None
    port = settings.metrics_port + ROLE_OFFSETS[role]
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    except OSError as exc:
        log.warning("no metrics endpoint", extra={"role": role, "port": port, "error": str(exc)})
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info(
        "metrics",
        extra={
            "role": role,
            "url": f"http://127.0.0.1:{port}/metrics",
            "health": f"http://127.0.0.1:{port}{HEALTH_PATH}",
        },
    )
    return port
