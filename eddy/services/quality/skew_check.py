"""``eddy skew check``: the training-serving skew check, wired to Redis and Kafka.

The judging is :mod:`eddy.streams.features.skew`; this module only moves data:

1. sample up to ``EDDY_SKEW_SAMPLE`` logged prediction requests: ``SCAN`` the request
   log (``<prefix>request:{id}``, a bounded number of keys) for their ids, then read
   each one's snapshot (what the predictor used, and when) and its logged input (the
   request's own features). SCAN visits keys in hash-table order, so the sample is
   spread over the whole log rather than its newest entries. Requests without a
   snapshot (invalid ones, or older than ``EDDY_LABEL_WINDOW_S``) and inputs cut short
   by ``EDDY_REQUEST_LOG_INPUT_BYTES`` are skipped and counted;
2. read the sampled entities' events from the ``events`` topic, outside any consumer
   group, from the earliest history any request needs to the first record appended
   after the latest serving time (plus the read slack), found with
   ``offsets_for_times`` on both ends; the same look-ups per serving time give each
   request's cut-off and in-flight offsets;
3. judge every request, rank the skewed features and, when there are any, publish a
   ``skew`` alert on ``drift-alerts`` (keyed by model) and log the examples.

A request whose history may have been deleted by the topic's retention (the partition
no longer starts at offset 0 and its first retained record is not older than the
history needed) is skipped as ``history_expired`` rather than judged on partial data.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from kafka import TopicPartition
from redis.cluster import RedisCluster

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.project.applied import AppliedStore
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.dead_letters.policy import Action, action_for
from eddy.streams.features.compute import FeatureSet
from eddy.streams.features.skew import (
    APPLY_ALLOWANCE_S,
    READ_SLACK_S,
    History,
    LoggedEvent,
    RequestCheck,
    Served,
    SkewReport,
    check_request,
    history_start,
    skew_alert,
    summarize,
)
from eddy.streams.messages.contracts import DriftAlert, DriftWindow, PredictionRequest
from eddy.streams.messages.validation import InvalidMessage, decode, encode
from eddy.streams.store import keys
from eddy.streams.store.redis_commands import RedisClient, multi_get
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import log_offsets, make_consumer, make_producer, make_redis
from eddy.streams.transport.topics import Topic, message_key, spec_for

log = logging.getLogger(__name__)

SCAN_COUNT = 500
# Request-log keys read per wanted request at most: a log of mostly invalid or expired
# requests ends the search early...
SCAN_LIMIT_FACTOR = 20
# ...and so does a keyspace much larger than the log: at most this many SCAN calls
# (about SCAN_COUNT keys visited each).
MAX_SCAN_CALLS = 1000
POLL_MS = 200
READ_DEADLINE_S = 120.0
SEND_TIMEOUT_S = 30.0
MS_PER_S = 1000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True)
class SkewCheck:
    report: SkewReport
    alert: DriftAlert | None


def run_check(settings: Settings, fs: FeatureSet, *, publish: bool = True) -> SkewCheck:
    """One check over a fresh sample, recomputing the deployment's features ``fs``;
    publishes the alert unless ``publish`` is False."""
    client = make_redis(settings)
    try:
        served, skipped = sample_requests(client, settings)
    finally:
        client.close()
    served = _under_these_definitions(settings, fs, served, skipped)
    histories, window = read_histories(settings, served, fs)
    max_future = timedelta(seconds=settings.max_event_time_skew_s)
    checks: list[RequestCheck] = []
    for request in served:
        history = histories.get(request.request_id)
        if history is None:
            skipped["history_expired"] += 1
            continue
        checks.append(check_request(request, history, fs, settings.skew_tolerance, max_future))
    report = summarize(checks, skipped, window)
    alert = skew_alert(
        report,
        model=settings.model_name,
        tolerance=settings.skew_tolerance,
        detected_at=datetime.now(UTC),
    )
    if alert is not None and publish:
        _publish(settings, alert)
    _log(report, alert)
    return SkewCheck(report, alert)


def _under_these_definitions(
    settings: Settings, fs: FeatureSet, served: list[Served], skipped: Counter[str]
) -> list[Served]:
    """``served`` without the answers computed, before the project's revision in force
    was applied, with the definitions it replaced (``eddy apply``): those were right
    under their own definitions. An answer with another fingerprint since then, or
    without a project, is checked: serving with other definitions is skew."""
    applied = AppliedStore(settings.data_dir).current()
    if applied is None:
        return served
    kept = []
    for request in served:
        if request.feature_set not in (None, fs.fingerprint()) and request.at < applied.applied_at:
            skipped["before_the_applied_revision"] += 1
        else:
            kept.append(request)
    return kept


def run_scheduled(settings: Settings, stop: threading.Event, fs: FeatureSet) -> None:
    """Run the check every ``EDDY_SKEW_EVERY_S`` until ``stop`` is set (0: return at once).

    An outage of Kafka or Redis skips that round (the next one starts afresh); any other
    failure is a bug and is raised, as :mod:`eddy.streams.dead_letters.policy` prescribes.
    """
    every = settings.skew_every_s
    if every <= 0:
        log.info("skew check runs on demand only", extra={"skew_every_s": every})
        return
    while not stop.wait(every):
        try:
            run_check(settings, fs)
        except Exception as exc:
            if action_for(exc) is not Action.RETRY:
                raise
            log.warning("skew check skipped: outage", extra={"error": repr(exc)})


def sample_requests(client: RedisClient, settings: Settings) -> tuple[list[Served], Counter[str]]:
    """Up to ``skew_sample`` logged requests that have a snapshot, and why others were not."""
    wanted = settings.skew_sample
    pattern = keys.request_log(_GLOB_SPECIAL.sub(r"\\\1", settings.topic_prefix), "*")
    snapshots = SnapshotStore(client, settings.topic_prefix, settings.label_window_s)
    found: dict[str, Served] = {}
    skipped: Counter[str] = Counter()
    scanned = 0
    for found_keys in itertools.islice(_scan_pages(client, pattern), MAX_SCAN_CALLS):
        scanned += len(found_keys)
        for served in _served(client, snapshots, found_keys, skipped):
            found.setdefault(served.request_id, served)
        if len(found) >= wanted or scanned >= wanted * SCAN_LIMIT_FACTOR:
            break
    return list(found.values())[:wanted], skipped


def _scan_pages(client: RedisClient, pattern: str) -> Iterator[list[Any]]:
    """The keys matching ``pattern``, one page per ``SCAN`` call; on a cluster, master
    after master."""
    if not isinstance(client, RedisCluster):
        cursor = None
        while cursor != 0:
            cursor, page = client.scan(cursor=cursor or 0, match=pattern, count=SCAN_COUNT)
            yield page
        return
    cluster: Any = client  # its scan answers per node: ({node: cursor}, keys)
    for node in cluster.get_primaries():
        cursor = None
        while cursor != 0:
            cursors, page = cluster.scan(
                cursor=cursor or 0, match=pattern, count=SCAN_COUNT, target_nodes=node
            )
            cursor = cursors[node.name]
            yield page


def _served(
    client: RedisClient, snapshots: SnapshotStore, keys: Sequence[Any], skipped: Counter[str]
) -> Iterator[Served]:
    if not keys:
        return
    entries: list[dict[str, Any]] = [orjson.loads(raw) for raw in multi_get(client, keys) if raw]
    seen = snapshots.fetch(entry["request_id"] for entry in entries)
    for entry in entries:
        snapshot = seen.get(entry["request_id"])
        if snapshot is None:
            skipped["no_snapshot"] += 1
            continue
        try:
            request = decode(PredictionRequest, str(entry.get("input", "")).encode())
        except InvalidMessage:
            skipped["unreadable_input"] += 1
            continue
        if request.request_id != entry["request_id"] or request.entity_id != snapshot.entity_id:
            skipped["snapshot_of_something_else"] += 1
            continue
        output = entry.get("output") or {}
        yield Served(
            request_id=request.request_id,
            entity_id=request.entity_id,
            at=snapshot.at,
            features=snapshot.features,
            raw=dict(request.features),
            model_version=output.get("model_version"),
            feature_set=output.get("feature_set"),
        )


def read_histories(
    settings: Settings, served: Sequence[Served], fs: FeatureSet
) -> tuple[dict[str, History], DriftWindow]:
    """Each request's :class:`History` (absent: possibly cut by retention) and the
    offsets read."""
    if not served:
        return {}, DriftWindow()
    topic = spec_for(Topic.EVENTS, prefix=settings.topic_prefix, partitions=settings.partitions)
    consumer = make_consumer(settings, group_id=None, max_poll_records=settings.feature_batch_size)
    try:
        partitions = [
            TopicPartition(topic.name, p)
            for p in sorted(consumer.partitions_for_topic(topic.name) or ())
        ]
        if not partitions:
            raise LookupError(f"topic {topic.name!r} does not exist on the broker")
        marks = _Marks(consumer, partitions, settings, fs, {s.at for s in served})
        ranges = {
            tp: (
                min(m.start[tp] for m in marks.at.values()),
                max(m.cut[tp] for m in marks.at.values()),
            )
            for tp in partitions
        }
        ranges = {tp: (lo, hi) for tp, (lo, hi) in ranges.items() if hi > lo}
        events = _read(consumer, ranges, {s.entity_id.encode() for s in served})
    finally:
        consumer.close()
    histories = {}
    for request in served:
        mark = marks.at[request.at]
        history = mark.history(events.get(request.entity_id.encode(), []))
        if history is not None:
            histories[request.request_id] = history
    ats = [s.at for s in served]
    window = DriftWindow(
        offsets={f"{tp.topic}[{tp.partition}]": (lo, hi - 1) for tp, (lo, hi) in ranges.items()},
        times=(datetime.fromtimestamp(min(ats), UTC), datetime.fromtimestamp(max(ats), UTC)),
    )
    return histories, window


@dataclass(frozen=True)
class _Mark:
    """Per partition, for one serving time: where its history starts, the first record
    that may still have been in flight, and the first appended after serving."""

    start: dict[TopicPartition, int]
    settle: dict[TopicPartition, int]
    cut: dict[TopicPartition, int]
    expired: frozenset[TopicPartition]

    def history(self, events: Sequence[LoggedEvent]) -> History | None:
        before = [e for e in events if e.record.offset < self.cut[_where(e)]]
        where = {_where(e) for e in events} or set(self.cut)
        if where & self.expired:
            return None
        settled = next(
            (i for i, e in enumerate(before) if e.record.offset >= self.settle[_where(e)]),
            len(before),
        )
        return History(tuple(before), settled)


class _Marks:
    """The broker's time index, asked once per distinct serving time."""

    def __init__(
        self,
        consumer: Any,
        partitions: list[TopicPartition],
        settings: Settings,
        fs: FeatureSet,
        ats: Iterable[float],
    ) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self._end = log_offsets(consumer, partitions)
        begin = log_offsets(consumer, partitions, end=False)
        self.at: dict[float, _Mark] = {}
        for at in ats:
            start = self._first_at_or_after(
                int(history_start(at, fs, settings.max_event_time_skew_s) * MS_PER_S)
            )
            self.at[at] = _Mark(
                start=start,
                settle=self._first_at_or_after(int((at - APPLY_ALLOWANCE_S) * MS_PER_S) + 1),
                cut=self._first_at_or_after(int((at + READ_SLACK_S) * MS_PER_S) + 1),
                expired=frozenset(tp for tp in partitions if 0 < begin[tp] == start[tp]),
            )

    def _first_at_or_after(self, timestamp_ms: int) -> dict[TopicPartition, int]:
        found = self._consumer.offsets_for_times({tp: timestamp_ms for tp in self._partitions})
        return {
            tp: found[tp].offset if found.get(tp) is not None else self._end[tp]
            for tp in self._partitions
        }


def _read(
    consumer: Any, ranges: dict[TopicPartition, tuple[int, int]], keys: set[bytes]
) -> dict[bytes, list[LoggedEvent]]:
    """The records of ``keys`` within ``ranges`` ([first, end) per partition), in order."""
    events: dict[bytes, list[LoggedEvent]] = defaultdict(list)
    if not ranges:
        return events
    consumer.assign(list(ranges))
    for tp, (first, _) in ranges.items():
        consumer.seek(tp, first)
    pending = set(ranges)
    deadline = time.monotonic() + READ_DEADLINE_S
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"events not read within {READ_DEADLINE_S}s: {sorted(pending)}")
        for tp, records in consumer.poll(timeout_ms=POLL_MS).items():
            for record in records:
                if record.offset < ranges[tp][1] and record.key in keys:
                    events[record.key].append(
                        LoggedEvent(RawRecord.of(record), record.timestamp / MS_PER_S)
                    )
        done = {tp for tp in pending if consumer.position(tp) >= ranges[tp][1]}
        if done:
            consumer.pause(*done)
            pending -= done
    for found in events.values():
        found.sort(key=lambda e: (e.record.partition, e.record.offset))
    return events


def _where(event: LoggedEvent) -> TopicPartition:
    return TopicPartition(event.record.topic, event.record.partition)


def _publish(settings: Settings, alert: DriftAlert) -> None:
    spec = spec_for(Topic.DRIFT_ALERTS, prefix=settings.topic_prefix, partitions=1)
    producer = make_producer(settings)
    try:
        future = producer.send(spec.name, key=message_key(spec, alert), value=encode(alert))
        producer.flush(timeout=SEND_TIMEOUT_S)
        future.get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()
    metrics.DRIFT_ALERTS.labels(alert.kind.value).inc()


def _log(report: SkewReport, alert: DriftAlert | None) -> None:
    context: dict[str, Any] = {
        "checked": report.checked,
        "compared": report.compared,
        "unverified": report.unverified,
        "skipped": report.skipped,
        "model_version": report.model_version,
    }
    if report.checked == 0:
        log.warning("skew check found no logged request to check", extra=context)
        return
    if alert is None:
        log.info("no training-serving skew", extra=context)
        return
    log.warning(
        "training-serving skew",
        extra={
            **context,
            "alert_id": alert.alert_id,
            "skewed_requests": report.skewed_requests,
            "features": [f.feature for f in report.features],
            "examples": [e.as_dict() for f in report.features for e in f.examples],
        },
    )
