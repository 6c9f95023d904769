"""Drift alerts as the tests send them (a test module imports no other test module)."""

from __future__ import annotations

from eddy.streams.messages.contracts import DriftAlert, DriftKind, DriftWindow


def concept_alert(alert_id: str, model: str, window: DriftWindow | None = None) -> DriftAlert:
    """An ADWIN concept alert on ``model`` asking for a retrain (``window``: where it
    fired)."""
    return DriftAlert(
        alert_id=alert_id,
        model=model,
        kind=DriftKind.CONCEPT,
        detector="adwin",
        statistic=0.4,
        threshold=0.0,
        action="retrain",
        window=window or DriftWindow(),
    )
