"""``eddy backtest``: replay a range of history under candidate policies, report each.

The I/O around :mod:`eddy.services.backtest.timeline` (the timeline) and
:mod:`eddy.services.backtest.replay` (the policies): read one range of ``events`` from Kafka outside
any consumer group, and the ``labels`` that can belong to it (written from the range's first event
until ``EDDY_LABEL_WINDOW_S`` after its last, when a late label's snapshot would have
expired); load the policies from a TOML or JSON file; replay each policy; write the
report as JSON and render a table an operator can read.

A bound is an offset (applied to every partition; ``--to`` is exclusive) or an ISO-8601
time with a zone (the broker's record timestamps, resolved per partition). Without
``--to`` the range ends where the topic ends when the backtest starts; the report names
the offsets read, so a rerun over them replays the same records.

>>> parse_bound("1200"), parse_bound("2026-01-01T00:00:00Z").time.year
(Bound(offset=1200, time=None), 2026)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import TopicPartition

from eddy.services.backtest.replay import (
    DEFAULT_BUCKETS,
    Policy,
    PolicyError,
    policies_from,
    replay,
)
from eddy.services.backtest.timeline import LogRecord, Timeline, build_timeline
from eddy.services.config.settings import Settings
from eddy.services.registry.lineage import iso
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import FeatureSet
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.store.serialization import write_atomically
from eddy.streams.transport.clients import log_offsets, make_consumer
from eddy.streams.transport.topics import Topic, topic_name

log = logging.getLogger(__name__)

POLL_MS = 500
MS = 1000
REPORT_DIR = "backtests"
DIGEST_CHARS = 12


@dataclass(frozen=True)
class Bound:
    """Where a range starts or ends: an offset in every partition, or a time."""

    offset: int | None = None
    time: datetime | None = None


def parse_bound(text: str) -> Bound:
    """An offset (digits) or an ISO-8601 time with a time zone."""
    if text.isdigit():
        return Bound(offset=int(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an offset nor an ISO-8601 time") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or +00:00)")
    return Bound(time=when)


def load_policies(path: Path, settings: Settings, features: FeatureSet) -> list[Policy]:
    """Policies from a ``.toml`` or ``.json`` file (see docs/backtest-policies.example.toml)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    return policies_from(data, settings, features)


@dataclass(frozen=True)
class Read:
    records: list[LogRecord]
    offsets: dict[str, dict[str, int]]  # "topic[partition]" -> {"from", "to"} (exclusive)


def read_range(settings: Settings, topic: str, start: Bound | None, end: Bound | None) -> Read:
    """The records of ``topic`` in [start, end) of every partition."""
    consumer = make_consumer(settings, group_id=None)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist on the broker")
        first = log_offsets(consumer, partitions, end=False)
        last = log_offsets(consumer, partitions)
        begin = _resolve(consumer, start, first, first, last)
        stop = _resolve(consumer, end, last, first, last)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, begin[tp])
        records: list[LogRecord] = []
        while any(consumer.position(tp) < stop[tp] for tp in partitions):
            for tp_records in consumer.poll(timeout_ms=POLL_MS).values():
                records += [
                    LogRecord(RawRecord.of(r), r.timestamp / MS)
                    for r in tp_records
                    if begin[TopicPartition(r.topic, r.partition)]
                    <= r.offset
                    < stop[TopicPartition(r.topic, r.partition)]
                ]
        offsets = {
            f"{tp.topic}[{tp.partition}]": {"from": begin[tp], "to": max(begin[tp], stop[tp])}
            for tp in partitions
        }
        return Read(records, offsets)
    finally:
        consumer.close()


def _resolve(
    consumer: Any,
    bound: Bound | None,
    default: Mapping[TopicPartition, int],
    first: Mapping[TopicPartition, int],
    last: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Per partition, the offset a bound names, within what the log holds."""
    if bound is None:
        return dict(default)
    if bound.time is None:
        offset = bound.offset or 0
        return {tp: min(max(offset, first[tp]), last[tp]) for tp in last}
    at_ms = int(bound.time.timestamp() * MS)
    found = consumer.offsets_for_times(dict.fromkeys(last, at_ms))
    return {tp: last[tp] if found.get(tp) is None else found[tp].offset for tp in last}


def run_backtest(
    settings: Settings,
    policy_file: Path,
    *,
    features: FeatureSet,
    schema: RawSchema | None,
    start: Bound | None = None,
    end: Bound | None = None,
    out: Path | None = None,
    buckets: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """Replay every policy of ``policy_file`` over the range, through the deployment's
    ``features`` and raw fields ``schema`` (None: any); the report and its path
    (``out``, or one under ``<data>/backtests/`` named after the range and policies).
    ``buckets``: spans of event time for accuracy over time (default
    :data:`~eddy.services.backtest.replay.DEFAULT_BUCKETS`)."""
    started = time.process_time()
    policies = load_policies(policy_file, settings, features)
    prefix = settings.topic_prefix
    events_topic = topic_name(Topic.EVENTS, prefix)
    labels_topic = topic_name(Topic.LABELS, prefix)
    events = read_range(settings, events_topic, start, end)
    labels = _labels_for(settings, labels_topic, events.records)
    timeline = build_timeline(
        events.records,
        labels.records,
        features,
        schema,
        max_future=timedelta(seconds=settings.max_event_time_skew_s),
        label_window_s=settings.label_window_s,
    )
    results = []
    for policy in policies:
        result = replay(timeline, policy, buckets or DEFAULT_BUCKETS)
        results.append(result)
        log.info(
            "backtest policy replayed",
            extra={
                "policy": policy.name,
                "model": policy.learner.model,
                "score": result["score"],
                "alerts": result["alerts_by_kind"],
                "retrains": result["retrains_by_action"],
            },
        )
    report = {
        "range": {"events": events.offsets, "labels": labels.offsets},
        "feature_set": features.fingerprint(),
        "timeline": _timeline_summary(timeline),
        "policies": results,
        "compute": {"cpu_seconds": round(time.process_time() - started, 3)},
    }
    path = out or _default_path(settings, report)
    write_atomically(path, orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return report, path


def _labels_for(settings: Settings, topic: str, events: Sequence[LogRecord]) -> Read:
    """Labels written from the first event of the range until a late label for its last
    event could still be joined."""
    if not events:
        return Read([], {})
    stamps = [record.timestamp for record in events]
    first = datetime.fromtimestamp(min(stamps), UTC)
    last = datetime.fromtimestamp(max(stamps) + settings.label_window_s, UTC)
    return read_range(settings, topic, Bound(time=first), Bound(time=last))


def _timeline_summary(timeline: Timeline) -> dict[str, Any]:
    span = timeline.span
    return {
        "counts": dict(sorted(timeline.counts.items())),
        "from": iso(span[0]) if span else None,
        "to": iso(span[1]) if span else None,
    }


def _default_path(settings: Settings, report: dict[str, Any]) -> Path:
    """Named after what was replayed (range and policies): a rerun overwrites its file."""
    replayed = {"range": report["range"], "policies": [p["policy"] for p in report["policies"]]}
    digest = hashlib.sha256(orjson.dumps(replayed, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return settings.data_dir / REPORT_DIR / f"backtest-{digest[:DIGEST_CHARS]}.json"


def render(report: dict[str, Any]) -> str:
    """The report as two plain-text tables: one line per policy, then served accuracy
    (or MAE) over time per policy, ``*`` where a promoted model took over."""
    policies = report["policies"]
    head = f"{'policy':20} {'alerts c/d/p':>12} {'retrains':>8} {'promoted':>8} {'score':>8} "
    head += f"{'learned':>8} {'fits':>5} {'rows fit':>9} {'cpu s':>7}"
    lines = [head]
    for p in policies:
        kinds = p["alerts_by_kind"]
        alerts = "/".join(str(kinds.get(k, 0)) for k in ("concept", "data", "prediction"))
        work = p["work"]
        lines.append(
            f"{p['policy']['name'][:20]:20} {alerts:>12} {len(p['retrains']):>8} "
            f"{p['retrains_by_action'].get('promote', 0):>8} {_number(p['score']['value']):>8} "
            f"{work['examples_learned']:>8} {work['models_fitted']:>5} "
            f"{work['rows_fitted']:>9} {p['compute']['cpu_seconds']:>7.2f}"
        )
    if policies and policies[0]["accuracy_over_time"]:
        metric = policies[0]["score"]["metric"]
        lines += ["", f"{metric} of served answers by event time"]
        lines.append(f"{'from':32}" + "".join(f" {p['policy']['name'][:12]:>12}" for p in policies))
        for i, bucket in enumerate(policies[0]["accuracy_over_time"]):
            cells = [_cell(p, i) for p in policies]
            lines.append(f"{bucket['from']:32}" + "".join(f" {c:>12}" for c in cells))
    return "\n".join(lines)


def _cell(policy: dict[str, Any], i: int) -> str:
    bucket = policy["accuracy_over_time"][i]
    took_over = any(bucket["from"] <= c["from"] < bucket["to"] for c in policy["champions"][1:])
    return _number(bucket["value"]) + ("*" if took_over else "")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
