"""This project's features: per-entity windows over the raw fields of eddy.toml.

``FEATURES`` is computed the same way for training, serving and replays; a change here
changes its fingerprint, which every model trained on it records in its lineage. These
are Eddy's own demo definitions: hourly statistics of ``amount`` and a ten-minute
sliding window of it, the distinct countries of a day, the amount against its hourly
mean, and every raw field passed through as it is.
"""

from __future__ import annotations

from eddy.streams.features.compute import Aggregate, FeatureSet, Ratio, sliding, tumbling

HOUR = 3600
DAY = 24 * HOUR

FEATURES = FeatureSet(
    aggregates=(
        Aggregate("amount", ("count", "sum", "mean", "min", "max", "std", "last"), tumbling(HOUR)),
        Aggregate("amount", ("count", "sum", "mean"), sliding(10 * 60, 60)),
        Aggregate("country", ("distinct",), tumbling(DAY)),
    ),
    ratios=(Ratio("amount_vs_hourly_mean", "amount", "amount_mean_1h"),),
    passthrough=None,
    time_since_last=True,
    allowed_lateness_s=HOUR,
)
