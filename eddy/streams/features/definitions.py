"""Eddy's features, declared once.

Training examples, the online store, the prediction service and replays all compute
features from :data:`FEATURES` through :mod:`eddy.streams.features.compute`; changing a definition
here changes its fingerprint, which every trained model records in its lineage.

>>> sorted(FEATURES.aggregates[0].names())[:3]
['amount_count_1h', 'amount_last_1h', 'amount_max_1h']
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
