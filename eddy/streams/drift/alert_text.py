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
"""

from __future__ import annotations

from typing import Any

FEATURE_COLUMN = 16


def describe_alert(alert: dict[str, Any]) -> str:
    lines = [
        f"{alert.get('detected_at', '?')}  {str(alert.get('kind', '?')).upper()} drift on "
        f"{alert.get('model')} ({alert.get('model_version')}) -> {alert.get('action')}  "
        f"[{alert.get('alert_id')}]"
    ]
    for item in alert.get("evidence", []):
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
    metrics = alert.get("metrics") or {}
    if metrics:
        lines.append("  metrics: " + ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())))
    return "\n".join(lines)
