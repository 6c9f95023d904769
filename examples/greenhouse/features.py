"""The greenhouse's features: per-greenhouse windows over its readings (eddy.toml)."""

from __future__ import annotations

from eddy.streams.features.compute import Aggregate, FeatureSet, tumbling

HOUR = 3600

FEATURES = FeatureSet(
    aggregates=(
        Aggregate("temperature", ("count", "mean", "max"), tumbling(HOUR)),
        Aggregate("humidity", ("mean",), tumbling(HOUR)),
    ),
    passthrough=None,  # every declared field is a feature too
    time_since_last=True,
)
