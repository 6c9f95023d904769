"""``eddy run monitor``: a JSON status API and a live web dashboard on 127.0.0.1.

The monitor owns no state of the system: every ``EDDY_MONITOR_SAMPLE_S`` it scrapes the
other processes' Prometheus endpoints into short in-memory time series, follows
``drift-alerts``, and reads the registry when asked. ``GET /api/status`` returns all of
it; ``GET /`` is the dashboard (accuracy over time with alerts and promotions on the same
axis, the champion's estimated accuracy with its band beside its realized accuracy,
per-feature drift statistics, throughput, latency percentiles, lag, models with lineage
and history), drawn with Chart.js served from the local install
(``scripts/bootstrap.sh``), never fetched from the internet.

``POST /api/retrain`` (``Authorization: Bearer <EDDY_CONTROL_TOKEN>``, JSON body
``{"reason": ..., "model"?: ..., "requested_by"?: ..., "command_id"?: ...}``) asks for a
retrain: the monitor checks the token and the body, publishes a command on the
``control`` topic and answers 202 with its id; the retrainer carries it out and audits
it (:mod:`eddy.services.training.control`). The web process never trains. Refusals: 403 when no
token is configured, 401 for a missing or wrong token, 400 for a bad body or unknown model,
413 for an oversized body, 503 when Kafka does not take the command; each is logged.

>>> quantile_from_buckets([(0.01, 5), (0.1, 9), (float("inf"), 10)], 0.5)
0.01
>>> quantile_from_buckets([(0.01, 5), (0.1, 9), (float("inf"), 10)], 0.99)
inf
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import urllib.request
from dataclasses import asdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from eddy.services.config.settings import PROJECT_ROOT, Settings
from eddy.services.ops.metrics import ROLE_OFFSETS
from eddy.services.registry.store import CHAMPION, Registry
from eddy.services.training.control import (
    API_CHANNEL,
    Refusal,
    check_token,
    control_topic,
    parse_retrain_request,
    publish,
    retrain_command,
    unknown_model,
)
from eddy.streams.learning.slices import split
from eddy.streams.messages.contracts import DriftAlert
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.transport.admin import committed_offsets
from eddy.streams.transport.clients import log_offsets, make_admin, make_consumer, make_producer
from eddy.streams.transport.groups import SERVICES_WITH_GROUPS, group_id
from eddy.streams.transport.topics import Topic, topic_name

log = logging.getLogger(__name__)

CHART_JS = PROJECT_ROOT / ".eddy" / "web" / "node_modules" / "chart.js" / "dist" / "chart.umd.js"
DASHBOARD = Path(__file__).with_name("dashboard.html")
HISTORY_POINTS = 1800
ALERTS_KEPT = 200
# The newest versions the status shows (the registry holds every snapshot ever taken).
STATUS_VERSIONS = 20
SCRAPE_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 64 * 1024
RETRAIN_PATH = "/api/retrain"


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of cumulative ``(le, count)``."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    for upper, count in buckets:
        if count >= q * total:
            return upper
    return buckets[-1][0]


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples | None:
    """Samples by name from a Prometheus text endpoint; None when it does not answer,
    so that a service that is down shows as no data rather than as zeros."""
    try:
        text = urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S).read().decode()  # noqa: S310
    except OSError:
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _total(samples: Samples | None, name: str, **match: str) -> float | None:
    """The sum of ``name``'s samples that match; None when the service did not answer."""
    if samples is None:
        return None
    return sum(
        v
        for labels, v in samples.get(name, [])
        if all(labels.get(k) == m for k, m in match.items())
    )


SERVED_ACCURACY = {
    "estimate": "estimated_accuracy",
    "lower": "estimated_accuracy_lower",
    "upper": "estimated_accuracy_upper",
    "realized": "realized_accuracy",
}
"""``eddy_served_performance`` figures of the accuracy metric, by the series key each feeds."""


def served_accuracy(
    samples: Samples | None, model: str, version: str | None
) -> dict[str, float | None]:
    """``version``'s accuracy as the learner reports it: estimated from its answers with
    the estimate's band, and realized from the labels joined to them.

    A figure the learner has not reported (no window of answers estimated yet, no label
    joined yet), a learner that does not answer, or no version served is None: a gap in
    the chart, never a made-up 0; so is a figure that is not finite.

    >>> learner = {"eddy_served_performance": [
    ...     ({"model": "m", "version": "m@2", "metric": "accuracy", "figure": "estimate"}, 0.9),
    ...     ({"model": "m", "version": "m@2", "metric": "log_loss", "figure": "estimate"}, 0.3),
    ...     ({"model": "m", "version": "m@1", "metric": "accuracy", "figure": "realized"}, 0.8),
    ... ]}
    >>> served_accuracy(learner, "m", "m@2")  # doctest: +NORMALIZE_WHITESPACE
    {'estimated_accuracy': 0.9, 'estimated_accuracy_lower': None,
     'estimated_accuracy_upper': None, 'realized_accuracy': None}
    >>> unread, unserved = served_accuracy(None, "m", "m@2"), served_accuracy(learner, "m", None)
    >>> set(unread.values()) | set(unserved.values())
    {None}
    """
    figures: dict[str, float | None] = dict.fromkeys(SERVED_ACCURACY.values())
    if version is None:
        return figures
    for labels, value in (samples or {}).get("eddy_served_performance", []):
        key = SERVED_ACCURACY.get(labels.get("figure", ""))
        if (
            key is not None
            and labels.get("model") == model
            and labels.get("version") == version
            and labels.get("metric") == "accuracy"
            and math.isfinite(value)
        ):
            figures[key] = value
    return figures


def rate(value: float | None, previous: float | None, elapsed_s: float) -> float | None:
    """A counter's increase per second between two samples.

    None unless both samples were read and the counter did not go back (its service
    restarted, counting from 0 again): a gap in the chart, not a made-up 0 or a dip.

    >>> rate(30.0, 10.0, 2.0)
    10.0
    >>> rate(None, 10.0, 2.0), rate(30.0, None, 2.0), rate(3.0, 10.0, 2.0)
    (None, None, None)
    """
    if value is None or previous is None or value < previous or elapsed_s <= 0:
        return None
    return (value - previous) / elapsed_s


class Monitor:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.series: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_POINTS)
        self.alerts: collections.deque[dict[str, Any]] = collections.deque(maxlen=ALERTS_KEPT)
        self.drift: dict[str, float] = {}
        self.slices: dict[str, dict[str, float]] = {}  # the learner's, per slice
        self._previous: dict[str, float | None] = {}  # the last sample's counters
        self._previous_at: float | None = None
        self._buckets: dict[float, float] = {}
        self.lag: dict[str, dict[str, int]] = {}
        self._admin: Any = None
        self._lag_consumer: Any = None
        self._producer: KafkaProducer | None = None
        self._producer_lock = threading.Lock()
        self._stop = threading.Event()

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port + ROLE_OFFSETS[role]}/metrics"

    def sample(self) -> dict[str, Any]:
        """One point of every time series, from the services' metrics."""
        now = time.time()
        if not self.settings.metrics_port:
            return {"at": now}
        features, learner, predictor = (
            scrape(self.url("features")),
            scrape(self.url("learner")),
            scrape(self.url("predictor")),
        )
        answered = _total(predictor, "eddy_requests_total")
        resent = _total(predictor, "eddy_requests_total", outcome="resent")
        counters = {
            "events": _total(features, "eddy_events_total"),
            "requests": None if answered is None or resent is None else answered - resent,
            "examples": _total(learner, "eddy_examples_learned_total"),
        }
        elapsed = now - (self._previous_at or now)
        rates = {
            f"{name}_per_s": rate(value, self._previous.get(name), elapsed)
            for name, value in counters.items()
        }
        self._previous, self._previous_at = counters, now
        model = {labels["metric"]: v for labels, v in (learner or {}).get("eddy_model_metric", [])}
        champion = self.registry.aliases(self.settings.model_name).get(CHAMPION)
        served = None if champion is None else f"{self.settings.model_name}@{champion}"
        # The learner reports a rolling accuracy of 0 before it has scored anything (an
        # empty window): that is no accuracy at all, not a model that is always wrong.
        accuracy = model.get("rolling_accuracy") if model.get("examples") else None
        cumulative = sorted(
            (float(labels["le"]), v)
            for labels, v in (predictor or {}).get("eddy_request_latency_seconds_bucket", [])
        )
        # Percentiles of the requests since the last sample, not of all time.
        buckets = [(le, v - self._buckets.get(le, 0.0)) for le, v in cumulative]
        self._buckets = dict(cumulative)
        self.drift = {
            f"{labels['feature']} ({labels['test']})": v
            for labels, v in (learner or {}).get("eddy_drift_statistic", [])
        }
        self.slices = {}
        for labels, v in (learner or {}).get("eddy_slice_metric", []):
            self.slices.setdefault(labels["slice"], {})[labels["metric"]] = v
        point = {
            "at": now,
            "accuracy": accuracy,
            "error": None if accuracy is None else 1 - accuracy,
            "p50_ms": _ms(quantile_from_buckets(buckets, 0.5)),
            "p99_ms": _ms(quantile_from_buckets(buckets, 0.99)),
            # No lag sample yet (the predictor has read no batch): no lag, not 0.
            "lag": _total(predictor, "eddy_consumer_lag")
            if predictor is not None and "eddy_consumer_lag" in predictor
            else None,
            **rates,
            # The champion's, named in each point: after a promotion the next version's
            # figures start where they come (a gap until it has some), not joined on.
            "served_version": served,
            **served_accuracy(learner, self.settings.model_name, served),
        }
        self.series.append(point)
        return point

    def group_lag(self) -> dict[str, dict[str, int]]:
        """Records behind the log end, per consumer group and ``topic[partition]``."""
        prefix = self.settings.topic_prefix
        model = self.settings.model_name
        groups = tuple(group_id(prefix, service, model) for service in SERVICES_WITH_GROUPS)
        if self._admin is None:  # one admin client and consumer for the monitor's life
            self._admin = make_admin(self.settings)
            self._lag_consumer = make_consumer(self.settings, group_id=None)
        committed: dict[str, dict[Any, int]] = {}
        for group in groups:
            try:
                committed[group] = committed_offsets(self._admin, group)
            except KafkaError as exc:  # a group that has not committed yet: no lag yet
                log.debug("no offsets", extra={"group": group, "error": repr(exc)})
        partitions = {tp for offsets in committed.values() for tp in offsets}
        ends = log_offsets(self._lag_consumer, partitions) if partitions else {}
        return {
            group: {
                f"{tp.topic}[{tp.partition}]": max(0, ends.get(tp, offset) - offset)
                for tp, offset in sorted(offsets.items())
            }
            for group, offsets in committed.items()
            if offsets
        }

    def status(self) -> dict[str, Any]:
        model = self.settings.model_name
        versions = self.registry.versions(model, newest=STATUS_VERSIONS)
        champion = self.registry.alias(model, CHAMPION)
        return {
            "model": model,
            "series": list(self.series),
            "alerts": list(self.alerts),
            "drift": self.drift,
            "lag": self.lag,
            "aliases": self.registry.aliases(model),
            "versions": [
                {
                    "version": v.version,
                    "flavor": v.flavor,
                    "created_at": v.created_at,
                    "metrics": v.metrics,
                    "lineage": asdict(v.lineage),
                }
                for v in versions
            ],
            "history": [asdict(d) for d in self.registry.history(model)[-50:]],
            "slices": {
                "live": self.slices,
                "champion": split(champion.metrics)[1] if champion else {},
            },
        }

    def request_retrain(
        self, authorization: str | None, body: bytes | None, client: str
    ) -> tuple[int, dict[str, Any]]:
        """``POST /api/retrain``: check the token and the body, publish the command.

        Returns the HTTP status and the JSON answer. Nothing is trained here: the
        retrainer carries the command out and audits it.
        """
        refusal = check_token(self.settings.control_token, authorization)
        if refusal is not None:
            return self.refuse(refusal, client)
        try:
            request = parse_retrain_request(body)
        except InvalidMessage as exc:
            return self.refuse(Refusal(400, str(exc)), client)
        command = retrain_command(
            request,
            default_model=self.settings.model_name,
            channel=API_CHANNEL,
            now=datetime.now(UTC),
        )
        unknown = unknown_model(command.model, self.settings.model_name, self.registry.models())
        if unknown is not None:
            return self.refuse(Refusal(400, unknown), client)
        try:
            publish(self.settings, command, self._control_producer())
        except KafkaError as exc:
            log.error(
                "control command not published",
                extra={"command_id": command.command_id, "client": client, "error": repr(exc)},
            )
            return 503, {"error": "Kafka did not take the command; nothing was queued, retry"}
        return 202, {
            "command_id": command.command_id,
            "model": command.model,
            "requested_by": command.requested_by,
            "topic": control_topic(self.settings),
        }

    def refuse(self, refusal: Refusal, client: str) -> tuple[int, dict[str, Any]]:
        """Log a refused write request (never its token) and build the answer."""
        log.warning(
            "control request refused",
            extra={"status": refusal.status, "reason": refusal.reason, "client": client},
        )
        return refusal.status, {"error": refusal.reason}

    def _control_producer(self) -> KafkaProducer:
        with self._producer_lock:  # handler threads share one producer
            if self._producer is None:
                self._producer = make_producer(self.settings)
            return self._producer

    def run_sampler(self) -> None:
        while not self._stop.wait(self.settings.monitor_sample_s):
            try:
                self.sample()
                self.lag = self.group_lag()
            except Exception as exc:  # a bad scrape must not end the dashboard
                log.warning("sampling failed", extra={"error": repr(exc)})

    def run_alerts(self) -> None:
        topic = topic_name(Topic.DRIFT_ALERTS, self.settings.topic_prefix)
        consumer = make_consumer(self.settings, group_id=None)
        where = TopicPartition(topic, 0)
        consumer.assign([where])
        consumer.seek_to_beginning(where)
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        try:  # the retrainer dead-letters what is not an alert
                            decode(DriftAlert, record.value)
                        except InvalidMessage as exc:
                            log.warning(
                                "not an alert: left off the dashboard",
                                extra={"offset": record.offset, "error": str(exc)},
                            )
                            continue
                        alert = orjson.loads(record.value)
                        self.alerts.append({**alert, "received_at": record.timestamp / 1000})
        finally:
            consumer.close()

    def serve(self) -> ThreadingHTTPServer:
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/api/status":
                    self._send(200, "application/json", orjson.dumps(monitor.status()))
                elif self.path == "/static/chart.umd.js" and CHART_JS.exists():
                    self._send(200, "text/javascript", CHART_JS.read_bytes())
                elif self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", DASHBOARD.read_bytes())
                else:
                    self._send(404, "text/plain", b"not found")

            def do_POST(self) -> None:
                if self.path != RETRAIN_PATH:
                    self._send(404, "text/plain", b"not found")
                    return
                client = self.client_address[0]
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY_BYTES:
                    refusal = Refusal(413, f"the body must be 0 to {MAX_BODY_BYTES} bytes")
                    code, answer = monitor.refuse(refusal, client)
                    self.close_connection = True
                else:
                    # Read the body even for a request refused on its token: a socket
                    # closed with unread bytes resets, and the client loses the answer.
                    body = self.rfile.read(length)
                    code, answer = monitor.request_retrain(
                        self.headers.get("Authorization"), body, client
                    )
                extra = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
                self._send(code, "application/json", orjson.dumps(answer), extra)

            def _send(
                self, code: int, kind: str, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # access logs stay out of JSON logs
                return

        return ThreadingHTTPServer(("127.0.0.1", self.settings.monitor_port), Handler)

    def run(self) -> None:
        for target in (self.run_sampler, self.run_alerts):
            threading.Thread(target=target, daemon=True).start()
        server = self.serve()
        log.info("dashboard", extra={"url": f"http://127.0.0.1:{self.settings.monitor_port}/"})
        try:
            server.serve_forever()
        finally:
            self._stop.set()
            server.server_close()
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Close the Kafka clients the monitor opened on demand."""
        for client in (self._admin, self._lag_consumer, self._producer):
            if client is not None:
                client.close()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds * 1000, 3)
