"""How often does a freshly started predictor fail to serve? Starts under load, counted.

    .venv/bin/python scripts/probe_predictor_start.py [--starts 60] [--deadline 25]

Each start gets a throw-away deployment (topics, a champion, online features) and runs
``eddy run predictor`` while requests keep arriving (50 every 0.1 s, from before the
process starts). A start that answers nothing within ``--deadline`` seconds is
**stalled**: ``py-spy dump`` (when installed) writes every thread's stack next to the
start's log, where the stuck work stood, and the process is killed. Started because
kafka-python 3.0.12 stalled 2 of 47 such starts (docs/reliability.md, finding 7); it
prints each start's time to its first answer and the stall count, and exits 1 if any
start stalled. Needs a running stack (``scripts/stack.sh up``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_features import EDDY, deployment, start_workers, stop_workers, throwaway
from bench_predictor import MODEL, register_champion, request_records, seed_features, topics
from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.streams.transport.clients import make_consumer, make_producer

BATCH = 50
BATCH_EVERY_S = 0.1


def first_answer_s(settings: Settings, deadline_s: float, log_dir: Path) -> float | None:
    """Seconds from the predictor's start to its first answer; None when it stalled."""
    requests_topic, answers_topic = topics(settings)
    answers = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    partitions = [TopicPartition(answers_topic, p) for p in range(settings.partitions)]
    answers.assign(partitions)
    answers.seek_to_beginning(*partitions)
    producer = make_producer(settings)
    # at most one batch per BATCH_EVERY_S until the deadline
    records = iter(request_records("probe", (int(deadline_s / BATCH_EVERY_S) + 1) * BATCH))
    workers = start_workers(settings, [EDDY, "run", "predictor"], log_dir)
    started = time.monotonic()
    try:
        while time.monotonic() - started < deadline_s:
            for _ in range(BATCH):
                key, value = next(records)
                producer.send(requests_topic, key=key, value=value)
            producer.flush()
            if any(answers.poll(timeout_ms=int(BATCH_EVERY_S * 1000)).values()):
                return time.monotonic() - started
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        if spy:
            dump = subprocess.run(
                [spy, "dump", "--pid", str(workers[0].pid)], capture_output=True, text=True
            )
            (log_dir / "stalled-stacks.txt").write_text(dump.stdout + dump.stderr)
        return None
    finally:
        for worker in workers:
            worker.kill()
        stop_workers(workers)
        producer.close()
        answers.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=60)
    parser.add_argument("--deadline", type=float, default=25.0, help="seconds to a first answer")
    args = parser.parse_args()
    base = Settings.from_env().model_copy(update={"model_name": MODEL, "metrics_port": 0})
    answered: list[float] = []
    stalled: list[Path] = []
    for start in range(args.starts):
        with throwaway(deployment(base, "start")) as settings:
            now = time.time()
            register_champion(settings, seed_features(settings, now), now)
            log_dir = settings.data_dir / "logs"
            seconds = first_answer_s(settings, args.deadline, log_dir)
            if seconds is None:
                kept = ROOT / ".eddy" / "bench" / f"stalled-start-{start}"
                shutil.copytree(log_dir, kept, dirs_exist_ok=True)
                stalled.append(kept)
                print(f"start {start}: STALLED (logs and stacks in {kept})", flush=True)
            else:
                answered.append(seconds)
                print(f"start {start}: first answer after {seconds:.1f} s", flush=True)
    if answered:
        low, mid, high = min(answered), statistics.median(answered), max(answered)
        print(f"first answer (s): min {low:.1f}, median {mid:.1f}, max {high:.1f}")
    print(f"stalled: {len(stalled)} of {args.starts} starts")
    return 1 if stalled else 0


if __name__ == "__main__":
    sys.exit(main())
