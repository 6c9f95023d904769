"""Eddy's chaos suite: faults under load, and an account of every effect.

    .venv/bin/python scripts/chaos.py --short            # what CI runs (a few minutes)
    .venv/bin/python scripts/chaos.py --record           # full mode, figures into the docs
    .venv/bin/python scripts/chaos.py --cluster          # the full mode's cluster phase only

A private Kafka broker and Redis (``scripts/stack.sh`` on other ports, in a folder of
the run's own) carry a whole deployment (feature worker, learner, retrainer, predictor,
each under Eddy's supervisor) while steady load runs and, scenario by scenario, the
suite SIGKILLs each kind of service, restarts the broker, stops Redis for 30 s, floods
the input with the malformed corpus and makes a retrain outlast the consumer's max poll
interval. The full mode then plays a second phase on a private clustered stack (three
KRaft brokers, a Redis Cluster of three masters and three replicas) with a deployment of
its own: a control row, ``kill -9`` of the broker leading most ``events`` partitions,
and ``kill -9`` of the Redis master serving most of the scenario's feature keys, each
node kept down and started again. After each fault it waits for the system to catch up
by itself, then checks that every event sent is applied or dead-lettered, nothing is
counted or learned twice, every request is answered (repeats identical, within the
at-least-once bound) and every registry version has a cause of its own. It prints a
table, optionally writes it as JSON (``--json``) and into ``docs/reliability.md``
(``--record``), and exits 1 when any scenario fails. The shared stacks on the default
ports are never touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

import orjson
from chaos.plan import FULL, SHORT
from chaos.report import TITLES, as_json, details, record, section, table
from chaos.run import run

from eddy.services.config.settings import Settings

DOCUMENT = ROOT / "docs" / "reliability.md"


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: the private stack and services are stopped."""
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the short mode CI runs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only", action="append", metavar="SCENARIO", help="play only this scenario (repeatable)"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="play only the full mode's cluster phase"
    )
    parser.add_argument("--workdir", type=Path, help="where the run keeps its stack and logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--record", action="store_true", help=f"write the figures into {DOCUMENT.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    mode = SHORT if args.short else FULL
    if args.cluster:
        if not mode.cluster_scenarios:
            parser.error(f"{mode.name} mode has no cluster phase")
        mode = dataclasses.replace(mode, scenarios=())
    if args.only:
        unknown = set(args.only) - mode.names()
        if unknown:
            parser.error(f"no scenario {sorted(unknown)} in {mode.name} mode")
        mode = mode.only(set(args.only))
    base = Settings.from_env()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = args.workdir or base.data_dir / "chaos" / f"{mode.name}-{stamp}"
    command = "scripts/chaos.py" + (" --short" if args.short else "")
    command += " --cluster" if args.cluster else ""
    command += "".join(f" --only {name}" for name in args.only or ())
    command += f" --seed {args.seed}" if args.seed != parser.get_default("seed") else ""
    outcome = run(base, mode, workdir, args.seed, command, lambda line: print(line, flush=True))
    for phase in outcome.phases:
        print(f"\nOn {TITLES[phase.name]} ({phase.stack}):\n")
        print(table(phase.figures))
        print()
        print(details(phase.figures))
    print(
        f"\n{'PASS' if outcome.passed else 'FAIL'}: {mode.name} mode in {outcome.runtime_s:.0f} s;"
        f" logs and state in {outcome.workdir}"
    )
    if args.json:
        args.json.write_bytes(
            orjson.dumps(as_json(outcome.header, outcome.phases), option=orjson.OPT_INDENT_2)
        )
    if args.record:
        # Each phase rewrites its own figures: a --cluster run keeps the single stack's.
        for phase in outcome.phases:
            record(DOCUMENT, section(outcome.header, phase), phase.name)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
