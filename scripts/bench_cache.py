"""Static serving: what the prediction cache saves in latency and costs in Redis memory.

    .venv/bin/python scripts/bench_cache.py [--requests 1500] [--rate 50] [--runs 3]
                                            [--flavor sklearn|river] [--entities 1000]
                                            [--batch 20]

One seeded request stream (bare requests, entities drawn from a Zipf law, so a few are
asked about often) is sent at a fixed rate (open loop) to an ``eddy run predictor``
process with ``EDDY_PREDICTION_CACHE=off`` and then ``hot`` (the order alternates per
run; the cache is emptied between runs). The champion is the retrainer's default
(``DictVectorizer | HistGradientBoosting``, flavor ``sklearn``) or the learner's River
logistic regression (``river``), trained on the entities' online features.

Per mode it prints the medians over runs of p50 and p99 of

- **server**: the answer's ``latency_ms`` (request's Kafka timestamp → answer built);
- **end to end**: request sent → answer received by the client,

the share of answers served from the cache, and the ratios hot/off.

**Paired, in-process**: the same stream cut into batches (of 1, a lone request, and of
``--batch``), each batch handed to an ``off`` and a ``hot`` :class:`Predictor` in the same
process one right after the other (order alternating), timing ``Predictor.handle``
(the whole service time of a batch: Redis reads, scoring, snapshots, request log,
answers sent and acknowledged). Pairing makes the ratio robust to a machine whose load
drifts (other processes), which the end-to-end runs are not. Memory: keys and
``MEMORY USAGE`` bytes of the answers and hot counters at the end of each hot run, and
the change in ``INFO memory`` ``used_memory`` over the run (noisy when other clients use
the same Redis). Also, in-process: one batch's champion scoring against one cache
look-up round trip, the two costs a hit trades. Uses the local stack (``eddy up``) or
whatever EDDY_KAFKA_BOOTSTRAP / EDDY_REDIS_URL name, on a throw-away topic prefix and
data folder (removed afterwards, with its Redis keys and topics).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kafka import TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_features import deployment, throwaway

from eddy.services.config.settings import Settings
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import RIVER, SKLEARN, Lineage
from eddy.services.serving.cache import AnswerCache, Ask, Usage
from eddy.services.serving.predictor import Predictor
from eddy.services.serving.scoring import Loaded, score_batch
from eddy.services.training.core import make_estimator
from eddy.streams.features.compute import EntityState, FeatureValue, apply_event, feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.learning.models import make_model, numeric
from eddy.streams.store.online import OnlineStore, StoredState
from eddy.streams.transport.clients import make_consumer, make_producer, make_redis
from eddy.streams.transport.topics import Topic, topic_name

MODEL = "bench"
ZIPF_S = 1.1
EVENTS_PER_ENTITY = (1, 20)
HISTORY_S = 3000  # entities' events fall in the last 50 minutes
SAVE_CHUNK = 500
PAIRED_BATCH = 20
STARTUP_TIMEOUT_S = 60.0
STARTUP_ATTEMPTS = 3
DRAIN_TIMEOUT_S = 60.0
MICRO_BATCH = 50
MICRO_REPEATS = 200
LINEAGE = Lineage({}, FEATURES.fingerprint(), {}, {}, "bench", {"type": "operator"}, "bench")


@dataclass
class RunResult:
    server: list[float]
    end_to_end: list[float]
    cached: int
    usage: Usage | None
    used_memory_delta: int


def populate(settings: Settings, entities: int, seed: int) -> list[dict[str, Any]]:
    """Online state for every entity; returns their feature vectors (for training)."""
    rng = random.Random(seed)
    store = OnlineStore(
        make_redis(settings),
        settings.topic_prefix,
        settings.feature_ttl_s,
        states=FEATURES.state_fingerprint(),
    )
    now = time.time()
    states: dict[str, StoredState] = {}
    for i in range(entities):
        state = EntityState()
        for j in range(rng.randint(*EVENTS_PER_ENTITY)):
            features: dict[str, FeatureValue] = {
                "amount": round(rng.uniform(0, 100), 2),
                "country": rng.choice("ABCDE"),
            }
            apply_event(state, FEATURES, f"e{i}-{j}", now - rng.uniform(0, HISTORY_S), features)
        states[f"user-{i}"] = StoredState(0, state)
    ids = list(states)
    for start in range(0, len(ids), SAVE_CHUNK):
        lost = store.save({e: states[e] for e in ids[start : start + SAVE_CHUNK]})
        if lost:
            raise SystemExit(f"entities already stored under this prefix: {lost[:3]}")
    return [feature_vector(states[e].state, FEATURES, now) for e in ids]


def champion(flavor: str, vectors: list[dict[str, Any]], seed: int) -> Any:
    """A model of the requested flavor, labels from a noisy rule on the features."""
    rng = random.Random(seed)
    labels = [(float(v.get("amount_mean_1h") or 0) + rng.gauss(0, 10)) > 50 for v in vectors]
    if flavor == SKLEARN:
        return make_estimator("hist_gradient_boosting", True, seed).fit(
            [numeric(v) for v in vectors], labels
        )
    model = make_model("logistic", seed)
    for vector, label in zip(vectors, labels, strict=True):
        model.learn_one(numeric(vector), label)
    return model


def request_stream(count: int, entities: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** ZIPF_S for rank in range(entities)]
    return rng.choices([f"user-{i}" for i in range(entities)], weights=weights, k=count)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def clear_cache(settings: Settings) -> None:
    client = make_redis(settings)
    for pattern in (f"{settings.topic_prefix}answer:*", f"{settings.topic_prefix}answer-hot:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.unlink(*keys)


def run_once(
    settings: Settings, mode: str, entities: list[str], rate: float, tag: str
) -> RunResult:
    """One predictor process in ``mode``; the stream at ``rate``; latencies collected."""
    env = settings.child_env(prediction_cache=mode)
    log = settings.data_dir / f"predictor-{tag}.log"
    prefix, partitions = settings.topic_prefix, settings.partitions
    requests_topic = topic_name(Topic.PREDICTION_REQUESTS, prefix)
    answers_topic = topic_name(Topic.PREDICTIONS, prefix)
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=5)
    assigned = [TopicPartition(answers_topic, p) for p in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_end(*assigned)
    for tp in assigned:
        consumer.position(tp)
    producer = make_producer(settings, linger_ms=1)
    client = make_redis(settings)
    process = None
    for attempt in range(STARTUP_ATTEMPTS):
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("eddy")), "run", "predictor"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        warm = f"warm-{tag}-{attempt}"
        body = {"request_id": warm, "entity_id": entities[0], "features": {}}
        producer.send(requests_topic, key=entities[0].encode(), value=orjson.dumps(body))
        producer.flush()
        if not wait_for(consumer, {warm}, STARTUP_TIMEOUT_S, {}):
            break
        # Seen on a busy machine: the group joined without the topic's partitions.
        print(f"the predictor did not answer within {STARTUP_TIMEOUT_S:.0f} s; restarting")
        process.terminate()
        process.wait(timeout=60)
    else:
        raise SystemExit(f"the predictor never answered; its log:\n{log.read_text()[-3000:]}")
    try:
        memory_before = int(client.info("memory")["used_memory"])
        sent_at: dict[str, float] = {}
        received: dict[str, tuple[float, dict[str, Any]]] = {}

        def send() -> None:
            start = time.perf_counter()
            for i, entity_id in enumerate(entities):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                request_id = f"{tag}-{i}"
                value = orjson.dumps({"request_id": request_id, "entity_id": entity_id})
                sent_at[request_id] = time.time()
                producer.send(requests_topic, key=entity_id.encode(), value=value)
            producer.flush()

        sender = threading.Thread(target=send)
        sender.start()
        missing = wait_for(
            consumer,
            {f"{tag}-{i}" for i in range(len(entities))},
            DRAIN_TIMEOUT_S + len(entities) / rate,
            received,
        )
        if missing:
            raise SystemExit(f"{len(missing)} answers missing; log:\n{log.read_text()[-3000:]}")
        sender.join()
        memory_after = int(client.info("memory")["used_memory"])
        usage = (
            AnswerCache.from_settings(
                client, settings.model_copy(update={"prediction_cache": mode}), MODEL, FEATURES
            ).usage()
            if mode != "off"
            else None
        )
    finally:
        process.terminate()
        process.wait(timeout=60)
        consumer.close()
        producer.close()
    answers = list(received.items())
    return RunResult(
        server=[a["latency_ms"] for _, (_, a) in answers],
        end_to_end=[(at - sent_at[rid]) * 1000 for rid, (at, _) in answers],
        cached=sum(1 for _, (_, a) in answers if a.get("cached")),
        usage=usage,
        used_memory_delta=memory_after - memory_before,
    )


def wait_for(
    consumer: Any,
    ids: set[str],
    timeout_s: float,
    into: dict[str, tuple[float, dict[str, Any]]],
) -> set[str]:
    """Collect the answers to ``ids`` into ``into``; returns those still missing."""
    deadline = time.monotonic() + timeout_s
    missing = set(ids)
    while missing and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=50).values():
            at = time.time()
            for record in records:
                answer = orjson.loads(record.value)
                if answer.get("error"):
                    raise SystemExit(f"error answer: {answer}")
                if answer["request_id"] in missing:
                    missing.discard(answer["request_id"])
                    into[answer["request_id"]] = (at, answer)
    return missing


def micro(
    settings: Settings, flavor: str, model: Any, vectors: list[dict[str, Any]]
) -> tuple[float, float]:
    """Median ms of one batch's champion scoring and of one cache look-up round trip."""
    loaded = Loaded(MODEL, 1, flavor, model)
    batch = vectors[:MICRO_BATCH]
    cache = AnswerCache.from_settings(
        make_redis(settings),
        settings.model_copy(update={"prediction_cache": "hot"}),
        MODEL,
        FEATURES,
    )
    asks = [Ask(f"user-{i}", 1, cache.timing.digest(v, time.time())) for i, v in enumerate(batch)]
    scoring, lookup = [], []
    for _ in range(MICRO_REPEATS):
        start = time.perf_counter()
        score_batch(loaded, batch)
        scoring.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        cache.lookup(loaded, asks)
        lookup.append((time.perf_counter() - start) * 1000)
    return statistics.median(scoring), statistics.median(lookup)


@dataclass(frozen=True)
class Polled:
    """A request record as kafka-python hands it to the predictor."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float
    headers: tuple[tuple[str, bytes], ...] = ()


def paired(
    settings: Settings, stream: list[str], batch: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Milliseconds of ``Predictor.handle`` per batch, off and hot on the same batches."""
    registry = open_registry(settings, announce=False)
    predictors = {
        mode: Predictor(
            settings.model_copy(update={"prediction_cache": mode}),
            registry,
            MODEL,
            features=FEATURES,
            schema=None,
        )
        for mode in ("off", "hot")
    }
    times: dict[str, list[float]] = {mode: [] for mode in predictors}
    cached = dict.fromkeys(predictors, 0)
    try:
        for n, start in enumerate(range(0, len(stream), batch)):
            for mode in ("off", "hot") if n % 2 == 0 else ("hot", "off"):
                predictor = predictors[mode]
                records = [
                    Polled(
                        predictor.requests_topic,
                        0,
                        start + i,
                        entity_id.encode(),
                        orjson.dumps(
                            {"request_id": f"p{mode}{batch}-{start + i}", "entity_id": entity_id}
                        ),
                        time.time() * 1000,
                    )
                    for i, entity_id in enumerate(stream[start : start + batch])
                ]
                began = time.perf_counter()
                outcome = predictor.handle(records)
                times[mode].append((time.perf_counter() - began) * 1000)
                cached[mode] += outcome.cached
    finally:
        for predictor in predictors.values():
            predictor.consumer.close(autocommit=False)
            predictor.producer.close()
    return times, cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--flavor", choices=(SKLEARN, RIVER), default=SKLEARN)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=PAIRED_BATCH, help="paired batch size")
    args = parser.parse_args()

    throwaway_deployment = deployment(Settings.from_env(), "cache").model_copy(
        update={"model_name": MODEL, "metrics_port": 0}
    )
    with throwaway(throwaway_deployment) as settings:
        measure(settings, args)


def measure(settings: Settings, args: argparse.Namespace) -> None:
    vectors = populate(settings, args.entities, args.seed)
    model = champion(args.flavor, vectors, args.seed)
    registry = open_registry(settings, announce=False)
    registry.register(MODEL, args.flavor, model, {}, LINEAGE)
    registry.promote(MODEL, 1, "bench", "bench champion")
    stream = request_stream(args.requests, args.entities, args.seed)
    hot_entities = sum(
        1 for n in Counter(stream).values() if n >= settings.prediction_cache_hot_requests
    )

    results: dict[str, list[RunResult]] = {"off": [], "hot": []}
    for run in range(args.runs):
        for mode in ("off", "hot") if run % 2 == 0 else ("hot", "off"):
            clear_cache(settings)
            result = run_once(settings, mode, stream, args.rate, f"{mode}{run}")
            results[mode].append(result)
            print(
                f"run {run} {mode:>3}: server p50 {percentile(result.server, 0.5):7.2f} ms "
                f"p99 {percentile(result.server, 0.99):7.2f} ms | end-to-end p50 "
                f"{percentile(result.end_to_end, 0.5):7.2f} ms p99 "
                f"{percentile(result.end_to_end, 0.99):7.2f} ms | cached "
                f"{result.cached / len(result.server):6.1%}",
                flush=True,
            )
    scoring_ms, lookup_ms = micro(settings, args.flavor, model, vectors)
    clear_cache(settings)
    pairs = {}
    for size in (1, args.batch):
        pairs[size] = paired(settings, stream, size)
        clear_cache(settings)

    print()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}"
    )
    print(
        f"stream: {args.requests} bare requests at {args.rate:.0f}/s over {args.entities} entities "
        f"(Zipf s={ZIPF_S}; {hot_entities} entities asked at least "
        f"{settings.prediction_cache_hot_requests} times), "
        f"champion {args.flavor}, {args.runs} runs per mode, medians over runs"
    )
    summary: dict[str, dict[str, float]] = {}
    for mode, runs in results.items():
        summary[mode] = {
            "server p50": statistics.median(percentile(r.server, 0.5) for r in runs),
            "server p99": statistics.median(percentile(r.server, 0.99) for r in runs),
            "end-to-end p50": statistics.median(percentile(r.end_to_end, 0.5) for r in runs),
            "end-to-end p99": statistics.median(percentile(r.end_to_end, 0.99) for r in runs),
            "cached": statistics.median(r.cached / len(r.server) for r in runs),
        }
    print(f"{'':16}{'off':>10}{'hot':>10}{'hot/off':>10}")
    for name in ("server p50", "server p99", "end-to-end p50", "end-to-end p99"):
        off, hot = summary["off"][name], summary["hot"][name]
        print(f"{name:16}{off:8.2f}ms{hot:8.2f}ms{hot / off:10.2f}")
    print(f"{'served cached':16}{summary['off']['cached']:10.1%}{summary['hot']['cached']:10.1%}")
    print(
        f"per batch of {MICRO_BATCH} (in-process, median of {MICRO_REPEATS}): champion scoring "
        f"{scoring_ms:.3f} ms, cache look-up round trip {lookup_ms:.3f} ms"
    )
    for size, (times, cached) in pairs.items():
        off_ms, hot_ms = times["off"], times["hot"]
        p50 = percentile(off_ms, 0.5), percentile(hot_ms, 0.5)
        p99 = percentile(off_ms, 0.99), percentile(hot_ms, 0.99)
        per_batch = statistics.median(h / o for h, o in zip(hot_ms, off_ms, strict=True))
        print(
            f"paired, batches of {size:>3}: handle p50 off {p50[0]:7.2f} ms, hot {p50[1]:7.2f} ms "
            f"({p50[1] / p50[0]:.2f}); p99 off {p99[0]:7.2f} ms, hot {p99[1]:7.2f} ms "
            f"({p99[1] / p99[0]:.2f}); median of per-batch hot/off {per_batch:.2f}; "
            f"hot served {cached['hot'] / len(stream):.1%} from the cache"
        )
    for i, r in enumerate(results["hot"]):
        u = r.usage
        if u is not None:
            print(
                f"cache keys at the end of hot run {i}: {u.answers} answers {u.answer_bytes} B "
                f"({u.answer_bytes / max(u.answers, 1):.0f} B each), {u.counters} hot counters "
                f"{u.counter_bytes} B ({u.counter_bytes / max(u.counters, 1):.0f} B each)"
            )
    growth = {m: statistics.median(r.used_memory_delta for r in rs) for m, rs in results.items()}
    print(
        f"used_memory growth over a run (request log and snapshots in both modes), median: "
        f"off {growth['off'] / 1024:.0f} KiB, hot {growth['hot'] / 1024:.0f} KiB, "
        f"difference {(growth['hot'] - growth['off']) / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
