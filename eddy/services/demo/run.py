"""``eddy demo``: the whole loop on a stream with a known concept drift.

It brings the stack up, gives the run topics and a data folder of its own, starts every
service under the supervisor, and plays an application: each item of a River
synthetic stream becomes an event (for the feature worker) and a prediction request (for
the predictor), and its true label is published a moment later on ``labels`` (the late
ground truth the learner joins to the features the prediction saw). Halfway, the
concept changes. The learner's error monitor fires, the retrainer trains on the recent
window and promotes the winner, the predictors swap to it, accuracy recovers. The demo
watches all of it from the outside (answers, alerts, the registry), shows it live, then
prints a summary and writes an HTML report with a chart, the chart as PNG, and the
summary as ``summary.json``.
"""

from __future__ import annotations

import base64
import heapq
import html
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from eddy.services.config.settings import Settings
from eddy.services.demo.baselines import (
    SCHEDULE_S,
    Request,
    accuracy,
    fixed_schedule,
    never_retrained,
    online_alone,
    timeline,
)
from eddy.services.demo.scenarios import (
    change_lead,
    describe,
    drifts,
    percentile,
    phase_accuracy,
    scenario_stream,
    verdict,
)
from eddy.services.ops.supervisor import SERVICES, Supervisor
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHAMPION
from eddy.streams.messages.contracts import Event, Label, PredictionRequest
from eddy.streams.messages.validation import encode
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.admin import ensure_topics, group_serving
from eddy.streams.transport.clients import make_admin, make_consumer, make_producer, make_redis
from eddy.streams.transport.groups import SERVICES_WITH_GROUPS, group_id
from eddy.streams.transport.topics import Topic, topic_name

ENTITIES = 50
LABEL_DELAY_S = 1.0
DRAIN_S = 15.0
# Five Python services starting on two busy cores took 34 s once: the traffic must wait
# for them, or it meets no predictor and the demo serves a fraction of its requests.
READY_TIMEOUT_S = 180.0
RECOVERY_WINDOW_S = 10.0
LIVE_REVIEW_EVERY_S = 5.0  # the champion is reviewed on recent labels this often
POLL_MS = 200


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 120.0
    rate: float = 50.0
    scenario: str = "stagger"
    seed: int = 42


@dataclass
class Observed:
    """What the demo saw from the outside, appended by the watcher threads."""

    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    truth: dict[str, tuple[bool, float]] = field(default_factory=dict)  # request → label, sent
    outcomes: list[tuple[float, bool, str]] = field(default_factory=list)  # at, right, version
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    alerts: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    drift_at_s: float | None = None
    produced: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started


def demo_settings(base: Settings, options: DemoOptions) -> Settings:
    """A run of its own: topics, data folder and a cadence that shows the loop quickly."""
    run = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    per_second = max(1, int(options.rate))
    return base.model_copy(
        update={
            "topic_prefix": f"{base.topic_prefix}demo-{run}.",
            "data_dir": base.data_dir / "demo" / run,
            "model_name": "demo",
            "learner_kind": "hoeffding_adaptive_tree",
            "snapshot_every": 4 * per_second,
            "checkpoint_every": per_second,
            "checkpoint_interval_s": 1.0,
            "retrain_window": 8 * per_second,
            "retrain_min_holdout": max(20, per_second // 2),
            "retrain_debounce_s": 4.0,
            "label_wait_s": 30,
            "live_evaluation_every_s": LIVE_REVIEW_EVERY_S,
        }
    )


def run_demo(base: Settings, options: DemoOptions, console: Console) -> dict[str, Any]:
    """Play the demo; its summary (written as ``summary.json`` beside the report)."""
    settings = demo_settings(base, options)
    ensure_topics(settings)
    supervisor = Supervisor(SERVICES, settings.data_dir / "logs", env=settings.child_env())
    observed = Observed()
    stop = threading.Event()
    watchers = [
        threading.Thread(target=_watch_answers, args=(settings, observed, stop), daemon=True),
        threading.Thread(target=_watch_alerts, args=(settings, observed, stop), daemon=True),
    ]
    console.print(f"[bold]Eddy demo[/] · {describe(options.scenario)} · {options.rate:g} events/s")
    console.print(f"topics {settings.topic_prefix}* · data and logs in {settings.data_dir}")
    console.print(f"dashboard: http://127.0.0.1:{settings.monitor_port}/ (while the demo runs)")
    supervisor.start()
    for watcher in watchers:
        watcher.start()
    registry = open_registry(settings, announce=False)
    try:
        _wait_for_services(settings)
        observed.started, observed.started_wall = time.monotonic(), time.time()
        with Live(_table(observed, registry, settings, options), console=console) as live:
            _play(
                settings,
                options,
                observed,
                lambda: live.update(_table(observed, registry, settings, options)),
            )
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and len(observed.outcomes) < observed.produced:
                time.sleep(0.5)
                live.update(_table(observed, registry, settings, options))
    finally:
        stop.set()
        supervisor.stop()
    summary = _summary(observed, registry, settings, options)
    _print_summary(console, summary)
    report = _write_report(settings.data_dir, summary, observed)
    (settings.data_dir / "summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )
    console.print(f"\nreport: {report} (and {report.with_suffix('.png')})")
    return summary


def _play(settings: Settings, options: DemoOptions, observed: Observed, refresh: Any) -> None:
    prefix = settings.topic_prefix
    events = topic_name(Topic.EVENTS, prefix)
    requests = topic_name(Topic.PREDICTION_REQUESTS, prefix)
    labels = topic_name(Topic.LABELS, prefix)
    producer = make_producer(settings, linger_ms=5)
    total = int(options.duration_s * options.rate)
    drift_at = total // 2
    due: list[tuple[float, str, bool]] = []
    interval = 1.0 / options.rate
    next_at = time.monotonic()
    last_refresh = 0.0
    try:
        for i, (x, y) in enumerate(
            scenario_stream(options.scenario, total, drift_at, options.seed)
        ):
            now = datetime.now(UTC)
            entity = f"user-{i % ENTITIES}"
            request_id = f"req-{i}"
            if i == drift_at:
                observed.drift_at_s = observed.now()
            event = Event(event_id=f"ev-{i}", entity_id=entity, event_time=now, features=x)
            request = PredictionRequest(request_id=request_id, entity_id=entity, features=x)
            producer.send(events, key=entity.encode(), value=encode(event))
            producer.send(requests, key=entity.encode(), value=encode(request))
            with observed.lock:
                observed.truth[request_id] = (y, observed.now())
                observed.produced += 1
            heapq.heappush(due, (time.monotonic() + LABEL_DELAY_S, request_id, y))
            while due and due[0][0] <= time.monotonic():
                _, rid, label = heapq.heappop(due)
                answer = Label(request_id=rid, label=label, event_time=now)
                producer.send(labels, key=rid.encode(), value=encode(answer))
            if time.monotonic() - last_refresh > 0.5:
                refresh()
                last_refresh = time.monotonic()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        while due:  # the last labels
            _, rid, label = heapq.heappop(due)
            last = Label(request_id=rid, label=label, event_time=datetime.now(UTC))
            producer.send(labels, key=rid.encode(), value=encode(last))
        producer.flush(timeout=30)
    finally:
        producer.close()


def _watch_answers(settings: Settings, observed: Observed, stop: threading.Event) -> None:
    topic = topic_name(Topic.PREDICTIONS, settings.topic_prefix)
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    assigned = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=POLL_MS).values():
                for record in records:
                    _observe_answer(observed, record.value)
    finally:
        consumer.close()


def _wait_for_services(settings: Settings) -> None:
    """Until every service's consumer group is stable with members, so the first event
    and request meet running services; raises after :data:`READY_TIMEOUT_S`."""
    admin = make_admin(settings)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            waiting = [s for s in SERVICES_WITH_GROUPS if not _serving(admin, settings, s)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{', '.join(waiting)} not serving after {READY_TIMEOUT_S:.0f} s: "
                    f"see the logs in {settings.data_dir / 'logs'}"
                )
            time.sleep(0.5)
    finally:
        admin.close()


def _serving(admin: Any, settings: Settings, service: str) -> bool:
    """Whether ``service``'s consumer group is stable with members."""
    return group_serving(admin, group_id(settings.topic_prefix, service, settings.model_name))


def _observe_answer(observed: Observed, raw: bytes) -> None:
    answer = orjson.loads(raw)
    with observed.lock:
        truth = observed.truth.get(answer["request_id"])
        if answer.get("error"):
            code = answer["error"]["code"]
            observed.errors[code] = observed.errors.get(code, 0) + 1
        elif truth is not None:
            observed.outcomes.append(
                (truth[1], answer["prediction"] == truth[0], answer["model_version"])
            )
        if answer.get("latency_ms") is not None:
            observed.latencies_ms.append(float(answer["latency_ms"]))


def _watch_alerts(settings: Settings, observed: Observed, stop: threading.Event) -> None:
    topic = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
    consumer = make_consumer(settings, group_id=None)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning(TopicPartition(topic, 0))
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=POLL_MS).values():
                for record in records:
                    with observed.lock:
                        observed.alerts.append((observed.now(), orjson.loads(record.value)))
    finally:
        consumer.close()


def _rolling_accuracy(observed: Observed, window: int = 200) -> float | None:
    recent = observed.outcomes[-window:]
    return sum(r for _, r, _ in recent) / len(recent) if recent else None


def _table(observed: Observed, registry: Any, settings: Settings, options: DemoOptions) -> Table:
    champion = registry.alias(settings.model_name, CHAMPION)
    accuracy = _rolling_accuracy(observed)
    total = int(options.duration_s * options.rate)
    table = Table(title="Eddy demo (live)", show_header=False)
    table.add_row("events sent", f"{observed.produced:,} / {total:,}")
    table.add_row(
        "answers", f"{len(observed.outcomes):,} (+{sum(observed.errors.values())} errors)"
    )
    table.add_row("rolling accuracy", "-" if accuracy is None else f"{accuracy:.3f}")
    table.add_row("champion", champion.name if champion else "none yet (cold start)")
    table.add_row(
        "drift", "not yet" if observed.drift_at_s is None else f"at {observed.drift_at_s:.1f}s"
    )
    table.add_row(
        "alerts", ", ".join(f"{a['kind']}@{t:.1f}s" for t, a in observed.alerts[-4:]) or "-"
    )
    return table


def _summary(
    observed: Observed, registry: Any, settings: Settings, options: DemoOptions
) -> dict[str, Any]:
    drift_s = observed.drift_at_s or 0.0
    timed = [(at, right) for at, right, _ in observed.outcomes]
    concept = [(t, a) for t, a in observed.alerts if a["kind"] == "concept" and t >= drift_s]
    history = registry.history(settings.model_name)
    delay_events = int((concept[0][0] - drift_s) * options.rate) if concept else None
    versions = [
        {
            "version": f"{settings.model_name}@{d.version}",
            "at_s": round(d.at - observed.started_wall, 1),
            "by": d.actor.split(" on ")[0],
            "why": d.reason,
        }
        for d in history
        if d.alias == CHAMPION and d.version is not None
    ]
    judged = verdict(
        timed,
        [t for t, _ in observed.alerts],
        drift_s,
        options.duration_s,
        delay_events,
        drifted=drifts(options.scenario),
        change_from_s=drift_s
        - change_lead(options.scenario, int(options.duration_s * options.rate)) / options.rate,
    )
    first = versions[0]["at_s"] if versions else None
    return {
        "scenario": describe(options.scenario),
        "seed": options.seed,
        "events": observed.produced,
        "predictions": len(observed.outcomes),
        "errors": observed.errors,
        "latency_p50_ms": percentile(observed.latencies_ms, 50),
        "latency_p99_ms": percentile(observed.latencies_ms, 99),
        "drift_at_s": round(drift_s, 1),
        "alerts": [
            {
                "at_s": round(t, 1),
                "kind": a["kind"],
                "detector": a["detector"],
                "feature": a.get("feature"),
            }
            for t, a in observed.alerts
        ],
        "first_concept_alert_delay_s": round(concept[0][0] - drift_s, 1) if concept else None,
        "first_concept_alert_delay_events": delay_events,
        "champions": versions,
        "accuracy": phase_accuracy(timed, drift_s, RECOVERY_WINDOW_S),
        "verdict": judged,
        "baselines": None if first is None else _baselines(observed, registry, settings, first),
    }


def _baselines(
    observed: Observed, registry: Any, settings: Settings, first_at_s: float
) -> dict[str, Any]:
    """Eddy's served accuracy beside never retraining, the online learner alone and a
    fixed retraining schedule, on the same requests (those sent once the first champion
    served), over the whole stream and its last third (:mod:`eddy.services.demo.baselines`)."""
    truth = {rid: (label, at) for rid, (label, at) in observed.truth.items() if at >= first_at_s}
    store = SnapshotStore(make_redis(settings), settings.topic_prefix, settings.label_window_s)
    seen = store.fetch(sorted(truth))
    requests = [
        Request(truth[rid][1], snapshot.features, truth[rid][0]) for rid, snapshot in seen.items()
    ]
    first = next(
        d.version
        for d in registry.history(settings.model_name)
        if d.alias == CHAMPION and d.version is not None
    )
    loaded = registry.load(settings.model_name, first)

    def predict_first(features: dict[str, Any]) -> Any:
        return loaded.predict_one(features)

    policies = {
        "eddy": [(at, right) for at, right, _ in observed.outcomes if at >= first_at_s],
        "never_retrain": never_retrained(requests, predict_first),
        "online_alone": online_alone(
            requests, kind=settings.learner_kind, seed=42, label_delay_s=LABEL_DELAY_S
        ),
        "fixed_schedule": fixed_schedule(
            requests,
            predict_first,
            estimator=settings.retrain_estimator,
            window=settings.retrain_window,
            min_examples=2 * settings.retrain_min_holdout,
            label_delay_s=LABEL_DELAY_S,
        ),
    }
    last_third = first_at_s + 2 * (observed_end(observed) - first_at_s) / 3
    wholes = {name: accuracy(outcomes) for name, outcomes in policies.items()}
    figures = {
        name: {
            "whole": wholes[name],
            "last_third": accuracy(outcomes, last_third),
            "timeline": timeline(outcomes, first_at_s),
        }
        for name, outcomes in policies.items()
    }
    others = [w for name, w in wholes.items() if name != "eddy" and w is not None]
    eddy = wholes["eddy"]
    return figures | {
        "timeline_step_s": SCHEDULE_S,
        "requests": len(requests),
        "eddy_at_least_the_best": eddy is not None and all(eddy >= o for o in others),
    }


def observed_end(observed: Observed) -> float:
    """When the last request was sent (seconds since start)."""
    return max((at for _, at in observed.truth.values()), default=0.0)


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="Eddy demo summary", show_header=False)
    accuracy = summary["accuracy"]
    table.add_row("scenario", summary["scenario"])
    table.add_row("events / predictions", f"{summary['events']:,} / {summary['predictions']:,}")
    table.add_row("errors", str(summary["errors"] or "none"))
    p50, p99 = summary["latency_p50_ms"], summary["latency_p99_ms"]
    table.add_row("latency p50 / p99", f"{p50 or 0:.1f} ms / {p99 or 0:.1f} ms")
    table.add_row("drift at", f"{summary['drift_at_s']} s")
    delay = summary["first_concept_alert_delay_s"]
    table.add_row(
        "first concept alert after drift",
        "none"
        if delay is None
        else f"{delay} s (~{summary['first_concept_alert_delay_events']} events)",
    )
    table.add_row("alerts", str(len(summary["alerts"])))
    for champion in summary["champions"]:
        table.add_row(
            f"champion {champion['version']}",
            f"at {champion['at_s']} s by {champion['by']}: {champion['why']}",
        )
    table.add_row(
        "accuracy before / during / after",
        " / ".join(
            "-" if accuracy[k] is None else f"{accuracy[k]:.3f}"
            for k in ("before", "during", "after")
        ),
    )
    baselines = summary["baselines"]
    if baselines is not None:
        table.add_row(
            "served accuracy, whole / last third",
            "; ".join(
                f"{name.replace('_', ' ')} {baselines[name]['whole']} / "
                f"{baselines[name]['last_third']}"
                for name in ("eddy", "never_retrain", "online_alone", "fixed_schedule")
            ),
        )
    judged = summary["verdict"]
    before, last = judged["accuracy_before"], judged["accuracy_last_third"]
    delay = judged["detection_delay_events"]
    table.add_row(
        "verdict",
        f"{judged['verdict']}: last third after the drift "
        f"{'-' if last is None else f'{last:.3f}'} vs {judged['recovery_ratio']} x before "
        f"{'-' if before is None else f'{before:.3f}'}; {judged['false_alarms']} alert(s) "
        f"before the drift; detection delay {'-' if delay is None else delay} events",
    )
    console.print(table)


def _write_report(directory: Path, summary: dict[str, Any], observed: Observed) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4))
    buckets: dict[int, list[bool]] = {}
    for at, right, _ in observed.outcomes:
        buckets.setdefault(int(at), []).append(right)
    seconds = sorted(buckets)
    axis.plot(
        seconds, [sum(buckets[s]) / len(buckets[s]) for s in seconds], label="accuracy (per second)"
    )
    axis.axvline(summary["drift_at_s"], color="red", linestyle="--", label="concept drift")
    for alert in summary["alerts"]:
        axis.axvline(alert["at_s"], color="orange", alpha=0.6, linewidth=1)
    for champion in summary["champions"]:
        axis.axvline(champion["at_s"], color="green", alpha=0.8, linewidth=1.5)
    axis.set_xlabel("seconds since start (orange: alerts, green: new champion)")
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.05)
    axis.legend(loc="lower left")
    png = directory / "report.png"
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    image = base64.b64encode(png.read_bytes()).decode()
    page = (
        "<!doctype html><meta charset=utf-8><title>Eddy demo report</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "th{text-align:left;padding-right:1em;vertical-align:top}</style>"
        "<h1>Eddy demo report</h1>"
        f"<img alt='accuracy over time' src='data:image/png;base64,{image}'>"
        f"<table>{rows}</table>"
    )
    report = directory / "report.html"
    report.write_text(page)
    return report
