"""Scaling out: feature workers and predictors with 1, 2 and 4 processes.

    .venv/bin/python scripts/bench_scaling.py [--events 40000] [--requests 20000]
        [--processes 1 2 4] [--runs 3]

For each process count N, a fresh deployment gets N partitions and N processes of the
same service in one consumer group, started once for all runs. Each run's load is
produced only once the group is stable with all N members and every partition assigned,
so start-up and rebalancing are not counted:

- **feature workers**: ``--events`` events per run (as in ``bench_features.py``, over
  entities of the run's own); events/s of the group from its first commit of the run's
  events to the one covering them all;
- **predictors**: ``--requests`` requests per run over entities with online features
  and a scikit-learn champion (as in ``bench_predictor.py``); answers/s from the first
  answer read back to the last.

The ratio to one process is the speed-up. Kafka spreads partitions, not records within
one, so N processes need N partitions; past the machine's cores, processes share CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson
from bench_features import (
    EDDY,
    committed_rate,
    deployment,
    event_records,
    events_topic,
    send_records,
    start_group,
    stop_workers,
    throwaway,
)
from bench_predictor import (
    MODEL,
    Answers,
    drain_rate,
    register_champion,
    request_records,
    seed_features,
    topics,
)

from eddy.services.config.settings import Settings
from eddy.services.workers.features import app_id


def feature_workers(base: Settings, processes: int, events: int, runs: int) -> list[float]:
    """Events/s of ``processes`` feature workers over as many partitions, per run.

    The workers start once; each run sends ``events`` events of entities of its own
    (fresh state, as in the first run) and is timed on the group's commits.
    """
    with throwaway(deployment(base, f"fscale{processes}", processes)) as settings:
        topic, group = events_topic(settings), app_id(settings)
        workers = start_group(settings, [EDDY, "run", "features"], processes, group, topic)
        try:
            rates = []
            for run in range(runs):
                records = event_records(events, tag=f"r{run}-")
                started = time.perf_counter()
                send_records(settings, topic, records)
                rates.append(
                    committed_rate(settings, group, topic, events, started, already=run * events)
                )
            return rates
        finally:
            stop_workers(workers)


def predictors(base: Settings, processes: int, requests: int, runs: int) -> list[float]:
    """Requests/s answered by ``processes`` predictors over as many partitions, per run.

    The predictors start once; each run sends ``requests`` requests of its own.
    """
    fresh = deployment(base, f"pscale{processes}", processes)
    with throwaway(fresh.model_copy(update={"model_name": MODEL})) as settings:
        now = time.time()
        register_champion(settings, seed_features(settings, now), now)
        requests_topic, answers_topic = topics(settings)
        answers = Answers(settings, answers_topic)
        answers.start()
        try:
            return _drain_runs(settings, answers, requests_topic, processes, requests, runs)
        finally:
            answers.stop()


def _drain_runs(
    settings: Settings, answers: Answers, topic: str, processes: int, requests: int, runs: int
) -> list[float]:
    group = f"{settings.topic_prefix}predictors"
    workers = start_group(settings, [EDDY, "run", "predictor"], processes, group, topic)
    try:
        rates = []
        for run in range(runs):
            records = request_records(f"r{run}", requests)
            send_records(settings, topic, records)
            ids = [orjson.loads(value)["request_id"] for _, value in records]
            rates.append(drain_rate(answers.wait_for(ids, f"{processes} predictors")))
        return rates
    finally:
        stop_workers(workers)


SERVICES = {"features": feature_workers, "predictor": predictors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Settings.from_env().model_copy(update={"metrics_port": 0})
    sizes = {"features": args.events, "predictor": args.requests}
    results: dict[tuple[str, int], list[float]] = {}
    for service, measure in SERVICES.items():
        for n in args.processes:
            results[(service, n)] = measure(base, n, sizes[service], args.runs)
            print(f"{service} x{n}: " + ", ".join(f"{r:,.0f}/s" for r in results[(service, n)]))
    print(f"\n{os.cpu_count()} cores; N processes over N partitions; medians of {args.runs}")
    for (service, n), values in results.items():
        one = statistics.median(results[(service, args.processes[0])])
        print(
            f"eddy run {service:10} x{n}: median {statistics.median(values):>8,.0f}/s "
            f"(min {min(values):,.0f}, max {max(values):,.0f})  "
            f"speed-up {statistics.median(values) / one:.2f}"
        )


if __name__ == "__main__":
    main()
