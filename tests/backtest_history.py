"""The history that the backtest tests replay, and what they compare reports with.

River's STAGGER stream switching concept halfway (as in ``eddy demo``): every other
event carries its label, the others get theirs late on ``labels``. The unit tests
replay it from memory, the integration test from Kafka; so it lives here, not in either
test module: a test module imports no other test module.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from eddy.services.demo.scenarios import scenario_stream
from eddy.streams.messages.contracts import Event, Label

COUNT = 3000
DRIFT_AT = 1500
STEP_S = 0.1
LABEL_DELAY_S = 5.0
ENTITIES = 20
KIND = "hoeffding_adaptive_tree"
RETRAIN_ON_CONCEPT: dict[str, Any] = {
    "name": "retrain-on-concept",
    "learner": {"kind": KIND},
    "retrain": {"on": ["concept"], "window": 200, "min_holdout": 30, "debounce_s": 16},
}
NEVER: dict[str, Any] = {
    "name": "never-retrain",
    "learner": {"kind": KIND},
    "retrain": {"enabled": False},
}


def history(
    start: datetime, count: int = COUNT, drift_at: int = DRIFT_AT
) -> list[tuple[Event, Label | None]]:
    """Events ``STEP_S`` apart, concept 0 then 2 at ``drift_at``; odd events' labels
    come ``LABEL_DELAY_S`` late on ``labels``."""
    rows: list[tuple[Event, Label | None]] = []
    for i, (x, y) in enumerate(scenario_stream("stagger", count, drift_at, seed=7)):
        at = start + timedelta(seconds=i * STEP_S)
        entity = f"u{i % ENTITIES}"
        own = i % 2 == 0
        event = Event(
            event_id=f"e{i}",
            entity_id=entity,
            event_time=at,
            features=x,
            label=y if own else None,
        )
        late = Label(
            event_id=f"e{i}",
            entity_id=entity,
            label=y,
            event_time=at + timedelta(seconds=LABEL_DELAY_S),
        )
        rows.append((event, None if own else late))
    return rows


def deterministic(report: dict[str, Any]) -> dict[str, Any]:
    """A policy's report but for its compute figures (CPU seconds differ run to run)."""
    return {k: v for k, v in report.items() if k != "compute"}


def score_since(report: dict[str, Any], since: datetime) -> float:
    """Served accuracy over the buckets starting at or after ``since``."""
    buckets = [
        b
        for b in report["accuracy_over_time"]
        if datetime.fromisoformat(b["from"]) >= since and b["scored"]
    ]
    right = sum(b["value"] * b["scored"] for b in buckets)
    return float(right / sum(b["scored"] for b in buckets))
