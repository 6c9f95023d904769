"""Drift alert → new champion announced on ``model-updates``: seconds, per window size.

    .venv/bin/python scripts/bench_retrain.py [--windows 10000 100000] [--runs 3]

For each window size, fresh topics get that many labelled examples (a linear concept
on 8 numeric features); a running ``eddy run retrainer`` (debounce 0), once it has
joined its consumer group, receives one drift alert and the clock stops when the new
champion's announcement is read back from ``model-updates``. Printed next to it, the
bare cost of the same scikit-learn fit on the same rows in this process: what the
retrainer adds is reading the window from Kafka, evaluating the champion, registering
(signing, SQLite) and announcing.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_features import deployment, throwaway, wait_for_group
from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.training.core import make_estimator
from eddy.streams.learning.models import numeric
from eddy.streams.messages.contracts import DriftAlert, DriftKind, SourceOffset, TrainingExample
from eddy.streams.messages.validation import decode, encode
from eddy.streams.transport.clients import make_consumer, make_producer
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import Topic, topic_name

FEATURES = 8
DEADLINE_S = 900
MODEL = "bench"
BASE = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def rows(count: int, seed: int = 5) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        x = {f"f{i}": rng.gauss(0, 1) for i in range(FEATURES)}
        out.append((x, sum(x.values()) + rng.gauss(0, 0.5) > 0))
    return out


def publish(settings: Settings, data: list[tuple[dict[str, float], bool]]) -> None:
    topic = topic_name(Topic.TRAINING_EXAMPLES, settings.topic_prefix)
    producer = make_producer(settings, linger_ms=20, batch_size=512 * 1024)
    for i, (x, y) in enumerate(data):
        example = TrainingExample(
            example_id=f"ex-{i}",
            entity_id=f"u{i % 97}",
            event_time=datetime.fromtimestamp(BASE + i, UTC),
            label=y,
            features=x,
            feature_set="bench",
            source=SourceOffset(topic="events", partition=i % 3, offset=i),
        )
        producer.send(topic, key=example.entity_id.encode(), value=encode(example))
    producer.flush(timeout=300)
    producer.close()


def alert_to_champion(settings: Settings, workdir: Path) -> float:
    # The retrainer dead-letters alerts about models it does not serve: it serves MODEL.
    env = settings.child_env(
        data_dir=workdir, model_name=MODEL, retrain_debounce_s=0, log_level="WARNING"
    )
    updates = topic_name(Topic.MODEL_UPDATES, settings.topic_prefix)
    watcher = make_consumer(settings, group_id=None)
    watcher.assign([TopicPartition(updates, 0)])
    watcher.seek_to_end(TopicPartition(updates, 0))
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "retrainer.log").open("wb") as log:
        retrainer = subprocess.Popen(
            [str(Path(sys.executable).with_name("eddy")), "run", "retrainer"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        # The clock starts once the retrainer has joined its group: start-up not counted.
        topic = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
        wait_for_group(settings, group_id(settings.topic_prefix, "retrainer", MODEL), 1, topic, 1)
        alert = DriftAlert(
            alert_id=f"{MODEL}:concept:1",
            model=MODEL,
            kind=DriftKind.CONCEPT,
            detector="adwin",
            statistic=0.5,
            threshold=0.0,
            action="retrain",
        )
        producer = make_producer(settings)
        started = time.perf_counter()
        producer.send(topic, key=MODEL.encode(), value=encode(alert)).get(timeout=30)
        producer.close()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for records in watcher.poll(timeout_ms=100).values():
                for record in records:
                    if decode_alias(record.value) == "champion":
                        return time.perf_counter() - started
        raise RuntimeError(f"no champion announced; see {workdir}/retrainer.log")
    finally:
        watcher.close()
        retrainer.send_signal(signal.SIGTERM)
        retrainer.wait(timeout=60)


def decode_alias(raw: bytes) -> str | None:
    from eddy.streams.messages.contracts import ModelUpdate

    return decode(ModelUpdate, raw).alias


def bare_fit(data: list[tuple[dict[str, float], bool]], holdout: float) -> float:
    train = data[: int(len(data) * (1 - holdout))]
    estimator = make_estimator("hist_gradient_boosting", True, seed=42)
    started = time.perf_counter()
    estimator.fit([numeric(x) for x, _ in train], [y for _, y in train])
    return time.perf_counter() - started


def measure_window(base: Settings, window: int, runs: int) -> tuple[list[float], list[float]]:
    """Seconds from alert to announced champion, and of the bare fit, per run."""
    data = rows(window)
    seconds = []
    with throwaway(deployment(base, "rt").model_copy(update={"retrain_window": window})) as s:
        publish(s, data)
        for run in range(runs):
            seconds.append(alert_to_champion(s, s.data_dir / f"retrainer-{run}"))
            print(f"window {window:,} run {run + 1}: {seconds[-1]:.2f} s")
    return seconds, [bare_fit(data, base.retrain_holdout) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Settings.from_env().model_copy(update={"metrics_port": 0})
    for window in args.windows:
        seconds, fits = measure_window(base, window, args.runs)
        print(
            f"window {window:,}: alert -> champion announced "
            f"median {statistics.median(seconds):.2f} s "
            f"(min {min(seconds):.2f}, max {max(seconds):.2f}); "
            f"bare fit alone {statistics.median(fits):.2f} s"
        )


if __name__ == "__main__":
    main()
