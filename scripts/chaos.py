"""Eddy's chaos suite: faults under load, and an account of every effect.

    .venv/bin/python scripts/chaos.py --short            # what CI runs (a few minutes)
    .venv/bin/python scripts/chaos.py --record           # full mode, figures into the docs

A private Kafka broker and Redis (``scripts/stack.sh`` on other ports, in a folder of
the run's own) carry a whole deployment (feature worker, learner, retrainer, predictor,
each under Eddy's supervisor) while steady load runs and, scenario by scenario, the
suite SIGKILLs each kind of service, restarts the broker, stops Redis for 30 s, floods
the input with the malformed corpus and makes a retrain outlast the consumer's max poll
interval. After each fault it waits for the system to catch up by itself, then checks
that every event sent is applied or dead-lettered, nothing is counted or learned twice,
every request is answered (repeats identical, within the at-least-once bound) and every
registry version has a cause of its own. It prints a table, optionally writes it as JSON
(``--json``) and into ``docs/reliability.md`` (``--record``), and exits 1 when any
scenario fails. The shared stack on the default ports is never touched.
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
from chaos.report import as_json, details, record, section, table
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
    parser.add_argument("--workdir", type=Path, help="where the run keeps its stack and logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--record", action="store_true", help=f"write the figures into {DOCUMENT.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    mode = SHORT if args.short else FULL
    if args.only:
        unknown = set(args.only) - {s.name for s in mode.scenarios}
        if unknown:
            parser.error(f"no scenario {sorted(unknown)} in {mode.name} mode")
        mode = dataclasses.replace(
            mode, scenarios=tuple(s for s in mode.scenarios if s.name in args.only)
        )
    base = Settings.from_env()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = args.workdir or base.data_dir / "chaos" / f"{mode.name}-{stamp}"
    command = "scripts/chaos.py" + (" --short" if args.short else "")
    outcome = run(base, mode, workdir, args.seed, command, lambda line: print(line, flush=True))
    print()
    print(table(outcome.figures))
    print()
    print(details(outcome.figures))
    print(
        f"\n{'PASS' if outcome.passed else 'FAIL'}: {mode.name} mode in {outcome.runtime_s:.0f} s;"
        f" logs and state in {outcome.workdir}"
    )
    if args.json:
        args.json.write_bytes(
            orjson.dumps(as_json(outcome.header, outcome.figures), option=orjson.OPT_INDENT_2)
        )
    if args.record:
        record(DOCUMENT, section(outcome.header, outcome.figures))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
