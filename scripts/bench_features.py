"""Feature-ingestion throughput: Eddy's feature worker against a bare loop, same run.

    .venv/bin/python scripts/bench_features.py [--events 100000] [--runs 3]

For each run, the same pre-produced events (on a fresh topic prefix) are consumed by:

- **bare**: an aiokafka consumer reading all partitions and writing one Redis hash per
  event in one pipeline per fetched batch: the floor any Kafka→Redis worker pays;
- **faust no-op**: a faust agent that takes the same batches and does nothing with
  them: the ceiling faust-streaming's per-event machinery sets on this machine;
- **pipeline**: Eddy's :class:`~eddy.streams.features.pipeline.FeaturePipeline` in this
  process, without faust, fed the same records in batches of ``EDDY_FEATURE_BATCH_SIZE``
  (validation, features, training examples, compare-and-set writes, real Redis/Kafka);
- **contract floors** (``bench_floor.py``): on the same records, the writes the
  pipeline's outputs need (examples acknowledged by Kafka, snapshots, states) alone,
  which bound every implementation on ``handle``'s schedule with these clients, and a
  lean Python implementation of the whole batch, evidence of what per-event Python costs;
- **eddy**: an ``eddy run features`` process (faust agent around that pipeline,
  commits after durability);
- **quix** and **faust** (the peers; ``--no-peers`` leaves them out): the same features
  as Eddy's default :data:`~eddy.streams.features.definitions.FEATURES` (per entity, on
  event time with an hour of lateness: count, sum, mean, min, max, std and last amount
  over a 1-hour tumbling window, count, sum and mean over 10 minutes hopping every
  minute, distinct countries over a day, amount over the hour's mean, seconds since the
  previous event), written to Redis in batches, as a Quix Streams application
  (``scripts/peers/quix_features.py``, in its own virtualenv ``.eddy/peers-venv``) and as
  a faust agent over windowed tables (``same-work-worker`` below) would compute them.
  After they ran, every entity's values from each peer are checked against Eddy's own
  computation over the same events ("peer values checked: ok", or the run fails).

Worker rates are measured on the group's committed offsets from its first commit to
its last, so start-up is not counted.

Prints medians, spreads and the ratio, and where each figure came from. Uses the local
stack (`eddy up`) or whatever EDDY_KAFKA_BOOTSTRAP / EDDY_REDIS_URL name. The helpers
here (producing, starting workers, committed-offset rates, group readiness, clean-up)
are shared by the other benchmark scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from kafka import TopicPartition as KafkaPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_floor

from eddy.services.config.settings import Settings
from eddy.services.workers.features import app_id, build_pipeline
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import (
    TIME_SINCE_LAST,
    EntityState,
    FeatureValue,
    apply_event,
    feature_vector,
)
from eddy.streams.features.definitions import DAY, FEATURES, HOUR
from eddy.streams.transport.admin import (
    COORDINATOR_NOT_READY,
    committed_offsets,
    describe_group,
    ensure_topics,
)
from eddy.streams.transport.clients import make_admin, make_consumer, make_producer, make_redis
from eddy.streams.transport.config import SecurityProtocol
from eddy.streams.transport.topics import Topic, topic_name

ENTITIES = 2_000
PARTITIONS = 3
LABEL_EVERY = 10
DEADLINE_S = 600
GROUP_READY_S = 120
POLL_S = 0.05
STOP_TIMEOUT_S = 30
SCAN_COUNT = 10_000  # keys per SCAN step: the shared Redis may hold many others
BENCH_DIR = ROOT / ".eddy" / "bench"
EDDY = str(Path(sys.executable).with_name("eddy"))
PEERS_DIR = ROOT / "scripts" / "peers"
QUIX_PEER = PEERS_DIR / "quix_features.py"
QUIX_REQUIREMENTS = PEERS_DIR / "requirements-quix.txt"
PEERS_VENV = ROOT / ".eddy" / "peers-venv"
RECENT_S, STEP_S = 10 * 60, 60  # the peers' 10-minute window hopping every minute
PEER_LINGER_S = 0.005
PEER_TOLERANCE = 1e-9  # relative: Eddy sums in exact fixed point, the peers in floats

Records = list[tuple[bytes, bytes]]


def deployment(base: Settings, name: str, partitions: int = PARTITIONS) -> Settings:
    """Settings of a throw-away deployment: its own topic prefix and data folder."""
    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}."
    return base.model_copy(
        update={
            "topic_prefix": prefix,
            "partitions": partitions,
            "data_dir": BENCH_DIR / prefix.rstrip("."),
        }
    )


def event_records(count: int, tag: str = "") -> Records:
    """``count`` valid events (key, JSON) over ENTITIES entities, one in LABEL_EVERY
    labelled; ``tag`` prefixes entity and event ids (a fresh set per tag)."""
    now = time.time() - 60
    records: Records = []
    for i in range(count):
        entity = f"{tag}user-{i % ENTITIES}"
        event: dict[str, Any] = {
            "event_id": f"{tag}ev-{i}",
            "entity_id": entity,
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + i / count)),
            # An entity's amounts differ (its n-th event is shifted by n/10): with
            # ENTITIES a multiple of 1000 they were all equal, and min, max and std
            # checked nothing.
            "features": {
                "amount": (i * 7919 + i // ENTITIES) % 1000 / 10,
                "country": "NL" if i % 3 else "DE",
            },
        }
        if i % LABEL_EVERY == 0:
            event["label"] = i % 2
        records.append((entity.encode(), orjson.dumps(event)))
    return records


def send_records(settings: Settings, topic: str, records: Records) -> None:
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=120)
    producer.close()


def produce_events(settings: Settings, topic: str, count: int) -> None:
    send_records(settings, topic, event_records(count))


def events_topic(settings: Settings) -> str:
    return topic_name(Topic.EVENTS, settings.topic_prefix)


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
                    key = f"{settings.topic_prefix}bare:{{{value['entity_id']}}}"
                    pipe.hset(key, "last", record.value)
                    seen += 1
            await asyncio.to_thread(pipe.execute)
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        redis.close()


def read_records(settings: Settings, topic: str, count: int) -> list[RawRecord]:
    """The topic's first ``count`` records, read before any clock starts."""
    consumer = make_consumer(settings, group_id=None, max_poll_records=settings.feature_batch_size)
    records: list[RawRecord] = []
    try:
        assigned = [KafkaPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        while len(records) < count:
            for polled in consumer.poll(timeout_ms=1000).values():
                records += [RawRecord.of(r) for r in polled]
    finally:
        consumer.close()
    return records


def pipeline_rate(settings: Settings, records: list[RawRecord]) -> float:
    """Events/s of Eddy's feature pipeline in this process, without faust.

    The records (:func:`read_records`) are handed to ``FeaturePipeline.handle`` in
    batches of ``feature_batch_size`` as the worker would. It writes this deployment's
    online state: call :func:`reset_state` before a worker runs on it.
    """
    pipeline = build_pipeline(settings, FEATURES, None, repairs=True)  # the worker's
    size = settings.feature_batch_size
    started = time.perf_counter()
    for start in range(0, len(records), size):
        pipeline.handle(records[start : start + size])
    return len(records) / (time.perf_counter() - started)


def start_workers(
    settings: Settings, command: list[str], workdir: Path, processes: int = 1, tag: str = ""
) -> list[subprocess.Popen[bytes]]:
    """``processes`` copies of ``command`` with these settings, logging to ``workdir``."""
    env = settings.child_env(data_dir=workdir, log_level="WARNING")
    workdir.mkdir(parents=True, exist_ok=True)
    workers = []
    for n in range(processes):
        with (workdir / f"{command[-1]}{tag}-{n}.log").open("wb") as log:
            workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL for any that has not stopped after STOP_TIMEOUT_S."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"warning: pid {worker.pid} ignored SIGTERM; killed", file=sys.stderr)
            worker.kill()
            worker.wait()


def committed(admin: Any, group: str, topic: str) -> int:
    """Offsets the group committed on ``topic``, summed; 0 while the broker has no
    coordinator for it yet (a fresh broker creates its offsets topic on first use, then
    loads it: "not coordinator" answers came from a broker started seconds before)."""
    try:
        offsets = committed_offsets(admin, group)
    except COORDINATOR_NOT_READY:
        return 0
    return sum(offset for tp, offset in offsets.items() if tp.topic == topic)


def committed_rate(
    settings: Settings, group: str, topic: str, count: int, started: float, already: int = 0
) -> float:
    """Records/s of a consumer group over ``count`` new records of ``topic`` (past
    ``already`` committed ones), from its first commit of them to the commit covering
    them all, so start-up is not counted.

    When the first commit already covers everything (too few records for the commit
    interval), the clock starts at ``started`` (the launch or the first send) instead,
    and a warning says so.
    """
    admin = make_admin(settings)
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            done = committed(admin, group, topic)
            now = time.perf_counter()
            if done > already and first is None:
                first = (now, done)
            if done >= already + count and first is not None:
                if first[1] < already + count:
                    return (done - first[1]) / (now - first[0])
                print(
                    f"warning: {group} committed all {count:,} records at once; "
                    "the rate includes start-up (use more records)",
                    file=sys.stderr,
                )
                return count / (now - started)
            time.sleep(POLL_S)
        raise RuntimeError(f"group {group} did not finish {count} records in {DEADLINE_S}s")
    finally:
        admin.close()


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs, from ``/proc`` (one that ends meanwhile
    is passed over)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in map(int, children.read_text().split()):
                found += [child, *descendants(child)]
    return found


def wait_for_group(
    settings: Settings, group: str, members: int, topic: str, partitions: int
) -> None:
    """Until ``group`` is stable with ``members`` members sharing all ``partitions`` of
    ``topic``: what a measurement that starts with a full group waits for. A broker with
    no coordinator for the group yet is waited for too: a fresh cluster creates its
    offsets topic on first use (on the clustered stack, in seconds)."""
    admin = make_admin(settings)
    try:
        deadline = time.monotonic() + GROUP_READY_S
        while time.monotonic() < deadline:
            try:
                view = describe_group(admin, group)
            except COORDINATOR_NOT_READY:
                time.sleep(POLL_S * 4)
                continue
            assigned = {partition for name, partition in view.owned if name == topic}
            if (
                view.state == "Stable"
                and len(view.member_ids) == members
                and len(assigned) == partitions
            ):
                return
            time.sleep(POLL_S * 4)
        raise RuntimeError(f"group {group} not stable with {members} members on {topic}")
    finally:
        admin.close()


def start_group(
    settings: Settings, command: list[str], processes: int, group: str, topic: str
) -> list[subprocess.Popen[bytes]]:
    """``processes`` copies of ``command`` in ``group``, once the group is stable over all
    of ``topic``'s partitions. A group that does not settle is started afresh once,
    with a warning: a slow join is worth a look in the kept logs, but it is not what
    the measurement is about."""
    workers = start_workers(settings, command, settings.data_dir, processes)
    try:
        wait_for_group(settings, group, processes, topic, settings.partitions)
        return workers
    except RuntimeError as exc:
        stop_workers(workers)
        print(f"warning: {exc}; starting the processes again", file=sys.stderr)
    workers = start_workers(settings, command, settings.data_dir, processes, tag="-again")
    try:
        wait_for_group(settings, group, processes, topic, settings.partitions)
    except RuntimeError:
        stop_workers(workers)
        raise
    return workers


def worker_rate(
    settings: Settings, topic: str, count: int, workdir: Path, command: list[str], group: str
) -> float:
    """Events/s of one worker process, from its group's first commit to its last."""
    started = time.perf_counter()
    workers = start_workers(settings, command, workdir)
    try:
        return committed_rate(settings, group, topic, count, started)
    finally:
        stop_workers(workers)


def forget_group(settings: Settings, group: str) -> None:
    """Delete ``group`` (its members gone), so that the next one starts from the first
    offset; a group that does not exist is fine."""
    admin = make_admin(settings)
    try:
        if group in {listed for listed, _ in admin.list_consumer_groups()}:
            admin.delete_consumer_groups([group])
    finally:
        admin.close()


def reset_state(settings: Settings) -> None:
    """Delete the deployment's Redis keys (the bare loop's too): a fresh online store."""
    redis = make_redis(settings)
    pipe = redis.pipeline(transaction=False)
    for key in redis.scan_iter(match=f"{settings.topic_prefix}*", count=SCAN_COUNT):
        pipe.unlink(key)
    pipe.execute()
    redis.close()


def cleanup(settings: Settings, keep_files: bool = False) -> None:
    """Remove what a throw-away deployment left: Redis keys, topics, data folder."""
    reset_state(settings)
    admin = make_admin(settings)
    try:
        ours = [name for name in admin.list_topics() if owned_topic(name, settings.topic_prefix)]
        if ours:
            admin.delete_topics(ours)
    finally:
        admin.close()
    if keep_files:
        print(f"logs and state kept in {settings.data_dir}", file=sys.stderr)
    elif settings.data_dir.is_relative_to(BENCH_DIR):
        shutil.rmtree(settings.data_dir, ignore_errors=True)


def owned_topic(name: str, prefix: str) -> bool:
    """Whether topic ``name`` belongs to the deployment under ``prefix``: its own, or one
    the Quix peer made (Quix names its changelogs ``changelog__<group>--…``)."""
    return name.startswith((prefix, f"changelog__{prefix}", f"repartition__{prefix}"))


@contextmanager
def throwaway(settings: Settings) -> Iterator[Settings]:
    """A deployment's topics for the duration of a measurement, then :func:`cleanup`
    (logs are kept when the measurement failed)."""
    ensure_topics(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        yield settings
        failed = False
    finally:
        cleanup(settings, keep_files=failed)


def measure(base: Settings, events: int, peers: bool = True) -> dict[str, float]:
    """One run: the same events through the bare loop, faust no-op, pipeline and worker,
    then (``peers``) through the Quix Streams and faust peers, whose values are checked."""
    quix = quix_command(base) if peers else None
    with throwaway(deployment(base, "feat")) as settings:
        topic = events_topic(settings)
        records = event_records(events)
        send_records(settings, topic, records)
        rates = {"bare": asyncio.run(bare_loop(settings, topic, events, settings.partitions))}
        noop = [sys.executable, __file__, "noop-worker"]
        rates["noop"] = worker_rate(
            settings, topic, events, settings.data_dir, noop, noop_app_id(settings)
        )
        read = read_records(settings, topic, events)
        rates["pipeline"] = pipeline_rate(settings, read)
        bench_floor.check_vectors(read)  # the floor computes what Eddy computes
        rates["floor"] = bench_floor.contract_floor(settings, read)
        rates["floor_writes"] = bench_floor.writes_floor(settings, read)
        # Each engine from the first offset, on a fresh store (the feature workers' group
        # is the same whatever the engine: the first one's is deleted once it stopped).
        for key, engine in (("eddy", "poll"), ("eddy_faust", "faust")):
            reset_state(settings)
            forget_group(settings, app_id(settings))
            engined = settings.model_copy(update={"feature_engine": engine})
            command = [EDDY, "run", "features"]
            rates[key] = worker_rate(
                engined, topic, events, settings.data_dir, command, app_id(settings)
            )
        if quix is not None:
            group = quix_group(settings)
            command = [*quix, "--topic", topic, "--group", group]
            rates["quix"] = worker_rate(settings, topic, events, settings.data_dir, command, group)
        if peers:
            command = [sys.executable, __file__, "same-work-worker"]
            rates["faust"] = worker_rate(
                settings, topic, events, settings.data_dir, command, faust_peer_app_id(settings)
            )
            check_peers(settings, records, [peer for peer in PEERS if peer in rates])
    return rates


def peers_python() -> Path:
    """The Quix peer's interpreter, in ``.eddy/peers-venv``: quixstreams wants another
    pydantic than Eddy pins, so it cannot live in Eddy's virtualenv."""
    return peer_python(PEERS_VENV, QUIX_REQUIREMENTS)


def peer_python(venv: Path, requirements: Path) -> Path:
    """A peer's interpreter in a virtualenv of its own, made on first use from its pinned
    ``requirements``, and made afresh when they or this Python change (their hash is
    kept beside it)."""
    wanted = hashlib.sha256(requirements.read_bytes() + platform.python_version().encode())
    stamp = venv / "requirements.sha256"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted.hexdigest():
        return python
    print(f"making {venv} from {requirements.name}", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(wanted.hexdigest())
    return python


def quix_command(settings: Settings) -> list[str] | None:
    """The Quix peer's command, its virtualenv made first; None (with a warning) on a
    broker that is not plaintext, the only kind the peer is wired for."""
    if settings.kafka_security_protocol is not SecurityProtocol.PLAINTEXT:
        print("warning: the Quix peer needs a plaintext broker; it is left out", file=sys.stderr)
        return None
    return [str(peers_python()), str(QUIX_PEER)]


def quix_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}quix"


def peer_key(settings: Settings, peer: str, entity: str) -> str:
    """Where a peer keeps an entity's features (JSON): under the deployment's prefix, so
    :func:`reset_state` and :func:`cleanup` remove them. The Quix peer writes the same."""
    return f"{settings.topic_prefix}{peer}:{{{entity}}}"


def expected_features(records: Records) -> dict[str, dict[str, FeatureValue]]:
    """Per entity, the features a peer must hold once it has read ``records``.

    The windowed aggregates are Eddy's own: :data:`FEATURES` folded by
    :func:`apply_event` and read by :func:`feature_vector` as of the entity's newest
    event. The last amount (and the ratio built on it) is the newest event's, a tie of
    event times going to the later arrival as in the peers (Eddy breaks it by event id);
    the seconds since the previous event are the newest event's (Eddy serves them as of
    the request's time, which the peers cannot know).
    """
    states: dict[str, EntityState] = {}
    newest: dict[str, tuple[float, float | None, FeatureValue]] = {}
    for _key, value in records:
        event = orjson.loads(value)
        entity, raw = event["entity_id"], event["features"]
        at = datetime.fromisoformat(event["event_time"]).timestamp()
        apply_event(states.setdefault(entity, EntityState()), FEATURES, event["event_id"], at, raw)
        before = newest.get(entity)
        if before is None or at >= before[0]:
            newest[entity] = (at, None if before is None else at - before[0], raw["amount"])
    (ratio,) = FEATURES.ratios
    expected: dict[str, dict[str, FeatureValue]] = {}
    for entity, state in states.items():
        vector = feature_vector(state, FEATURES, as_of=newest[entity][0])
        values = {name: vector[name] for a in FEATURES.aggregates for name in a.op_names}
        _, gap, last = newest[entity]
        mean = values[ratio.denominator]
        values["amount_last_1h"] = last
        values[ratio.name] = last / mean if isinstance(last, int | float) and mean else None
        values[TIME_SINCE_LAST] = gap
        expected[entity] = values
    return expected


def check_peers(settings: Settings, records: Records, peers: list[str]) -> None:
    """Every entity's features as each peer wrote them, against
    :func:`expected_features`: a peer cannot be fast by computing something else."""
    expected = expected_features(records)
    entities = sorted(expected)
    redis = make_redis(settings)
    wrong: list[str] = []
    try:
        for peer in peers:
            stored = redis.mget([peer_key(settings, peer, entity) for entity in entities])
            for entity, raw in zip(entities, stored, strict=True):
                held = orjson.loads(raw) if raw else {}
                wrong += [
                    f"{peer} {entity} {name}: {held.get(name, 'missing')!r}, expected {want!r}"
                    for name, want in expected[entity].items()
                    if name not in held or not same_value(held[name], want)
                ]
    finally:
        redis.close()
    if wrong:
        raise RuntimeError(
            f"{len(wrong)} peer values differ from Eddy's features: " + "; ".join(wrong[:5])
        )
    print(f"peer values checked: ok ({', '.join(peers)}: {len(entities):,} entities each)")


def same_value(held: Any, want: FeatureValue) -> bool:
    if isinstance(held, int | float) and isinstance(want, int | float):
        return math.isclose(held, want, rel_tol=PEER_TOLERANCE, abs_tol=PEER_TOLERANCE)
    return bool(held == want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the Quix Streams and faust peers (default: on)",
    )
    args = parser.parse_args()
    base = Settings.from_env().model_copy(update={"metrics_port": 0})
    results: dict[str, list[float]] = {}
    for run in range(args.runs):
        for name, rate in measure(base, args.events, peers=args.peers).items():
            results.setdefault(name, []).append(rate)
        print(f"run {run + 1}: " + "  ".join(f"{n} {v[-1]:,.0f}/s" for n, v in results.items()))
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
        f"events per run: {args.events:,} over {ENTITIES:,} entities, {PARTITIONS} partitions, "
        f"1 label in {LABEL_EVERY}"
    )
    bare = statistics.median(results["bare"])
    for name, label in LABELS.items():
        if name not in results:
            continue
        values = results[name]
        print(
            f"{label:44} median {statistics.median(values):>9,.0f}/s "
            f"(min {min(values):,.0f}, max {max(values):,.0f})  "
            f"ratio {statistics.median(values) / bare:.2f}"
        )


LABELS = {
    "bare": "bare aiokafka + Redis pipeline",
    "noop": "faust no-op agent (1 worker)",
    "pipeline": "FeaturePipeline.handle in-process (no faust)",
    "floor": "contract floor: lean Python per event + the writes",
    "floor_writes": "contract floor: the writes alone",
    "eddy": "eddy run features (1 worker, poll engine: the default)",
    "eddy_faust": "eddy run features (1 worker, faust engine)",
    "quix": "Quix Streams peer, same features (1 process)",
    "faust": "faust tables peer, same features (1 worker)",
}
PEERS = ("quix", "faust")


def noop_app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}noop"


def run_noop_worker() -> None:
    """A faust agent that takes batches like the feature worker and does nothing."""
    from eddy.services.workers.faust_app import make_app, run_worker

    settings = Settings.from_env()
    app = make_app(settings, noop_app_id(settings))
    events = app.topic(events_topic(settings), key_serializer="raw", value_serializer="raw")
    wait_s = settings.feature_batch_wait_ms / 1000

    @app.agent(events, concurrency=1)
    async def drain(stream: Any) -> None:
        async for _batch in stream.take_events(settings.feature_batch_size, within=wait_s):
            pass

    run_worker(app, settings)


def faust_peer_app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}faust-peer"


def run_same_work_worker() -> None:
    """Eddy's default features in plain faust-streaming, the way its documentation keeps
    windowed aggregates: a windowed table per window, keyed by entity, on the events'
    own time (``relative_to_field``), each value the window's partial aggregates, kept
    in Kafka changelogs; and a table of each entity's newest event time, which refuses
    an event older than that by more than the allowed lateness, as Eddy does (faust's
    windows have no grace of their own).

    A stream processor folds each event into the tables: faust picks the windows and
    the changelog partition from the event in hand, which a batch does not have. The
    agent takes the events in batches, like the feature worker, and writes the entities
    they touched to Redis in one pipeline per batch before the batch is acknowledged, so
    committed offsets never run ahead of Redis.
    """
    import faust

    from eddy.services.workers.faust_app import make_app, run_worker

    settings = Settings.from_env()
    # faust sends every table update to its changelog at once (linger 0): the 5 ms Eddy's
    # feature worker and librdkafka (so Quix) linger let those share requests.
    app = make_app(settings, faust_peer_app_id(settings), producer_linger=PEER_LINGER_S)
    lateness = FEATURES.allowed_lateness_s

    class PeerEvent(faust.Record, isodates=True, serializer="json"):
        event_id: str
        entity_id: str
        event_time: datetime
        features: dict[str, Any]
        label: int | None = None

    hourly = app.Table("amount-1h", default=dict).tumbling(HOUR, expires=HOUR + lateness)
    recent = app.Table("amount-10m", default=dict).hopping(
        RECENT_S, STEP_S, expires=RECENT_S + lateness
    )
    daily = app.Table("country-1d", default=list).tumbling(DAY, expires=DAY + lateness)
    newest = app.Table("newest", default=list)  # [time, seconds since the one before]

    def as_of_newest(event: Any) -> float:
        return float(newest[event.value.entity_id][0])

    def trailing(event: Any) -> float:
        """faust reads the newest hopping window holding a time; Eddy's is the oldest,
        the one ending right after it: the newest one holding a time this much earlier."""
        return as_of_newest(event) - (RECENT_S - STEP_S)

    # Written at the event's own time, read as of the entity's newest event.
    hourly_in, recent_in, daily_in = (
        table.relative_to_field(PeerEvent.event_time) for table in (hourly, recent, daily)
    )
    hourly_now, daily_now = hourly.relative_to(as_of_newest), daily.relative_to(as_of_newest)
    recent_now = recent.relative_to(trailing)
    pending: dict[str, dict[str, FeatureValue]] = {}

    def fold(event: PeerEvent) -> PeerEvent:
        key, at = event.entity_id, event.event_time.timestamp()
        seen = newest[key]
        if seen and at < seen[0] - lateness:
            return event
        amount, country = event.features.get("amount"), event.features.get("country")
        if amount is not None:
            hourly_in[key].apply(add_amount, [at, amount])
            recent_in[key].apply(add_recent, amount)
        if country is not None:
            daily_in[key].apply(add_country, country)
        if not seen or at >= seen[0]:
            newest[key] = [at, at - seen[0] if seen else None]
        pending[key] = peer_features(
            hourly_now[key].value(), recent_now[key].value(), daily_now[key].value(), newest[key][1]
        )
        return event

    redis = make_redis(settings)
    events = app.topic(events_topic(settings), key_serializer="raw", value_type=PeerEvent)

    @app.agent(events, concurrency=1)
    async def same_work(stream: Any) -> None:
        stream.add_processor(fold)
        wait_s = settings.feature_batch_wait_ms / 1000
        async for _batch in stream.take_events(settings.feature_batch_size, within=wait_s):
            # Folded, possibly with some of the next batch's events: written early is fine.
            ready = dict(pending)
            pending.clear()
            pipe = redis.pipeline(transaction=False)
            for entity, features in ready.items():
                pipe.set(peer_key(settings, "faust", entity), orjson.dumps(features))
            await asyncio.to_thread(pipe.execute)

    run_worker(app, settings)


def add_amount(window: dict[str, Any], sample: list[float]) -> dict[str, Any]:
    """One amount into an hour's partial aggregates: count, sum, Welford's mean and sum of
    squared deviations (for the std), min, max and the last by event time."""
    at, amount = sample
    window = window or {
        "n": 0,
        "sum": 0.0,
        "mean": 0.0,
        "m2": 0.0,
        "min": amount,
        "max": amount,
        "last_at": at,
    }
    n = window["n"] + 1
    delta = amount - window["mean"]
    mean = window["mean"] + delta / n
    later = at >= window["last_at"]
    return {
        "n": n,
        "sum": window["sum"] + amount,
        "mean": mean,
        "m2": window["m2"] + delta * (amount - mean),
        "min": min(window["min"], amount),
        "max": max(window["max"], amount),
        "last": amount if later else window["last"],
        "last_at": at if later else window["last_at"],
    }


def add_recent(window: dict[str, Any], amount: float) -> dict[str, Any]:
    return {"n": window.get("n", 0) + 1, "sum": window.get("sum", 0.0) + amount}


def add_country(countries: list[str], country: str) -> list[str]:
    return countries if country in countries else sorted([*countries, country])


def peer_features(
    hour: dict[str, Any], recent: dict[str, Any], countries: list[str], gap: float | None
) -> dict[str, FeatureValue]:
    """An entity's features, under Eddy's names, from its windows' partial aggregates."""
    mean = hour["sum"] / hour["n"] if hour else None
    last = hour.get("last")
    return {
        "amount_count_1h": hour.get("n", 0),
        "amount_sum_1h": hour.get("sum", 0.0),
        "amount_mean_1h": mean,
        "amount_min_1h": hour.get("min"),
        "amount_max_1h": hour.get("max"),
        "amount_std_1h": math.sqrt(hour["m2"] / hour["n"]) if hour else None,
        "amount_last_1h": last,
        "amount_count_10m_every_1m": recent.get("n", 0),
        "amount_sum_10m_every_1m": recent.get("sum", 0.0),
        "amount_mean_10m_every_1m": recent["sum"] / recent["n"] if recent else None,
        "country_distinct_1d": len(countries),
        "amount_vs_hourly_mean": last / mean if last is not None and mean else None,
        TIME_SINCE_LAST: gap,
    }


WORKERS = {"noop-worker": run_noop_worker, "same-work-worker": run_same_work_worker}

if __name__ == "__main__":
    worker = WORKERS.get(sys.argv[1]) if len(sys.argv) == 2 else None
    if worker is not None:
        worker()
    else:
        main()
