"""Recovery benchmark: after a drift, does what users are served get right again, and does
nothing fire while the world has not changed?

    .venv/bin/python scripts/bench_recovery.py                  # 7 scenarios x 5 seeds
    .venv/bin/python scripts/bench_recovery.py --seeds 1 --scenarios stagger,control

Every run is the README's main job (``eddy demo``) through the real services (Kafka,
Redis, features, learner, retrainer, predictor, monitor under the supervisor) on a
scenario and seed of its own: abrupt drifts (STAGGER, SEA, Agrawal, the bundled real
Bananas data with its labels flipped), a gradual drift, a recurring concept and a
no-drift control. Per run, from the demo's own summary: the verdict, false alarms
(alerts of any kind before the drift; in the control, any alert), the concept
detection delay in events, served accuracy in the last third after the drift against
0.95 x before, the time from the drift to the champion that served at the end, and,
side by side on the same requests, the served accuracy of never retraining, of the
online learner alone and of retraining on a fixed schedule
(:mod:`eddy.services.demo.baselines`). Writes docs/recovery.md (``--out`` elsewhere) with
every run and the targets each missed. Uses the running stack (``eddy up``) and the
EDDY_* settings of its environment (``EDDY_RETRAIN_REFRESH=false`` measures without the
data-paced refresh; a champion below the majority class is still retrained).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eddy.services.config.settings import Settings
from eddy.services.demo.scenarios import SCENARIOS, describe, drifts

DOCS = ROOT / "docs" / "recovery.md"
RUNS_DIR = ROOT / ".eddy" / "bench" / "recovery"
DEFAULT_SEEDS = 5
DEFAULT_DURATION_S = 90.0
DEFAULT_RATE = 40.0
RUN_TIMEOUT_S = 900
BASELINES = ("never_retrain", "online_alone", "fixed_schedule")


def run_one(scenario: str, seed: int, duration_s: float, rate: float) -> dict[str, Any]:
    """One ``eddy demo`` in a data folder of its own; its summary plus the exit code."""
    data = RUNS_DIR / f"{scenario}-{seed}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    env = Settings.from_env().model_copy(update={"data_dir": data}).child_env()
    command = [
        str(Path(sys.executable).with_name("eddy")),
        "demo",
        "--scenario",
        scenario,
        "--seed",
        str(seed),
        "--duration",
        str(duration_s),
        "--rate",
        str(rate),
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    found = sorted(data.glob("demo/*/summary.json"))
    summary: dict[str, Any] = orjson.loads(found[-1].read_bytes()) if found else {}
    return {
        "scenario": scenario,
        "seed": seed,
        "exit_code": result.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "summary": summary,
        "data": str(data),
    }


def row(run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run, and the targets it missed."""
    summary = run["summary"]
    judged = summary.get("verdict") or {}
    baselines = summary.get("baselines") or {}
    drift_s = summary.get("drift_at_s")
    final = (summary.get("champions") or [{}])[-1]
    recovered_in = (
        round(final["at_s"] - drift_s, 1)
        if drifts(run["scenario"])
        and final.get("at_s") is not None
        and drift_s is not None
        and final["at_s"] >= drift_s
        else None
    )
    misses = []
    if run["exit_code"] != 0 or not judged.get("served"):
        misses.append("served nothing in a phase")
    if judged.get("false_alarms"):
        misses.append(f"{judged['false_alarms']} false alarm(s)")
    if drifts(run["scenario"]) and not judged.get("recovered"):
        misses.append("not recovered")
    if not drifts(run["scenario"]) and not judged.get("recovered"):
        misses.append("served worse at the end")
    if baselines and not baselines.get("eddy_at_least_the_best"):
        misses.append("below a baseline")
    return {
        "scenario": run["scenario"],
        "seed": run["seed"],
        "verdict": judged.get("verdict", "no summary"),
        "false_alarms": judged.get("false_alarms"),
        "delay_events": judged.get("detection_delay_events"),
        "before": judged.get("accuracy_before"),
        "last_third": judged.get("accuracy_last_third"),
        "recovered_in_s": recovered_in,
        **{name: (baselines.get(name) or {}).get("whole") for name in ("eddy", *BASELINES)},
        "misses": misses,
    }


def render(rows: list[dict[str, Any]], options: argparse.Namespace) -> str:
    lines = [
        "# Recovery benchmark",
        "",
        f"Written by `scripts/bench_recovery.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"{len(rows)} runs of `eddy demo` ({options.duration:g} s at {options.rate:g} "
        "events/s, drift at half time, labels 1 s after each request), each through the "
        "real services on a scenario and seed of its own. Targets: no alert before the "
        "drift (none at all in the control); served accuracy in the last third after the "
        "drift at least 0.95 x the accuracy before it; Eddy's served accuracy over the "
        "whole stream (from the first champion on) at least the best of never retraining, "
        "the online learner alone and a fixed 10 s retraining schedule, replayed on the "
        "same requests.",
        "",
        "| scenario | seed | verdict | false alarms | delay (events) | before | last third "
        "| drift → final champion (s) | Eddy | never | online | schedule | missed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["scenario"],
            r["seed"],
            r["verdict"],
            r["false_alarms"],
            r["delay_events"],
            r["before"],
            r["last_third"],
            r["recovered_in_s"],
            r["eddy"],
            r["never_retrain"],
            r["online_alone"],
            r["fixed_schedule"],
            ", ".join(r["misses"]) or "-",
        ]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    lines += ["", "Scenarios:", ""]
    lines += [
        f"- `{name}`: {describe(name)}" for name in dict.fromkeys(r["scenario"] for r in rows)
    ]
    missed = [r for r in rows if r["misses"]]
    lines += [
        "",
        f"Runs meeting every target: {len(rows) - len(missed)} of {len(rows)}.",
        "",
        *by_scenario(rows),
    ]
    return "\n".join(lines)


def by_scenario(rows: list[dict[str, Any]]) -> list[str]:
    """Per scenario over its seeds: each policy's mean served accuracy over the whole
    stream, and Eddy minus the best baseline run by run (min, median, max; runs below).
    A run's gap mixes the policies' difference with the noise of one 90 s stream; the
    mean over seeds is the scenario's figure."""
    lines = [
        "Per scenario over its seeds (served accuracy over the whole stream: mean of "
        "the seeds; Eddy minus the best baseline of the same run: min / median / max):",
        "",
        "| scenario | seeds | Eddy | never | online | schedule | Eddy - best, per run "
        "| runs below | Eddy's mean ≥ every baseline's mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        runs = [r for r in rows if r["scenario"] == scenario and r["eddy"] is not None]
        if not runs:
            continue
        means = {
            name: statistics.fmean(r[name] for r in runs if r[name] is not None)
            for name in ("eddy", *BASELINES)
        }
        gaps = sorted(r["eddy"] - max(r[name] or 0.0 for name in BASELINES) for r in runs)
        below = sum(1 for gap in gaps if gap < 0)
        meets = all(means["eddy"] >= means[name] for name in BASELINES)
        cells = [
            scenario,
            len(runs),
            *(f"{means[name]:.4f}" for name in ("eddy", *BASELINES)),
            f"{gaps[0]:+.3f} / {statistics.median(gaps):+.3f} / {gaps[-1]:+.3f}",
            below,
            "yes" if meets else "no",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE)
    parser.add_argument("--out", type=Path, default=DOCS)
    parser.add_argument(
        "--from-runs",
        type=Path,
        help="write the report from runs recorded in this runs.jsonl instead of running",
    )
    options = parser.parse_args()
    if options.from_runs:
        recorded = [orjson.loads(line) for line in options.from_runs.read_bytes().splitlines()]
        rows = [row(run) for run in recorded]
        options.out.write_text(render(rows, options))
        print(f"wrote {options.out} from {len(rows)} recorded runs")
        sys.exit(0 if all(not r["misses"] for r in rows) else 1)
    scenarios = [s.strip() for s in options.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    rows = []
    for seed in range(1, options.seeds + 1):
        for scenario in scenarios:
            run = run_one(scenario, seed, options.duration, options.rate)
            rows.append(row(run))
            print(orjson.dumps(rows[-1]).decode(), flush=True)
            (RUNS_DIR / "runs.jsonl").open("ab").write(orjson.dumps(run) + b"\n")
    options.out.write_text(render(rows, options))
    print(f"wrote {options.out}")
    sys.exit(0 if all(not r["misses"] for r in rows) else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
