"""Governance reports: everything an auditor asks about one model version, in one file.

A version's story is spread over the registry (metrics, lineage, deployment history),
its audit log (the offline decision, live comparisons) and the ``drift-alerts`` topic
(the alert that caused the retrain). An auditor should not have to know that, nor run
five commands. This module is the pure part of ``eddy models report``:
:func:`assemble` builds the report from inputs already fetched (a JSON-serialisable dict
with a stable key order) and :func:`render_html` turns it into one self-contained page
(inline CSS, no external assets, every value escaped). The I/O lives in
:mod:`eddy.services.governance.sources`.

The report never guesses. A figure no producer records is shown as ``not recorded``,
and listed under ``not_recorded`` with what would have to record it.

>>> history = [Deployment("m", "champion", 1, None, 0.0, "retrainer", "no champion yet"),
...            Deployment("m", "champion", 2, 1, 60.0, "retrainer", "better by 5 %"),
...            Deployment("m", "champion", 1, 2, 90.0, "alice", "rollback: bad answers")]
>>> [(i["from"][11:19], i["to"][11:19], i["ended_by"]["how"]) for i in served_intervals(history, 2)]
[('00:01:00', '00:01:30', 'rolled back to version 1')]
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eddy.services.registry.lineage import UNKNOWN_CODE_VERSION, iso
from eddy.services.registry.store import (
    ALIASES,
    CHAMPION,
    RIVER,
    ROLLBACK_PREFIX,
    Deployment,
    Version,
)
from eddy.services.registry.triggers import ID_KEY, KIND_KEY, AuditAction, Trigger
from eddy.streams.drift.estimate import DISAGREEMENT_DETECTOR
from eddy.streams.features.compute import TIME_SINCE_LAST, FeatureSet
from eddy.streams.learning.slices import split
from eddy.streams.messages.contracts import DriftAlert
from eddy.streams.store.estimates import PerformanceReport

FORMAT_VERSION = 1
TITLE = "Eddy governance report"
NOT_RECORDED = "not recorded"
NOT_APPLICABLE = "not applicable"
STILL_SERVING = "still serving"
# Set by set_alias when the challenger becomes champion and its challenger alias is cleared.
PROMOTED_PREFIX = "promoted to champion"
# The lineage.window key the report reads label coverage from, once a producer writes it.
LABEL_COVERAGE_KEY = "label_coverage"
_SOURCE = re.compile(r"^(?P<topic>.*)\[(?P<partition>\d+)\]$")

RETRAINER = "eddy/services/training/retrainer.py (Retrainer.retrain)"
SNAPSHOTS = "eddy/services/registry/announcements.py (learner_snapshots)"
LIVE_BASIS = (
    "recorded by the live comparison (eddy/services/promotion/live_runner.py) when "
    "predictors shadow-log answers, the learner joins their labels and "
    "EDDY_LIVE_EVALUATION_EVERY_S > 0"
)


@dataclass(frozen=True)
class FoundAlert:
    """A drift alert as read back from its topic, with where it was found."""

    alert: DriftAlert
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class ReportInputs:
    """Everything :func:`assemble` needs, fetched beforehand (no I/O in this module)."""

    version: Version
    history: Sequence[Deployment]
    audit: Sequence[Mapping[str, Any]]
    alerts: Mapping[str, FoundAlert]  # alert id -> the alert, for the ids of the trigger
    alerts_topic: str
    features: FeatureSet
    generated_at: float
    # The learner's latest live estimate of the version (None: none reported) and the
    # alerts the estimate raised about it (degradation, labels disagreeing), in order.
    performance: PerformanceReport | None = None
    estimate_alerts: Sequence[FoundAlert] = ()


class _Gaps:
    """Collects the fields no producer recorded, with what would have to record them."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def mark(self, field: str, needs: str) -> str:
        self.items.append({"field": field, "needs": needs})
        return NOT_RECORDED


def served_intervals(history: Sequence[Deployment], version: int) -> list[dict[str, Any]]:
    """When ``version`` held each alias: from, to, and who or what started and ended it.

    Replays the deployment history in order. Re-setting an alias to the version that
    already holds it continues the interval; any other change of that alias ends it.
    """
    intervals: list[dict[str, Any]] = []
    for alias in ALIASES:
        current: dict[str, Any] | None = None
        for d in history:
            if d.alias != alias:
                continue
            if d.version == version and current is None:
                current = {
                    "alias": alias,
                    "from": iso(d.at),
                    "to": STILL_SERVING,
                    "started_by": {"how": _start(d), "actor": d.actor, "reason": d.reason},
                    "ended_by": None,
                }
            elif d.version != version and current is not None:
                current["to"] = iso(d.at)
                current["ended_by"] = {"how": _end(d), "actor": d.actor, "reason": d.reason}
                intervals.append(current)
                current = None
        if current is not None:
            intervals.append(current)
    return sorted(intervals, key=lambda i: str(i["from"]))


def _start(d: Deployment) -> str:
    if d.alias != CHAMPION:
        return f"set as {d.alias}"
    return "rollback" if d.reason.startswith(ROLLBACK_PREFIX) else "promotion"


def _end(d: Deployment) -> str:
    if d.version is None:
        return PROMOTED_PREFIX if d.reason.startswith(PROMOTED_PREFIX) else f"{d.alias} cleared"
    if d.alias == CHAMPION and d.reason.startswith(ROLLBACK_PREFIX):
        return f"rolled back to version {d.version}"
    return f"replaced by version {d.version}"


def describe_features(features: FeatureSet) -> dict[str, Any]:
    """The feature definitions as data, with the feature names each one produces."""
    return {
        "aggregates": [
            {
                "source": a.source,
                "ops": list(a.ops),
                "window": a.window.name,
                "features": a.names(),
            }
            for a in features.aggregates
        ],
        "ratios": [
            {"name": r.name, "numerator": r.numerator, "denominator": r.denominator}
            for r in features.ratios
        ],
        "passthrough": (
            "every raw feature" if features.passthrough is None else list(features.passthrough)
        ),
        "time_since_last": TIME_SINCE_LAST if features.time_since_last else False,
        "allowed_lateness_s": features.allowed_lateness_s,
    }


def assemble(inputs: ReportInputs) -> dict[str, Any]:
    """The report as a JSON-serialisable dict, sections in a fixed order."""
    v = inputs.version
    gaps = _Gaps()
    producer = SNAPSHOTS if v.flavor == RIVER else RETRAINER
    return {
        "report": {
            "title": TITLE,
            "format_version": FORMAT_VERSION,
            "model": v.model,
            "version": v.version,
            "name": v.name,
            "generated_at": iso(inputs.generated_at),
        },
        "provenance": _provenance(v, inputs.history, inputs.audit, gaps, producer),
        "triggering_alerts": _alerts(v, inputs.alerts, inputs.alerts_topic, gaps),
        "data": _data(v, gaps, producer),
        "features": _features(v, inputs.features, gaps, producer),
        "training": _training(v, gaps, producer),
        "validation": _validation(v, gaps, producer),
        "comparison": _comparison(v, inputs.audit, gaps, producer),
        "deployment": _deployment(v, inputs.history),
        "live": _live(v, inputs.audit, gaps),
        "live_estimate": _live_estimate(inputs, gaps),
        "not_recorded": gaps.items,
    }


def _provenance(
    v: Version,
    history: Sequence[Deployment],
    audit: Sequence[Mapping[str, Any]],
    gaps: _Gaps,
    producer: str,
) -> dict[str, Any]:
    trigger = v.lineage.trigger
    registered = next(
        (e for e in audit if e["action"] == AuditAction.REGISTER and e["version"] == v.version),
        None,
    )
    published = next((d for d in history if d.version == v.version), None)
    code = v.lineage.code_version
    return {
        "flavor": v.flavor,
        "artifact_sha256": v.artifact,
        "trained_by": v.lineage.trainer,
        "registered_at": iso(v.created_at),
        "registered_by": registered["actor"] if registered else v.created_by,
        "code_version": (
            gaps.mark("provenance.code_version", f"git available to {producer}")
            if code == UNKNOWN_CODE_VERSION
            else code
        ),
        "trigger": {
            KIND_KEY: trigger.get(KIND_KEY, NOT_RECORDED),
            ID_KEY: trigger.get(ID_KEY, NOT_RECORDED),
            **{k: trigger[k] for k in sorted(trigger) if k not in (KIND_KEY, ID_KEY)},
        },
        "published": (
            {
                "alias": published.alias,
                "at": iso(published.at),
                "by": published.actor,
                "reason": published.reason,
            }
            if published
            else "never published: it has not held an alias"
        ),
    }


def _alerts(
    v: Version, found: Mapping[str, FoundAlert], topic: str, gaps: _Gaps
) -> list[dict[str, Any]] | str:
    ids = Trigger.from_dict(v.lineage.trigger).alert_ids
    if not ids:
        kind = v.lineage.trigger.get(KIND_KEY, "unknown")
        return f"{NOT_APPLICABLE}: triggered by {kind}, not by a drift alert"
    entries: list[dict[str, Any]] = []
    for alert_id in ids:
        hit = found.get(alert_id)
        if hit is None:
            needs = (
                f"{alert_id} is no longer on {topic} (past its retention, or another "
                f"deployment's); {RETRAINER} would have to copy the alert into the lineage"
            )
            entries.append(
                {
                    "alert_id": alert_id,
                    "found_at": f"not found on {topic}",
                    "alert": gaps.mark(f"triggering_alerts.{alert_id}", needs),
                }
            )
            continue
        entries.append(
            {
                "alert_id": alert_id,
                "found_at": {"topic": hit.topic, "partition": hit.partition, "offset": hit.offset},
                "alert": hit.alert.model_dump(mode="json"),
            }
        )
    return entries


def _data(v: Version, gaps: _Gaps, producer: str) -> dict[str, Any]:
    window = v.lineage.window
    ranges = [
        _offset_range(source, first, last)
        for source, (first, last) in sorted(v.lineage.trained_on.items())
    ]
    offsets = ranges or gaps.mark("data.offsets", f"{producer}: lineage.trained_on")
    span: dict[str, Any] | str
    if "from" in window and "to" in window:
        span = {"from": window["from"], "to": window["to"]}
    else:
        span = gaps.mark(
            "data.time_span",
            f"{producer}: the event-time span (lineage.window 'from' and 'to') of the "
            "examples the version learned",
        )
    rows = _rows(v, gaps, producer)
    coverage = window.get(LABEL_COVERAGE_KEY)
    if coverage is None:
        coverage = gaps.mark(
            "data.label_coverage.late_label_coverage",
            "labels joined / snapshots recorded is exported only as the learner's Prometheus "
            f"gauge eddy_label_coverage; {producer} would have to write it to "
            f"lineage.window['{LABEL_COVERAGE_KEY}'] (the learner keeps labels_joined and "
            "labels_unmatched in LearnerState; SnapshotStore.recorded() is the denominator)",
        )
    return {
        "offsets": offsets,
        "time_span": span,
        "rows": rows,
        "label_coverage": {
            "labelled_training_rows": rows["examples"],
            "basis": (
                "every training example carries its label (TrainingExample.label is "
                "required) and the learner learns only labelled examples"
            ),
            "late_label_coverage": coverage,
        },
        "window_as_recorded": {k: window[k] for k in sorted(window)},
    }


def _offset_range(source: str, first: int, last: int) -> dict[str, Any]:
    """``topic[partition]`` and its first and last offset, split for an auditor's table."""
    match = _SOURCE.match(source)
    return {
        "source": source,
        "topic": match["topic"] if match else source,
        "partition": int(match["partition"]) if match else NOT_RECORDED,
        "first_offset": first,
        "last_offset": last,
    }


def _rows(v: Version, gaps: _Gaps, producer: str) -> dict[str, Any]:
    window = v.lineage.window
    if v.flavor == RIVER:
        online = f"{NOT_APPLICABLE}: an online model predicts each example, then learns it"
        learned: Any = (
            window["examples"] - window["since"]
            if "examples" in window and "since" in window
            else gaps.mark("data.rows.examples", f"{producer}: lineage.window examples, since")
        )
        return {"examples": learned, "train": online, "holdout": online}
    return {
        key: window[key]
        if key in window
        else gaps.mark(f"data.rows.{key}", f"{producer}: lineage.window['{key}']")
        for key in ("examples", "train", "holdout")
    }


def _features(v: Version, features: FeatureSet, gaps: _Gaps, producer: str) -> dict[str, Any]:
    recorded = v.lineage.feature_set
    current = features.fingerprint()
    matches = current in recorded.split(",")
    definitions: dict[str, Any] | str
    if matches:
        definitions = describe_features(features)
    else:
        definitions = gaps.mark(
            "features.definitions",
            f"the recorded feature set {recorded!r} is not the current definitions' hash "
            f"{current}; only the hash is recorded, so {producer} would have to store the "
            "definitions themselves (or the hash of the examples it learned) in the lineage",
        )
    return {
        "hash": recorded or gaps.mark("features.hash", f"{producer}: lineage.feature_set"),
        "current_definitions_hash": current,
        "matches_current_definitions": matches,
        "definitions": definitions,
        "source": f"eddy/streams/features/definitions.py at code version {v.lineage.code_version}",
    }


def _training(v: Version, gaps: _Gaps, producer: str) -> dict[str, Any]:
    params, libraries = v.lineage.params, v.lineage.libraries
    return {
        "params": {k: params[k] for k in sorted(params)}
        if params
        else gaps.mark("training.params", f"{producer}: lineage.params"),
        "libraries": {k: libraries[k] for k in sorted(libraries)}
        if libraries
        else gaps.mark("training.libraries", f"{producer}: lineage.libraries"),
    }


def _validation(v: Version, gaps: _Gaps, producer: str) -> dict[str, Any]:
    overall, per_slice = split(v.metrics)
    basis = (
        "prequential: every example was predicted before it was learned (cumulative and "
        "rolling_ metrics)"
        if v.flavor == RIVER
        else "held out: the most recent examples of the window, scored after training"
    )
    return {
        "basis": basis,
        "overall": {k: overall[k] for k in sorted(overall)}
        if overall
        else gaps.mark("validation.overall", f"{producer}: Version.metrics"),
        "per_slice": {s: {k: m[k] for k in sorted(m)} for s, m in sorted(per_slice.items())}
        if per_slice
        else gaps.mark(
            "validation.per_slice",
            f"{producer}: slice:<slice>:<metric> metrics (eddy/streams/learning/slices.py), "
            "computed when EDDY_SLICE_FEATURES names slice features",
        ),
    }


def _comparison(
    v: Version, audit: Sequence[Mapping[str, Any]], gaps: _Gaps, producer: str
) -> dict[str, Any] | str:
    entry = next((e for e in audit if _offline_decision(e) and e["version"] == v.version), None)
    if entry is None:
        needs = (
            f"{producer} registers snapshots without comparing them with the champion"
            if v.flavor == RIVER
            else f"{producer}: Registry.record_decision with the champion's held-out scores"
        )
        return gaps.mark("comparison", needs)
    details = entry["details"]
    champion = details.get("champion")
    evidence = details.get("evidence", {})
    return {
        "champion_version": champion
        if champion is not None
        else "none: there was no champion to compare with",
        "decision": details.get("action", NOT_RECORDED),
        "reason": details.get("reason", NOT_RECORDED),
        "decided_by": entry["actor"],
        "decided_at": iso(entry["at"]),
        "evidence": {k: evidence[k] for k in sorted(evidence)},
    }


def _offline_decision(entry: Mapping[str, Any]) -> bool:
    """The retrainer's decision (it records the trigger); live ones do not."""
    return entry["action"] == AuditAction.DECISION and "trigger" in entry["details"]


def _deployment(v: Version, history: Sequence[Deployment]) -> dict[str, Any]:
    intervals = served_intervals(history, v.version)
    return {
        "serving_now": [i["alias"] for i in intervals if i["to"] == STILL_SERVING],
        "intervals": intervals,
        "events": [
            {
                "at": iso(d.at),
                "alias": d.alias,
                "from_version": d.previous,
                "to_version": d.version,
                "actor": d.actor,
                "reason": d.reason,
            }
            for d in history
            if v.version in (d.version, d.previous)
        ],
    }


def _live(v: Version, audit: Sequence[Mapping[str, Any]], gaps: _Gaps) -> dict[str, Any] | str:
    rows = []
    for e in audit:
        if e["action"] != AuditAction.DECISION or _offline_decision(e):
            continue
        details = e["details"]
        if "previous" in details and e["version"] == v.version:
            role, other = "champion (rollback guard)", details["previous"]
        elif e["version"] == v.version:
            role, other = "challenger", details.get("champion")
        elif details.get("champion") == v.version:
            role, other = "champion", e["version"]
        else:
            continue
        evidence = details.get("evidence", {})
        rows.append(
            {
                "at": iso(e["at"]),
                "decided_by": e["actor"],
                "role": role,
                "other_version": other,
                "action": details.get("action", NOT_RECORDED),
                "reason": details.get("reason", NOT_RECORDED),
                "evidence": {k: evidence[k] for k in sorted(evidence)},
            }
        )
    if not rows:
        return gaps.mark("live", f"no live decision involves this version; {LIVE_BASIS}")
    return {"basis": LIVE_BASIS, "decisions": rows}


ESTIMATE_BASIS = (
    "estimated from the version's own answers before labels (confidence-based: its "
    "calibrated P(positive) per answer); valid while only the inputs shift (covariate "
    "shift). When labels disagree with it beyond its band, the relation between inputs "
    "and labels moved (concept drift), which the estimate cannot see"
)


def _live_estimate(inputs: ReportInputs, gaps: _Gaps) -> dict[str, Any] | str:
    """The learner's latest estimate of the version next to its realized figures, and
    what the estimate raised: whether the labels ever said it was not valid."""
    alerts = [
        {
            "at": found.alert.detected_at.isoformat() if found.alert.detected_at else None,
            "kind": found.alert.kind.value,
            "detector": found.alert.detector,
            "statistic": found.alert.statistic,
            "threshold": found.alert.threshold,
            "where": f"{found.topic}[{found.partition}]@{found.offset}",
        }
        for found in inputs.estimate_alerts
    ]
    report = inputs.performance
    if report is None and not alerts:
        return gaps.mark(
            "live_estimate",
            "the learner estimates binary classifiers it sees served (served-answers)",
        )
    disagreed = [a for a in alerts if a["detector"] == DISAGREEMENT_DETECTOR]
    return {
        "basis": ESTIMATE_BASIS,
        "valid": (
            "no: labels disagreed with the estimate (concept drift)"
            if disagreed
            else "no disagreement with the labels seen"
        ),
        "latest": None
        if report is None
        else {
            "at": iso(report.at),
            "estimated": report.estimated,
            "reference_accuracy": report.reference_accuracy,
            "realized": report.realized,
            "calibrated_on_labels": report.calibrated_on,
        },
        "alerts": alerts,
    }


# --- HTML -----------------------------------------------------------------------------

SECTION_TITLES = {
    "report": "Report",
    "provenance": "Who or what trained and published it, and why",
    "triggering_alerts": "The triggering alert",
    "data": "The data it learned from",
    "features": "Feature definitions",
    "training": "Parameters and libraries",
    "validation": "Validation metrics (overall and per slice)",
    "comparison": "The champion it was compared with",
    "deployment": "Deployment history",
    "live": "Live metrics since deployment",
    "live_estimate": "Live performance estimate (before labels) and its validity",
    "not_recorded": "Not recorded, and what would record it",
}
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.3em 0}th,td{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4;font-weight:600}
.missing{color:#a40000;font-weight:600}.na{color:#666;font-style:italic}
code{font-family:ui-monospace,monospace}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: inline CSS, no scripts or links, every value escaped."""
    head = report["report"]
    title = f"{head['title']}: {head['name']}"
    sections = "".join(
        f"<section id={_attr(key)}><h2>{_text(SECTION_TITLES.get(key, key))}</h2>"
        f"{_html(value)}</section>"
        for key, value in report.items()
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{_text(title)}</h1>{sections}</body></html>\n"
    )


def _text(value: str) -> str:
    return html.escape(value, quote=True)


def _attr(value: str) -> str:
    return f'"{_text(value)}"'


def _html(value: Any) -> str:
    if isinstance(value, Mapping):
        if not value:
            return '<span class="na">none</span>'
        rows = "".join(
            f"<tr><th>{_text(str(k))}</th><td>{_html(v)}</td></tr>" for k, v in value.items()
        )
        return f"<table>{rows}</table>"
    if isinstance(value, list | tuple):
        if not value:
            return '<span class="na">none</span>'
        if all(isinstance(i, Mapping) for i in value) and len({tuple(i) for i in value}) == 1:
            header = "".join(f"<th>{_text(str(k))}</th>" for k in value[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{_html(v)}</td>" for v in row.values()) + "</tr>"
                for row in value
            )
            return f"<table><tr>{header}</tr>{body}</table>"
        if not any(isinstance(i, Mapping | list | tuple) for i in value):
            return ", ".join(_html(i) for i in value)
        return "<ul>" + "".join(f"<li>{_html(i)}</li>" for i in value) + "</ul>"
    if value is None:
        return '<span class="na">none</span>'
    if isinstance(value, str):
        if value.startswith(NOT_RECORDED):
            return f'<span class="missing">{_text(value)}</span>'
        if value.startswith(NOT_APPLICABLE):
            return f'<span class="na">{_text(value)}</span>'
        return _text(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"<code>{_text(str(value))}</code>"
