"""Prediction latency and throughput: ``eddy run predictor`` against a bare Kafka echo.

    .venv/bin/python scripts/bench_predictor.py [--backlog 20000] [--paced 5000]
        [--rate 250] [--runs 3]

Both systems under test get the same request stream, in the same order, on topics of
their own deployment (topic prefix):

- **echo**: a bare kafka-python consumer → producer loop (this script's ``echo``
  mode) with the predictor's consumer and producer settings: poll, send each request's
  bytes back unchanged to ``predictions``, wait for the acknowledgements, commit. The
  floor of any Kafka request/response service;
- **bare predict**: the loop the issue's throughput target names, consume → predict →
  produce (this script's ``predict`` mode), with the same champion and the same online
  features: poll, parse each request with orjson, read its entity's state from Redis
  (one round trip per batch) and build the vector with the training code, score the
  batch, send the answers, wait for the acknowledgements, commit. No validation, dead
  letters, snapshots, request log, shadow scoring, metrics or model swaps;
- **predictor**: ``eddy run predictor`` with a scikit-learn champion (the retrainer's
  default estimator) and online features in Redis for every requested entity: decode,
  join, score, snapshot, request log, answer, commit.

Per run and system:

- **throughput**: ``--backlog`` requests are produced before the process starts;
  requests/s from its first answer to its last, so start-up is not counted;
- **latency**: once caught up, ``--paced`` requests are sent at ``--rate`` per second
  (after a warm-up); each round trip is timed in this process from just before the
  request is sent to the moment its answer is read back from ``predictions``. Reports
  p50, p99 and p99.9.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson
from bench_features import (
    EDDY,
    Records,
    deployment,
    send_records,
    start_workers,
    stop_workers,
    throwaway,
)
from kafka import TopicPartition
from threadpoolctl import threadpool_limits

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHAMPION, Lineage
from eddy.services.serving.predictor import POLL_MS, PRODUCER_LINGER_MS, SEND_TIMEOUT_S
from eddy.services.training.core import make_estimator
from eddy.streams.features.compute import EntityState, apply_event, feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.learning.models import numeric
from eddy.streams.messages.contracts import FeatureValue, PredictionRequest
from eddy.streams.messages.validation import encode
from eddy.streams.store.online import OnlineStore, StoredState
from eddy.streams.transport.clients import make_consumer, make_producer, make_redis
from eddy.streams.transport.topics import Topic, topic_name

ENTITIES = 1_000
EVENTS_PER_ENTITY = 5
TRAINING_ROWS = 2_000
WARMUP = 50
PARTITIONS = 3
MODEL = "bench"
DEADLINE_S = 300
ANSWER_POLL_MS = 10
WAIT_POLL_S = 0.1
SEED = 11


@dataclass(frozen=True)
class Result:
    throughput: float  # requests/s draining the backlog
    latencies_ms: list[float]  # round trips of the paced requests

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100).

    >>> percentile([float(i) for i in range(1, 1001)], 99.9)
    999.0
    >>> percentile([3.0, 1.0, 2.0], 50)
    2.0
    """
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def topics(settings: Settings) -> tuple[str, str]:
    """The request and answer topics of a deployment (the echo uses the same names)."""
    prefix = settings.topic_prefix
    return (
        topic_name(Topic.PREDICTION_REQUESTS, prefix),
        topic_name(Topic.PREDICTIONS, prefix),
    )


def seed_features(settings: Settings, now: float) -> dict[str, EntityState]:
    """Online features for every entity the requests name, as the feature worker would
    have written them; returns the states (for training the champion)."""
    rng = random.Random(SEED)
    states: dict[str, EntityState] = {}
    for e in range(ENTITIES):
        state = EntityState()
        for n in range(EVENTS_PER_ENTITY):
            raw: dict[str, FeatureValue] = {
                "amount": round(rng.uniform(0, 100), 2),
                "country": rng.choice(["NL", "DE"]),
            }
            apply_event(state, FEATURES, f"ev-{e}-{n}", now - 600 + n * 60, raw)
        states[f"user-{e}"] = state
    redis = make_redis(settings)
    OnlineStore(
        redis, settings.topic_prefix, settings.feature_ttl_s, states=FEATURES.state_fingerprint()
    ).save({entity: StoredState(0, state) for entity, state in states.items()})
    redis.close()
    return states


def register_champion(settings: Settings, states: dict[str, EntityState], now: float) -> None:
    """The retrainer's default estimator, fitted on served-like vectors, as champion."""
    rng = random.Random(SEED)
    entities = list(states)
    xs, ys = [], []
    for _ in range(TRAINING_ROWS):
        amount = rng.uniform(0, 100)
        vector = feature_vector(states[rng.choice(entities)], FEATURES, now, raw={"amount": amount})
        xs.append(numeric(vector))
        ys.append(amount > float(vector.get("amount_mean_1h") or 50.0))
    estimator = make_estimator(settings.retrain_estimator, True, seed=SEED)
    estimator.fit(xs, ys)
    registry = open_registry(settings)
    lineage = Lineage(
        {}, FEATURES.fingerprint(), {}, {}, "bench", {"type": "operator", "id": "bench"}, "bench"
    )
    version = registry.register(MODEL, "sklearn", estimator, {}, lineage)
    registry.promote(MODEL, version.version, "bench", "benchmark champion")


def request_records(tag: str, count: int) -> Records:
    """``count`` requests (key, JSON) over the seeded entities, ids ``<tag>-<n>``."""
    rng = random.Random(f"{SEED}-{tag}")
    records: Records = []
    for n in range(count):
        entity = f"user-{rng.randrange(ENTITIES)}"
        request = PredictionRequest(
            request_id=f"{tag}-{n}",
            entity_id=entity,
            features={"amount": round(rng.uniform(0, 100), 2)},
        )
        records.append((entity.encode(), encode(request)))
    return records


class Answers(threading.Thread):
    """Reads an answers topic from its end; notes when each request id's answer arrived."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(name="answers", daemon=True)
        self.arrived: dict[str, float] = {}
        self._stopping = threading.Event()
        self._consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=ANSWER_POLL_MS)
        assigned = [TopicPartition(topic, p) for p in range(settings.partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_end(*assigned)
        for tp in assigned:
            self._consumer.position(tp)  # resolve "end" before any request is sent

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                for records in self._consumer.poll(timeout_ms=ANSWER_POLL_MS).values():
                    now = time.perf_counter()
                    for record in records:
                        self.arrived[orjson.loads(record.value)["request_id"]] = now
        finally:
            self._consumer.close()

    def wait_for(self, ids: list[str], what: str) -> list[float]:
        """Arrival times of ``ids``' answers, once all have arrived (the times are taken
        by the reading thread, so how often this looks does not change them)."""
        deadline = time.monotonic() + DEADLINE_S
        missing = list(ids)
        while missing:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {len(missing)} of {len(ids)} answers missing")
            time.sleep(WAIT_POLL_S)
            missing = [i for i in missing if i not in self.arrived]
        return [self.arrived[i] for i in ids]

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)


def send_paced(settings: Settings, topic: str, records: Records, rate: float) -> dict[str, float]:
    """Send at ``rate`` per second on a fixed schedule (a late send does not shift the
    next ones); returns each request id's send time."""
    producer = make_producer(settings, linger_ms=0)
    sent: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for n, (key, value) in enumerate(records):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[orjson.loads(value)["request_id"]] = time.perf_counter()
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()
    return sent


def drain_rate(arrivals: list[float]) -> float:
    """Answers/s from the first answer to the last; the first fetch's answers, which
    arrived together, only start the clock.

    >>> drain_rate([1.0, 1.0, 2.0, 3.0])
    1.0
    """
    first, last = min(arrivals), max(arrivals)
    after_first = sum(1 for t in arrivals if t > first)
    return after_first / (last - first) if last > first else float("nan")


def measure_system(
    settings: Settings, command: list[str], backlog: Records, paced: Records, rate: float
) -> Result:
    """Throughput on ``backlog`` (produced before start), then latency of ``paced``."""
    requests, answers_topic = topics(settings)
    send_records(settings, requests, backlog)
    answers = Answers(settings, answers_topic)
    answers.start()
    try:
        workers = start_workers(settings, command, settings.data_dir)
        try:
            return _serve(settings, answers, command[-1], backlog, paced, rate)
        finally:
            stop_workers(workers)
    finally:
        answers.stop()


def _serve(
    settings: Settings, answers: Answers, name: str, backlog: Records, paced: Records, rate: float
) -> Result:
    requests, _ = topics(settings)
    ids = [orjson.loads(value)["request_id"] for _, value in backlog]
    throughput = drain_rate(answers.wait_for(ids, f"{name} backlog"))
    warmup = request_records(f"warm-{name}", WARMUP)
    send_paced(settings, requests, warmup, rate)
    answers.wait_for([orjson.loads(value)["request_id"] for _, value in warmup], "warm-up")
    sent = send_paced(settings, requests, paced, rate)
    arrived = answers.wait_for(list(sent), f"{name} paced")
    return Result(throughput, [(a - s) * 1000 for a, s in zip(arrived, sent.values(), strict=True)])


def measure(base: Settings, backlog: int, paced: int, rate: float) -> dict[str, Result]:
    """One run: the echo, then the predictor, each on its own deployment, same requests."""
    backlog_records = request_records("backlog", backlog)
    paced_records = request_records("paced", paced)
    results: dict[str, Result] = {}
    with throwaway(deployment(base, "echo", PARTITIONS)) as settings:
        echo = [sys.executable, __file__, "echo"]
        results["echo"] = measure_system(settings, echo, backlog_records, paced_records, rate)
    systems = {"bare_predict": [sys.executable, __file__, "predict"], "predictor": PREDICTOR}
    for name, command in systems.items():
        serving = deployment(base, name.replace("_", "-"), PARTITIONS)
        with throwaway(serving.model_copy(update={"model_name": MODEL})) as settings:
            now = time.time()
            register_champion(settings, seed_features(settings, now), now)
            results[name] = measure_system(settings, command, backlog_records, paced_records, rate)
    return results


def serve(settings: Settings, name: str, answer: Callable[[list[Any]], list[bytes]]) -> None:
    """The predictor's consume → answer → send → acknowledge → commit skeleton, with its
    client settings, until SIGTERM; ``answer`` turns a polled batch into answer values."""
    requests, answers = topics(settings)
    consumer = make_consumer(
        settings,
        requests,
        group_id=f"{settings.topic_prefix}{name}",
        max_poll_records=settings.predictor_batch_size,
        fetch_max_wait_ms=settings.predictor_fetch_wait_ms,
    )
    producer = make_producer(settings, linger_ms=PRODUCER_LINGER_MS)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.is_set():
            records = [r for rs in consumer.poll(timeout_ms=POLL_MS).values() for r in rs]
            if records:
                futures = [
                    producer.send(answers, key=r.key, value=value)
                    for r, value in zip(records, answer(records), strict=True)
                ]
                producer.flush(timeout=SEND_TIMEOUT_S)
                for future in futures:
                    future.get(timeout=SEND_TIMEOUT_S)
                consumer.commit()
    finally:
        consumer.close(autocommit=False)
        producer.close()


def run_echo() -> None:
    """The bare baseline: the serving skeleton with no work at all in between."""
    serve(Settings.from_env(), "echo", lambda records: [r.value for r in records])


def run_bare_predict() -> None:
    """The bare consume → predict → produce loop: the champion and the online features,
    nothing else of the predictor's work (see the module's docstring). Scoring runs on
    one native thread, as in ``eddy run predictor``: on a shared machine the default
    thread pools turn a 1 ms scoring call into a contended one of up to a second, and the
    comparison would measure that instead of the predictor's own work."""
    threadpool_limits(limits=1)
    settings = Settings.from_env()
    registry = open_registry(settings)
    serving = registry.alias(MODEL, CHAMPION)
    if serving is None:
        raise SystemExit(f"no champion of {MODEL!r} to serve")
    champion = registry.load(MODEL, serving.version)
    store = OnlineStore(
        make_redis(settings),
        settings.topic_prefix,
        settings.feature_ttl_s,
        states=FEATURES.state_fingerprint(),
    )

    def predict(records: list[Any]) -> list[bytes]:
        asked = [orjson.loads(r.value) for r in records]
        states = store.load(a["entity_id"] for a in asked)
        now = time.time()
        vectors = [
            numeric(feature_vector(states[a["entity_id"]].state, FEATURES, now, a["features"]))
            for a in asked
        ]
        probas = champion.predict_proba(vectors)[:, 1]
        return [
            orjson.dumps({"request_id": a["request_id"], "proba": float(p)})
            for a, p in zip(asked, probas, strict=True)
        ]

    serve(settings, "bare-predict", predict)


PREDICTOR = [EDDY, "run", "predictor"]
LABELS = {
    "echo": "bare kafka-python echo",
    "bare_predict": "bare consume → predict → produce",
    "predictor": "eddy run predictor",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--paced", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Settings.from_env().model_copy(update={"metrics_port": 0})
    results: dict[str, list[Result]] = {name: [] for name in LABELS}
    for run in range(args.runs):
        for name, result in measure(base, args.backlog, args.paced, args.rate).items():
            results[name].append(result)
            print(f"run {run + 1} {name}: {summary(result)}")
    print(
        f"\n{args.backlog:,} backlog requests; {args.paced:,} paced at {args.rate:g}/s; "
        f"{PARTITIONS} partitions; medians over {args.runs} runs"
    )
    for name, label in LABELS.items():
        print(f"{label:24} " + summary_of(results[name]))


def summary(result: Result) -> str:
    return (
        f"{result.throughput:,.0f} req/s, p50 {result.percentile(50):.1f} ms, "
        f"p99 {result.percentile(99):.1f} ms, p99.9 {result.percentile(99.9):.1f} ms"
    )


def summary_of(results: list[Result]) -> str:
    def cell(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    return f"throughput {cell([r.throughput for r in results], ',.0f')} req/s  " + "  ".join(
        f"p{q:g} {cell([r.percentile(q) for r in results], '.1f')} ms" for q in (50, 99, 99.9)
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["echo"]:
        run_echo()
    elif sys.argv[1:] == ["predict"]:
        run_bare_predict()
    else:
        main()
