"""``eddy models report``: gather a version's records and write its governance report.

The thin I/O edge of :mod:`eddy.services.governance.report`: it reads the registry (version,
deployment history, audit log) and looks the triggering alerts up on ``drift-alerts``,
then writes ``<model>-v<version>.json`` and ``.html``. Alerts are found by id with a
bounded scan: from the beginning of the topic up to the end offsets seen when the scan
starts (alerts are few and the topic has one partition), so the scan always ends.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.governance.report import (
    FoundAlert,
    ReportInputs,
    assemble,
    render_html,
)
from eddy.services.registry.opening import open_registry
from eddy.services.registry.triggers import Trigger
from eddy.streams.dead_letters.policy import Action, action_for
from eddy.streams.drift.estimate import DEGRADATION_DETECTOR, DISAGREEMENT_DETECTOR
from eddy.streams.features.compute import FeatureSet
from eddy.streams.messages.contracts import DriftAlert
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.store.estimates import PerformanceReport, read_reports
from eddy.streams.store.serialization import write_atomically
from eddy.streams.transport.clients import log_offsets, make_consumer, make_redis
from eddy.streams.transport.topics import Topic, topic_name

log = logging.getLogger(__name__)

POLL_MS = 500
# A scan that makes no progress for this long means the broker stopped answering.
SCAN_STALL_S = 60.0
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class AlertScanStalled(TimeoutError):
    """The drift-alerts scan stopped making progress before reaching its end offsets."""


def alerts_topic(settings: Settings) -> str:
    return topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)


def find_alerts(settings: Settings, model: str, ids: Iterable[str]) -> dict[str, FoundAlert]:
    """The alerts of ``model`` with these ids (first copy of each), by id.

    Reads without a consumer group (no committed offsets move) from the start of every
    partition to the end offset it had when the scan began, stopping early once every id
    is found. Undecodable records are skipped, as the retrainer skips them.
    """
    wanted = set(ids)
    found: dict[str, FoundAlert] = {}
    if not wanted:
        return found
    for hit in _scan(settings, lambda alert: alert.model == model and alert.alert_id in wanted):
        found.setdefault(hit.alert.alert_id, hit)
        if found.keys() == wanted:
            break
    return found


def find_estimate_alerts(settings: Settings, model: str, version: str) -> list[FoundAlert]:
    """What the live estimate raised about ``version`` (e.g. ``"m@3"``), in order."""
    detectors = {DEGRADATION_DETECTOR, DISAGREEMENT_DETECTOR}
    return list(
        _scan(
            settings,
            lambda a: a.model == model and a.model_version == version and a.detector in detectors,
        )
    )


def _scan(settings: Settings, keep: Callable[[DriftAlert], bool]) -> Iterator[FoundAlert]:
    """The alerts ``keep`` accepts, from the start of ``drift-alerts`` to the end offsets
    it had when the scan began (a bounded scan: it always ends)."""
    topic = alerts_topic(settings)
    consumer = make_consumer(settings, group_id=None)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        if not partitions:
            return
        consumer.assign(partitions)
        ends = log_offsets(consumer, partitions)
        consumer.seek_to_beginning(*partitions)
        progress = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            batch = consumer.poll(timeout_ms=POLL_MS)
            if batch:
                progress = time.monotonic()
            elif time.monotonic() - progress > SCAN_STALL_S:
                raise AlertScanStalled(f"no progress reading {topic} for {SCAN_STALL_S:.0f}s")
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    try:
                        alert = decode(DriftAlert, record.value)
                    except InvalidMessage:
                        continue
                    if keep(alert):
                        yield FoundAlert(alert, record.topic, record.partition, record.offset)
    finally:
        consumer.close()


def latest_performance(settings: Settings, model: str, version: str) -> PerformanceReport | None:
    """The learner's latest live estimate of ``version``; None when it has none, or
    Redis does not answer (the report then says it was not recorded)."""
    try:
        return read_reports(make_redis(settings), settings.topic_prefix, model).get(version)
    except Exception as exc:
        if action_for(exc) is not Action.RETRY:
            raise
        log.warning("no live estimate read", extra={"error": repr(exc)})
        return None


def gather(settings: Settings, features: FeatureSet, model: str, version: int) -> ReportInputs:
    """Everything the report needs, read now from the registry and the alerts topic;
    ``features``: the deployment's, compared with the ones the version was trained on."""
    registry = open_registry(settings, announce=False)
    record = registry.get(model, version)
    return ReportInputs(
        version=record,
        history=registry.history(model),
        audit=registry.audit_log(model),
        alerts=find_alerts(settings, model, Trigger.from_dict(record.lineage.trigger).alert_ids),
        alerts_topic=alerts_topic(settings),
        features=features,
        generated_at=time.time(),
        performance=latest_performance(settings, model, record.name),
        estimate_alerts=find_estimate_alerts(settings, model, record.name),
    )


def report_stem(model: str, version: int) -> str:
    """``<model>-v<version>``, with anything unsafe in a file name replaced.

    >>> report_stem("fraud/../x", 3)
    'fraud_.._x-v3'
    """
    return f"{_UNSAFE_FILE_CHARS.sub('_', model)}-v{version}"


def write_report(
    settings: Settings, features: FeatureSet, model: str, version: int, out_dir: Path
) -> tuple[Path, Path]:
    """Write the JSON and HTML reports of ``model`` ``version`` (its features compared
    with the deployment's ``features``); returns their paths."""
    report = assemble(gather(settings, features, model, version))
    stem = report_stem(model, version)
    json_path, html_path = out_dir / f"{stem}.json", out_dir / f"{stem}.html"
    write_atomically(json_path, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
    write_atomically(html_path, render_html(report).encode())
    log.info(
        "governance report written",
        extra={
            "model_version": report["report"]["name"],
            "json": str(json_path),
            "html": str(html_path),
            "not_recorded": len(report["not_recorded"]),
        },
    )
    return json_path, html_path
