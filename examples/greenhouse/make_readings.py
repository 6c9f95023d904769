"""Write a CSV of greenhouse readings over the last hour, to replay with
``eddy produce events --csv readings.csv``: your own CSV has the same columns.

    python make_readings.py > readings.csv

A greenhouse is labelled ``true`` (too hot) when it is above 25 degrees; one label in
twenty is wrong, as sensors and people are.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from datetime import UTC, datetime

READINGS = 3000
GREENHOUSES = 6
SPAN_S = 3000.0  # the readings spread over the last 50 minutes
HOT = 25.0
WRONG_LABELS = 0.05
SEED = 7


def main() -> None:
    rng = random.Random(SEED)  # noqa: S311 (sample data, not secrets)
    start = time.time() - SPAN_S
    out = csv.writer(sys.stdout)
    out.writerow(["entity_id", "event_time", "temperature", "humidity", "site", "label"])
    for i in range(READINGS):
        greenhouse = i % GREENHOUSES
        temperature = round(rng.gauss(18 + 2 * greenhouse, 5), 1)
        hot = temperature > HOT
        at = datetime.fromtimestamp(start + i * SPAN_S / READINGS, UTC)
        out.writerow(
            [
                f"gh-{greenhouse}",
                at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                temperature,
                round(min(100.0, max(0.0, rng.gauss(60, 15))), 1),
                "north" if greenhouse % 2 else "south",
                str(hot != (rng.random() < WRONG_LABELS)).lower(),
            ]
        )


if __name__ == "__main__":
    main()
