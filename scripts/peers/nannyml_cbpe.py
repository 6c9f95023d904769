"""The NannyML peer of Eddy's performance estimate, run by scripts/bench_estimate.py.

    .eddy/nannyml-venv/bin/python scripts/peers/nannyml_cbpe.py JOBS.json

NannyML's CBPE the way its documentation sets it up for a binary classifier: fitted on
a reference set (here the served version's holdout: its P(positive), its answer and the
label), then asked to estimate accuracy and ROC AUC on the analysis data in chunks of
``chunk_size`` answers, without labels. NannyML calibrates the scores on the reference
only (isotonic, when its check finds the reference miscalibrated) and flags a chunk
whose estimate leaves its default thresholds (the reference chunks' mean ± 3 standard
deviations). It runs in batch: each chunk is estimated once it is complete.

``JOBS.json`` lists jobs, each ``{"reference": CSV, "analysis": CSV, "out": JSON,
"chunk_size": N}``; the CSVs have the columns ``y_pred_proba``, ``y_pred`` and (the
reference only) ``y_true``. Each job's JSON gets, per metric, the estimate of every
analysis chunk in order and NannyML's alert flag for it.

nannyml needs a pandas Eddy does not pin, so this runs in a virtualenv of its own
(``requirements-nannyml.txt``) and imports nothing from Eddy.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # no analytics calls from a benchmark

import nannyml
import pandas as pd

METRICS = ("accuracy", "roc_auc")


def estimate(reference: Path, analysis: Path, chunk_size: int) -> dict[str, list[float | bool]]:
    """Per metric: the estimate of each analysis chunk and whether NannyML alerted on it."""
    cbpe = nannyml.CBPE(
        problem_type="classification_binary",
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="y_true",
        metrics=list(METRICS),
        chunk_size=chunk_size,
    )
    cbpe.fit(pd.read_csv(reference))
    results = cbpe.estimate(pd.read_csv(analysis)).filter(period="analysis").to_df()
    found: dict[str, list[float | bool]] = {}
    for metric in METRICS:
        found[metric] = [float(v) for v in results[(metric, "value")]]
        found[f"{metric}_alert"] = [bool(v) for v in results[(metric, "alert")]]
    return found


def main() -> None:
    for job in json.loads(Path(sys.argv[1]).read_text()):
        found = estimate(Path(job["reference"]), Path(job["analysis"]), int(job["chunk_size"]))
        Path(job["out"]).write_text(json.dumps(found))


if __name__ == "__main__":
    main()
