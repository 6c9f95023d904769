"""Feature-ingestion throughput: Eddy's feature worker against a bare loop, same run.

    .venv/bin/python scripts/bench_features.py [--events 100000] [--runs 3]

For each run, the same pre-produced events (on a fresh topic prefix) are consumed by:

- **bare**: an aiokafka consumer reading all partitions and writing one Redis hash per
  event in one pipeline per fetched batch: the floor any Kafka→Redis worker pays;
- **faust no-op**: a faust agent that takes the same batches and does nothing with
  them: the ceiling faust-streaming's per-event machinery sets on this machine;
- **eddy**: an `eddy run features` process (faust agent, validation, features, training
  examples, compare-and-set writes, commits after durability).

Worker rates are measured on the group's committed offsets from its first commit to
its last, so start-up is not counted.

Prints medians, spreads and the ratio, and where each figure came from. Uses the local
stack (`eddy up`) or whatever EDDY_KAFKA_BOOTSTRAP / EDDY_REDIS_URL name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.settings import Settings
from streams.admin import ensure_topics
from streams.clients import make_admin, make_producer, make_redis
from streams.feature_worker import app_id
from streams.topics import Topic, spec_for

ENTITIES = 2_000
PARTITIONS = 3
LABEL_EVERY = 10
DEADLINE_S = 600


def produce_events(settings: Settings, topic: str, count: int) -> None:
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    now = time.time() - 60
    for i in range(count):
        entity = f"user-{i % ENTITIES}"
        event = {
            "event_id": f"ev-{i}",
            "entity_id": entity,
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + i / count)),
            "features": {"amount": (i * 7919) % 1000 / 10, "country": "NL" if i % 3 else "DE"},
        }
        if i % LABEL_EVERY == 0:
            event["label"] = i % 2
        producer.send(topic, key=entity.encode(), value=orjson.dumps(event))
    producer.flush(timeout=120)
    producer.close()


async def bare_loop(settings: Settings, topic: str, count: int, partitions: int) -> float:
    """Events/s of aiokafka consume + one pipelined Redis write per event, per batch."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    redis = make_redis(settings)
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(
                timeout_ms=1000, max_records=settings.feature_batch_size
            )
            pipe = redis.pipeline(transaction=False)
            for records in batches.values():
                for record in records:
                    value = orjson.loads(record.value)
                    pipe.hset(f"bench:{{{value['entity_id']}}}", "last", record.value)
                    seen += 1
            await asyncio.to_thread(pipe.execute)
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        redis.close()


def worker_rate(
    settings: Settings, topic: str, count: int, workdir: Path, command: list[str], group: str
) -> float:
    """Events/s of one worker process, from its group's first commit to its last."""
    env = settings.child_env(data_dir=workdir, log_level="WARNING")
    with (workdir / f"{command[-1]}.log").open("wb") as log:
        worker = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    admin = make_admin(settings)
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            committed = sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)
            now = time.perf_counter()
            if committed and first is None:
                first = (now, committed)
            if committed >= count and first is not None:
                return (committed - first[1]) / (now - first[0])
            time.sleep(0.05)
        raise RuntimeError(f"worker did not finish in {DEADLINE_S}s; see {workdir}/worker.log")
    finally:
        admin.close()
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Settings.from_env()
    bare_rates: list[float] = []
    noop_rates: list[float] = []
    eddy_rates: list[float] = []
    for run in range(args.runs):
        settings = base.model_copy(
            update={"topic_prefix": f"bench-{uuid.uuid4().hex[:8]}.", "partitions": PARTITIONS}
        )
        ensure_topics(settings)
        topic = spec_for(Topic.EVENTS, prefix=settings.topic_prefix, partitions=PARTITIONS).name
        produce_events(settings, topic, args.events)
        bare_rates.append(asyncio.run(bare_loop(settings, topic, args.events, PARTITIONS)))
        workdir = ROOT / ".eddy" / "bench" / settings.topic_prefix.rstrip(".")
        workdir.mkdir(parents=True, exist_ok=True)
        noop = [sys.executable, __file__, "noop-worker"]
        noop_rates.append(
            worker_rate(settings, topic, args.events, workdir, noop, noop_app_id(settings))
        )
        eddy = [str(Path(sys.executable).with_name("eddy")), "run", "features"]
        eddy_rates.append(
            worker_rate(settings, topic, args.events, workdir, eddy, app_id(settings))
        )
        print(
            f"run {run + 1}: bare {bare_rates[-1]:,.0f}/s  faust no-op {noop_rates[-1]:,.0f}/s"
            f"  eddy {eddy_rates[-1]:,.0f}/s"
        )
        _cleanup(settings)
    bare, eddy = statistics.median(bare_rates), statistics.median(eddy_rates)
    noop = statistics.median(noop_rates)
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
        f"events per run: {args.events:,} over {ENTITIES:,} entities, 3 partitions, "
        f"1 label in {LABEL_EVERY}\n"
        f"bare aiokafka+Redis pipeline: median {bare:,.0f}/s "
        f"(min {min(bare_rates):,.0f}, max {max(bare_rates):,.0f})\n"
        f"faust no-op agent (1 worker): median {noop:,.0f}/s "
        f"(min {min(noop_rates):,.0f}, max {max(noop_rates):,.0f})\n"
        f"eddy run features (1 worker): median {eddy:,.0f}/s "
        f"(min {min(eddy_rates):,.0f}, max {max(eddy_rates):,.0f})\n"
        f"ratios: eddy/bare {eddy / bare:.2f}, faust no-op/bare {noop / bare:.2f}, "
        f"eddy/faust no-op {eddy / noop:.2f}"
    )


def _cleanup(settings: Settings) -> None:
    redis = make_redis(settings)
    for pattern in ("bench:*", f"{settings.topic_prefix}*"):
        for key in redis.scan_iter(match=pattern, count=1000):
            redis.delete(key)
    redis.close()


def noop_app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}noop"


def run_noop_worker() -> None:
    """A faust agent that takes batches like the feature worker and does nothing."""
    from streams.faust_app import make_app, run_worker

    settings = Settings.from_env()
    app = make_app(settings, noop_app_id(settings))
    topic = spec_for(Topic.EVENTS, prefix=settings.topic_prefix, partitions=PARTITIONS).name
    events = app.topic(topic, key_serializer="raw", value_serializer="raw")
    wait_s = settings.feature_batch_wait_ms / 1000

    @app.agent(events, concurrency=1)
    async def drain(stream: Any) -> None:
        async for _batch in stream.take_events(settings.feature_batch_size, within=wait_s):
            pass

    run_worker(app, settings)


if __name__ == "__main__":
    if sys.argv[1:] == ["noop-worker"]:
        run_noop_worker()
    else:
        main()
