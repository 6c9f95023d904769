"""The README's main command in its short mode: the whole loop, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from eddy.services.config.settings import Settings


def test_the_short_demo_detects_the_drift_retrains_promotes_and_recovers(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack.model_copy(update={"data_dir": tmp_path / "data"})
    result = subprocess.run(
        [str(Path(sys.executable).with_name("eddy")), "demo", "--short", "--rate", "40"],
        env=settings.child_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (summary_path,) = (tmp_path / "data" / "demo").glob("*/summary.json")
    summary = orjson.loads(summary_path.read_bytes())
    logs = "\n".join(p.read_text()[-2000:] for p in summary_path.parent.glob("logs/*.log"))

    assert summary["predictions"] > 0.8 * summary["events"], logs
    assert summary["first_concept_alert_delay_s"] is not None, logs
    after_drift = [
        c
        for c in summary["champions"]
        if c["at_s"] > summary["drift_at_s"] and c["by"].startswith("retrainer")
    ]
    assert after_drift, f"no retrained champion after the drift: {summary['champions']}"
    judged = summary["verdict"]
    assert judged["accuracy_before"] > 0.8, judged
    # What users are served got right again, and nothing fired before the world changed.
    assert judged["verdict"] == "recovered", (judged, summary["champions"], logs)
    assert judged["false_alarms"] == 0, summary["alerts"]
    assert judged["detection_delay_events"] is not None
    assert (summary_path.parent / "report.html").read_text().startswith("<!doctype html>")
    assert (summary_path.parent / "report.png").stat().st_size > 10_000
