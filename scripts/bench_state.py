"""What an entity's state costs per event as it deepens: folding, reading, writing.

    .venv/bin/python scripts/bench_state.py [--events 2000] [--runs 3]

The feature benchmark's stream puts each entity's events within one second, so every
state holds one bucket per source. A live entity's events spread over time: with
Eddy's default :data:`~eddy.streams.features.definitions.FEATURES` (an hour's window in
one-minute steps, a day's window of countries, an hour of allowed lateness), an entity
with an event a minute keeps 121 one-minute buckets of ``amount`` and an hour of event
ids. Pure CPU, no Kafka or Redis:
per depth (events per entity per hour), one entity is brought to its steady state
(events at that pace over the longest time a state keeps anything), then ``--events``
more events continue the stream and each is timed through what the services do with it:

- **fold**: :func:`~eddy.streams.features.compute.apply_event` (the feature worker);
- **vector**: :func:`~eddy.streams.features.compute.feature_vector` as of the event
  (a training example or snapshot per event in the worker; every request in the
  predictor);
- **write**: :func:`~eddy.streams.features.compute.encode_state` after the event (the
  worker writes each changed state once per batch; the buckets the event did not touch
  keep their encoding from the previous write, as in the worker's state cache);
- **read**: :func:`~eddy.streams.features.compute.decode_state` of those bytes (the
  predictor, for every request; the worker when its state cache misses).

The bare floor of each codec in the same run: ``orjson.dumps`` of the state as the
plain document it is stored as (write), ``orjson.loads`` of the same bytes (read). A
ratio is Eddy's cost over that floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eddy.streams.features.compute import (
    EntityState,
    FeatureValue,
    apply_event,
    decode_state,
    encode_state,
    feature_vector,
)
from eddy.streams.features.definitions import FEATURES, HOUR

# Events per entity per hour: an event every 2.4 minutes, every minute, every 6 seconds,
# every second.
DEPTHS = (25, 60, 600, 3600)
STEPS = ("fold", "vector", "write", "read", "bare_write", "bare_read")
START = 1_800_000_000.0  # any fixed time: the runs are reproducible
T = TypeVar("T")


@dataclass(frozen=True)
class Costs:
    """Microseconds per event of each step (medians over the events), the state's size."""

    micros: dict[str, float]
    state_bytes: int


def _raw(i: int) -> dict[str, FeatureValue]:
    return {"amount": (i * 7919) % 10_000 / 10, "country": ("NL", "DE", "FR", "BE")[i % 4]}


def _timed(step: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Microseconds that ``step(*args, **kwargs)`` took, and what it returned."""
    started = time.perf_counter_ns()
    result = step(*args, **kwargs)
    return (time.perf_counter_ns() - started) / 1000, result


def depth_costs(per_hour: int, events: int) -> Costs:
    """One entity at this pace: events over the longest time any state keeps (its steady
    state), then ``events`` more, each timed through every step."""
    state = EntityState()
    spacing_s = HOUR / per_hour
    warm = round(FEATURES.horizon_s / spacing_s)
    for i in range(warm):
        apply_event(state, FEATURES, f"ev-{i}", START + i * spacing_s, _raw(i))
    timings: dict[str, list[float]] = {step: [] for step in STEPS}
    size = 0
    for i in range(warm, warm + events):
        at = START + i * spacing_s
        raw = _raw(i)
        steps: dict[str, float] = {}
        steps["fold"], _ = _timed(apply_event, state, FEATURES, f"ev-{i}", at, raw)
        steps["vector"], _ = _timed(feature_vector, state, FEATURES, at, raw=raw)
        steps["write"], encoded = _timed(encode_state, state)  # the batch's write
        steps["read"], _ = _timed(decode_state, encoded)
        steps["bare_read"], document = _timed(orjson.loads, encoded)
        steps["bare_write"], _ = _timed(orjson.dumps, document, option=orjson.OPT_SORT_KEYS)
        for step, micros in steps.items():
            timings[step].append(micros)
        size = len(encoded)
    return Costs({step: statistics.median(t) for step, t in timings.items()}, size)


def measure(events: int) -> dict[int, Costs]:
    """Every depth, once."""
    return {per_hour: depth_costs(per_hour, events) for per_hour in DEPTHS}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000, help="timed events per depth")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [measure(args.events) for _ in range(args.runs)]
    print(f"µs per event, median of {args.runs} runs (each the median of its events)")
    print(f"{'events an hour':>14} " + " ".join(f"{s:>10}" for s in STEPS) + "      bytes")
    for per_hour in DEPTHS:
        cells = [statistics.median(r[per_hour].micros[s] for r in runs) for s in STEPS]
        size = runs[-1][per_hour].state_bytes
        print(f"{per_hour:14,} " + " ".join(f"{c:10.1f}" for c in cells) + f" {size:10,}")


if __name__ == "__main__":
    main()
