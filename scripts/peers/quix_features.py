"""The Quix Streams peer of Eddy's feature worker, measured by scripts/bench_features.py.

    .eddy/peers-venv/bin/python scripts/peers/quix_features.py --topic T --group G

It computes Eddy's default features (``eddy/streams/features/definitions.py``) the way
Quix Streams' documentation writes windowed aggregations, so that the benchmark compares
Eddy with what a team would write in Quix instead: a ``StreamingDataFrame`` over the
events, keyed by entity (the Kafka key), on event time (the events' ``event_time``) with
one hour of grace, Eddy's allowed lateness. A stateful step first keeps each entity's
newest event time: it refuses an event older than that by more than the lateness, as
Eddy does (Quix's grace is per window, so it would take some of them), and gives each
event its seconds since the entity's previous one. Then:

- a 1-hour tumbling window: count, sum, mean, min, max, std (population, as Eddy's) and
  last ``amount``, and the newest event's seconds since the previous one;
- a 10-minute window hopping every minute: count, sum, mean of ``amount``. Each event
  updates the ten windows that hold it; the one kept is the one ending right after the
  entity's newest event, the window Eddy serves as of that event;
- a 1-day tumbling window: distinct ``country`` values;
- ``amount_vs_hourly_mean``: the last amount over the hour's mean.

Windows emit on every update (``.current()``); the three results are merged per entity
in state, each window's result kept unless an older window's (a late event's) comes
after it, so the features stay as of the entity's newest event as Eddy serves them, and
written by Quix's ``RedisSink``, which batches them per partition and writes
each batch in one Redis transaction at every checkpoint, under
``<prefix>quix:{<entity>}`` as JSON. Checkpoints come every second, like Eddy's faust
workers commit, at least once; offsets are committed to Kafka under ``--group`` after the
sink's write, which is what the benchmark's rate reads.

quixstreams needs another pydantic than the one Eddy pins, so this runs in a virtualenv
of its own (``requirements-quix.txt``) and imports nothing from Eddy: the deployment
comes from the ``EDDY_*`` variables every Eddy service reads (broker, Redis, topic
prefix, data folder, log level).
"""

from __future__ import annotations

import argparse
import math
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from quixstreams import Application, State
from quixstreams.dataframe.windows import Aggregator, Count, Latest, Max, Mean, Min, Sum
from quixstreams.models.timestamps import TimestampType
from quixstreams.sinks.community.redis import RedisSink

GRACE = timedelta(hours=1)  # Eddy's allowed_lateness_s
GRACE_MS = GRACE // timedelta(milliseconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
RECENT_SIZE = timedelta(minutes=10)
RECENT_STEP = timedelta(minutes=1)
STEP_MS = RECENT_STEP // timedelta(milliseconds=1)
RECENT = "10m_every_1m"
COMMIT_INTERVAL_S = 1.0  # Eddy's faust workers commit every second too


class Std(Aggregator):
    """Population standard deviation (Eddy's ``std``), by Welford's running update:
    ``[count, mean, sum of squared deviations]``, a JSON list as Quix's state needs."""

    def initialize(self) -> list[float]:
        return [0, 0.0, 0.0]

    def agg(self, old: list[float], new: Any, timestamp: int) -> list[float]:
        value = new.get(self.column)
        if value is None:
            return old
        count, mean, squares = old
        count += 1
        delta = value - mean
        mean += delta / count
        return [count, mean, squares + delta * (value - mean)]

    def result(self, value: list[float]) -> float | None:
        count, _, squares = value
        return math.sqrt(squares / count) if count else None


class Distinct(Aggregator):
    """How many distinct values the column took: the values kept as a sorted list."""

    def initialize(self) -> list[Any]:
        return []

    def agg(self, old: list[Any], new: Any, timestamp: int) -> list[Any]:
        value = new.get(self.column)
        return old if value is None or value in old else sorted([*old, value])

    def result(self, value: list[Any]) -> int:
        return len(value)


def event_time_ms(value: Any, headers: Any, timestamp: int, timestamp_type: TimestampType) -> int:
    """Windows run on the event's own time, not the Kafka record's."""
    return int(datetime.fromisoformat(value["event_time"]).timestamp() * 1000)


def admit(event: dict[str, Any], key: str, timestamp: int, headers: Any, state: State) -> Any:
    """The raw values the windows need and the seconds since the entity's previous event
    (None for its first, or for an event older than its newest); None for an event older
    than the entity's newest by more than the allowed lateness, which Eddy refuses."""
    newest = state.get("newest")
    if newest is not None and timestamp < newest - GRACE_MS:
        return None
    state.set("newest", timestamp if newest is None else max(newest, timestamp))
    gap = None if newest is None or timestamp < newest else (timestamp - newest) / 1000
    features = event["features"]
    return {
        "amount": features.get("amount"),
        "country": features.get("country"),
        "gap": gap,
        "time": timestamp,
    }


def hourly_ratio(window: dict[str, Any]) -> float | None:
    last, mean = window["amount_last_1h"], window["amount_mean_1h"]
    return None if last is None or not mean else last / mean


def trailing(window: dict[str, Any]) -> bool:
    """Whether this hopping window is the one ending right after its newest event."""
    return bool(window["end"] - STEP_MS <= window["newest"])


def merge(window: dict[str, Any], state: State) -> dict[str, Any]:
    """The entity's features, kept in state: every window's latest result, unless it is
    an older window than the one kept for its size (a late event's), which would set
    them back from the entity's newest event."""
    start = window.pop("start")
    size = str(window.pop("end") - start)
    starts: dict[str, int] = state.get("starts") or {}
    features: dict[str, Any] = state.get("features") or {}
    if start >= starts.get(size, start):
        starts[size] = start
        features.update(window)
        state.set("starts", starts)
        state.set("features", features)
    return features


def redis_sink(url: str, prefix: str) -> RedisSink:
    """Quix's Redis sink on Eddy's Redis: the URL, and the password and TLS CA the way
    Eddy's settings give them (``EDDY_REDIS_PASSWORD`` wins over the URL's)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise SystemExit(f"unsupported Redis URL scheme {parts.scheme!r}")
    tls: dict[str, Any] = {"ssl": True} if parts.scheme == "rediss" else {}
    if tls and os.environ.get("EDDY_REDIS_SSL_CA_CERTS"):
        tls["ssl_ca_certs"] = os.environ["EDDY_REDIS_SSL_CA_CERTS"]
    password = os.environ.get("EDDY_REDIS_PASSWORD") or unquote(parts.password or "") or None
    return RedisSink(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(parts.path.lstrip("/") or 0),
        password=password,
        key_serializer=lambda key, value: f"{prefix}quix:{{{key}}}",
        username=unquote(parts.username) if parts.username else None,
        **tls,
    )


def build(app: Application, topic: str, prefix: str, redis_url: str) -> None:
    events = app.topic(
        topic, key_deserializer="str", value_deserializer="json", timestamp_extractor=event_time_ms
    )
    sdf = app.dataframe(events).apply(admit, stateful=True, metadata=True)
    sdf = sdf.filter(lambda value: value is not None)
    hourly = (
        sdf.tumbling_window(HOUR, grace_ms=GRACE)
        .agg(
            amount_count_1h=Count("amount"),
            amount_sum_1h=Sum("amount"),
            amount_mean_1h=Mean("amount"),
            amount_min_1h=Min("amount"),
            amount_max_1h=Max("amount"),
            amount_std_1h=Std("amount"),
            amount_last_1h=Latest("amount"),
            seconds_since_last_event=Latest("gap"),
        )
        .current()
    )
    hourly["amount_vs_hourly_mean"] = hourly.apply(hourly_ratio)
    recent = (
        sdf.hopping_window(RECENT_SIZE, RECENT_STEP, grace_ms=GRACE)
        .agg(
            **{
                f"amount_count_{RECENT}": Count("amount"),
                f"amount_sum_{RECENT}": Sum("amount"),
                f"amount_mean_{RECENT}": Mean("amount"),
            },
            newest=Max("time"),
        )
        .current()
        .filter(trailing)
        .drop("newest")
    )
    daily = (
        sdf.tumbling_window(DAY, grace_ms=GRACE)
        .agg(country_distinct_1d=Distinct("country"))
        .current()
    )
    features = hourly.concat(recent).concat(daily).apply(merge, stateful=True)
    features.sink(redis_sink(redis_url, prefix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", required=True, help="the events topic")
    parser.add_argument("--group", required=True, help="the consumer group")
    args = parser.parse_args()
    protocol = os.environ.get("EDDY_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if protocol != "PLAINTEXT":
        raise SystemExit(f"the Quix peer talks to a plaintext broker only, not {protocol}")
    prefix = os.environ["EDDY_TOPIC_PREFIX"]
    app = Application(
        broker_address=os.environ["EDDY_KAFKA_BOOTSTRAP"],
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_S,
        processing_guarantee="at-least-once",
        state_dir=Path(os.environ["EDDY_DATA_DIR"]) / "quix-state",
        loglevel=os.environ.get("EDDY_LOG_LEVEL", "INFO"),
    )
    build(app, args.topic, prefix, os.environ["EDDY_REDIS_URL"])
    app.run()


if __name__ == "__main__":
    main()
