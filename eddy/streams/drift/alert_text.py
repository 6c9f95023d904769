"""Drift alerts as an operator reads them: one headline, then the evidence, ranked.

>>> print(describe_alert({
...     "alert_id": "m:data:900", "model": "m", "kind": "data", "detector": "data_drift",
...     "model_version": "m@online", "action": "retrain",
...     "detected_at": "2026-01-01T00:00:00Z",
...     "window": {"offsets": {"ex[0]": [400, 899]}, "times": ["2026-01-01T00:00:00Z",
...                "2026-01-01T00:05:00Z"]},
...     "evidence": [{"feature": "amount", "test": "psi", "statistic": 0.9, "threshold": 0.2}],
...     "metrics": {"rolling_accuracy": 0.71},
... }))
2026-01-01T00:00:00Z  DATA drift on m (m@online) -> retrain  [m:data:900]
  amount           psi=0.9000 > 0.2000  (4.5x)
  window: ex[0] 400..899; 2026-01-01T00:00:00Z .. 2026-01-01T00:05:00Z
  metrics: rolling_accuracy=0.71

A served version's accuracy estimated from its answers, before labels, fell below its
threshold: the estimate with its band and the reference on one line, then the features
that drifted (the inputs moved to where the version is less sure):

>>> print(describe_alert({
...     "alert_id": "m:est:3", "model": "m",
...     "kind": "estimated_degradation", "detector": "cbpe", "stream": "served",
...     "model_version": "m@3", "action": "warn", "detected_at": "2026-01-01T00:00:00Z",
...     "statistic": 0.81, "threshold": 0.9,
...     "evidence": [
...         {"feature": "estimated_accuracy", "test": "cbpe", "statistic": 0.81,
...          "threshold": 0.9},
...         {"feature": "amount", "test": "psi", "statistic": 0.9, "threshold": 0.2}],
...     "metrics": {"estimated_accuracy": 0.81, "estimated_accuracy_lower": 0.79,
...                 "estimated_accuracy_upper": 0.83, "reference_accuracy": 0.95,
...                 "answers": 1000.0},
... }))
2026-01-01T00:00:00Z  ESTIMATED DEGRADATION of m (m@3) -> warn  [m:est:3]
  estimated accuracy 0.8100 [0.7900, 0.8300] < 0.9000 (reference 0.9500), 1000 answers
  amount           psi=0.9000 > 0.2000  (4.5x)
  metrics: answers=1000.0, estimated_accuracy=0.81, ...

Labels joined later disagree with the estimate beyond its band: the estimate cannot be
trusted for this change, which only labels show:

>>> print(describe_alert({
...     "alert_id": "m:dis:3", "model": "m", "kind": "concept",
...     "detector": "cbpe_disagreement", "stream": "served", "model_version": "m@3",
...     "action": "warn", "detected_at": "2026-01-01T00:00:00Z",
...     "statistic": 0.2, "threshold": 0.05,
...     "metrics": {"estimated_accuracy": 0.9, "realized_accuracy": 0.7, "labelled": 500.0},
... }))
2026-01-01T00:00:00Z  LABELS DISAGREE WITH THE ESTIMATE of m (m@3) -> warn  [m:dis:3]
  realized accuracy 0.7000, estimated 0.9000, 500 labelled answers: off by 0.2000 > 0.0500
  concept drift: the estimate is not valid for this change; only labels show it
  metrics: estimated_accuracy=0.9, labelled=500.0, realized_accuracy=0.7
"""

from __future__ import annotations

from typing import Any

from eddy.streams.messages.contracts import DriftKind

FEATURE_COLUMN = 16
ESTIMATE_DETECTOR = "cbpe"
DISAGREEMENT_DETECTOR = "cbpe_disagreement"
CBPE_TESTS = frozenset({ESTIMATE_DETECTOR, DISAGREEMENT_DETECTOR})
"""Evidence of these tests is the estimate itself, told in words rather than as a
feature's statistic (an estimate falls *below* its threshold)."""


def describe_alert(alert: dict[str, Any]) -> str:
    metrics = alert.get("metrics") or {}
    lines = [f"{alert.get('detected_at', '?')}  {_headline(alert)}  [{alert.get('alert_id')}]"]
    if alert.get("kind") == DriftKind.ESTIMATED:
        lines.append(_estimate_line(alert, metrics))
    elif alert.get("detector") == DISAGREEMENT_DETECTOR:
        lines.extend(_disagreement_lines(alert, metrics))
    for item in alert.get("evidence", []):
        if item["test"] in CBPE_TESTS:
            continue
        threshold = item["threshold"] or 0.0
        ratio = f"  ({item['statistic'] / threshold:.1f}x)" if threshold else ""
        lines.append(
            f"  {item['feature']:<{FEATURE_COLUMN}} {item['test']}={item['statistic']:.4f}"
            f" > {threshold:.4f}{ratio}"
        )
    window = alert.get("window") or {}
    offsets = ", ".join(f"{k} {a}..{b}" for k, (a, b) in (window.get("offsets") or {}).items())
    times = window.get("times")
    if offsets or times:
        span = f"; {times[0]} .. {times[1]}" if times else ""
        lines.append(f"  window: {offsets}{span}")
    if metrics:
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
    return "\n".join(lines)


def _headline(alert: dict[str, Any]) -> str:
    """What fired, on which model and version, and what is done about it."""
    where = f"{alert.get('model')} ({alert.get('model_version')}) -> {alert.get('action')}"
    if alert.get("kind") == DriftKind.ESTIMATED:
        return f"ESTIMATED DEGRADATION of {where}"
    if alert.get("detector") == DISAGREEMENT_DETECTOR:
        return f"LABELS DISAGREE WITH THE ESTIMATE of {where}"
    return f"{str(alert.get('kind', '?')).upper()} drift on {where}"


def _estimate_line(alert: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The estimate, its band, the threshold it fell below and the reference.

    A figure the alert does not carry is left out, not shown as 0:

    >>> _estimate_line({"statistic": 0.81, "threshold": 0.9}, {})
    '  estimated accuracy 0.8100 < 0.9000'
    """
    estimate = metrics.get("estimated_accuracy", alert.get("statistic"))
    lower, upper = metrics.get("estimated_accuracy_lower"), metrics.get("estimated_accuracy_upper")
    band = f" [{lower:.4f}, {upper:.4f}]" if lower is not None and upper is not None else ""
    line = f"  estimated accuracy {_figure(estimate)}{band} < {_figure(alert.get('threshold'))}"
    if (reference := metrics.get("reference_accuracy")) is not None:
        line += f" (reference {reference:.4f})"
    if (answers := metrics.get("answers")) is not None:
        line += f", {answers:.0f} answers"
    return line


def _disagreement_lines(alert: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """Labels against the estimate, and what that means for the estimate."""
    realized, estimated = metrics.get("realized_accuracy"), metrics.get("estimated_accuracy")
    labelled = metrics.get("labelled")
    over = f", {labelled:.0f} labelled answers" if labelled is not None else ""
    return [
        f"  realized accuracy {_figure(realized)}, estimated {_figure(estimated)}{over}: "
        f"off by {_figure(alert.get('statistic'))} > {_figure(alert.get('threshold'))}",
        "  concept drift: the estimate is not valid for this change; only labels show it",
    ]


def _figure(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"
