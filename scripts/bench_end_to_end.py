"""End to end: events in → features → learned → the champion's answers out, every
service running at once on one machine.

    .venv/bin/python scripts/bench_end_to_end.py [--events 30000] [--requests 10000] [--runs 3]

Per run, on a fresh deployment with a scikit-learn champion registered (the prediction
benchmark's) and the online store seeded for the requests' entities: ``eddy run
features``, ``eddy run learner``, ``eddy run predictor`` and ``eddy run retrainer`` are
started and their groups left to settle. Then the events (one in 10 labelled, so the
feature worker sends a training example for each) and the prediction requests are sent
at the same time, as fast as one producer each can. The clock runs from the first send
until the feature workers' group committed every event, the learner sealed a checkpoint
holding every training example, and every request's answer was read back. Events/s is
the events over that time; the requests are answered alongside, as in production, and
the figure says how many.

Each part's own figure comes from its section of ``scripts/bench.py``; this is what the
services reach together, sharing the machine's cores with Kafka and Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson
from bench_features import (
    EDDY,
    LABEL_EVERY,
    committed,
    deployment,
    descendants,
    event_records,
    events_topic,
    send_records,
    start_workers,
    stop_workers,
    throwaway,
    wait_for_group,
)
from bench_predictor import (
    MODEL,
    PARTITIONS,
    Answers,
    register_champion,
    request_records,
    seed_features,
    topics,
)

from eddy.services.config.settings import Settings
from eddy.services.workers.features import app_id
from eddy.streams.learning.checkpoints import CheckpointStore
from eddy.streams.store.serialization import signing_key
from eddy.streams.transport.clients import make_admin
from eddy.streams.transport.groups import group_id

DEADLINE_S = 900
POLL_S = 0.1
# How long the learner may take to start its reader process, after the groups formed.
READER_START_S = 30
# The learner's last examples are sealed by the interval rule: a short interval keeps
# the finish line from waiting on idle time (as the learning benchmark does).
CHECKPOINT_INTERVAL_S = 0.2
SERVICES = ("features", "learner", "predictor", "retrainer")


@dataclass(frozen=True)
class Result:
    events_per_s: float
    requests_per_s: float
    seconds: float
    finished: dict[str, float]  # seconds from the first send until each part was done
    # Per service, resident MiB once half the events were committed and at the end: a
    # process whose memory grows with the events processed shows it here.
    rss_mib: dict[str, tuple[float, float]]


def resident_mib(pid: int) -> float:
    """``VmRSS`` of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def measure(base: Settings, events: int, requests: int) -> Result:
    """One run on a fresh deployment."""
    serving = deployment(base, "e2e", PARTITIONS).model_copy(update={"model_name": MODEL})
    with throwaway(serving) as settings:
        now = time.time()
        register_champion(settings, seed_features(settings, now), now)
        settings = settings.model_copy(update={"checkpoint_interval_s": CHECKPOINT_INTERVAL_S})
        workers = {}
        try:
            for service in SERVICES:
                [workers[service]] = start_workers(
                    settings, [EDDY, "run", service], settings.data_dir
                )
            _wait_for_groups(settings)
            pids = {service: worker.pid for service, worker in workers.items()}
            reader = (
                _reader_process(workers["learner"].pid) if settings.learner_reader_process else None
            )
            if reader is not None:
                pids["learner, reader process"] = reader
            return _run(settings, event_records(events), requests, pids)
        finally:
            stop_workers(list(workers.values()))


def _reader_process(learner: int) -> int | None:
    """The reader process the learner started (``EDDY_LEARNER_READER_PROCESS``, on by
    default): its child that multiprocessing spawned, once there; None without one."""
    deadline = time.monotonic() + READER_START_S
    while time.monotonic() < deadline:
        for child in descendants(learner):
            with contextlib.suppress(OSError):  # a child gone meanwhile
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return child
        time.sleep(POLL_S)
    return None


def _wait_for_groups(settings: Settings) -> None:
    requests_topic, _ = topics(settings)
    wait_for_group(settings, app_id(settings), 1, events_topic(settings), settings.partitions)
    wait_for_group(
        settings,
        group_id(settings.topic_prefix, "predictor", settings.model_name),
        1,
        requests_topic,
        settings.partitions,
    )


def _run(
    settings: Settings, events: list[tuple[bytes, bytes]], count: int, pids: dict[str, int]
) -> Result:
    requests_topic, answers_topic = topics(settings)
    requests = request_records("e2e", count)
    answers = Answers(settings, answers_topic)
    answers.start()
    finished: dict[str, float] = {}
    started = time.perf_counter()
    senders = [
        threading.Thread(target=send_records, args=(settings, events_topic(settings), events)),
        threading.Thread(target=send_records, args=(settings, requests_topic, requests)),
    ]
    try:
        for sender in senders:
            sender.start()
        ids = [orjson.loads(value)["request_id"] for _, value in requests]
        examples = len(range(0, len(events), LABEL_EVERY))
        halfway = _until_done(
            settings, len(events), examples, ids, answers, started, finished, pids
        )
        for sender in senders:
            sender.join()
        rss = {service: (halfway[service], resident_mib(pid)) for service, pid in pids.items()}
    finally:
        answers.stop()
    seconds = max(finished.values())
    return Result(len(events) / seconds, count / seconds, seconds, finished, rss)


def _until_done(
    settings: Settings,
    events: int,
    examples: int,
    request_ids: list[str],
    answers: Answers,
    started: float,
    finished: dict[str, float],
    pids: dict[str, int],
) -> dict[str, float]:
    """Waits until every part is done (noting when in ``finished``); returns each
    service's resident MiB once half the events were committed."""
    halfway: dict[str, float] = {}
    checkpoints = CheckpointStore(
        settings.data_dir / "checkpoints" / settings.model_name,
        signing_key(None, settings.data_dir),
    )
    admin = make_admin(settings)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(finished) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not done after {DEADLINE_S}s: only {sorted(finished)}")
            elapsed = time.perf_counter() - started
            if "features" not in finished:
                done = committed(admin, app_id(settings), events_topic(settings))
                if done >= events / 2 and not halfway:
                    halfway = {service: resident_mib(pid) for service, pid in pids.items()}
                if done >= events:
                    finished["features"] = elapsed
            if "learner" not in finished and _learned(checkpoints) >= examples:
                finished["learner"] = elapsed
            if "answers" not in finished and all(i in answers.arrived for i in request_ids):
                finished["answers"] = max(answers.arrived.values()) - started
            time.sleep(POLL_S)
    finally:
        admin.close()
    return halfway


def _learned(checkpoints: CheckpointStore) -> int:
    """Examples in the learner's newest sealed checkpoint (its file name says)."""
    paths = sorted(checkpoints.directory.glob("checkpoint-*.sealed"))
    return int(paths[-1].stem.split("-")[1]) if paths else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Settings.from_env().model_copy(update={"metrics_port": 0})
    results = []
    for run in range(args.runs):
        result = measure(base, args.events, args.requests)
        results.append(result)
        parts = "  ".join(f"{k} {v:.1f}s" for k, v in sorted(result.finished.items()))
        memory = "  ".join(f"{k} {a:.0f}->{b:.0f}" for k, (a, b) in result.rss_mib.items())
        print(
            f"run {run + 1}: {result.events_per_s:,.0f} events/s with "
            f"{result.requests_per_s:,.0f} requests/s answered ({parts}); "
            f"RSS MiB half-way->end: {memory}"
        )
    rates = [r.events_per_s for r in results]
    print(
        f"events/s end to end: median {statistics.median(rates):,.0f} "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}); {args.events:,} events and "
        f"{args.requests:,} requests per run"
    )


if __name__ == "__main__":
    main()
