"""Slices: named sub-populations (``region=eu``) whose metrics are watched on their own.

An overall metric can hide a model that got worse for one region or product line.
Operators name slice features (``EDDY_SLICE_FEATURES=region,plan``); every example then
belongs to one slice per slice feature, named ``<feature>=<value>``. Values beyond the
first ``max_values`` seen per feature fall into ``<feature>=other`` so a high-cardinality
feature cannot grow the metrics without bound; a missing value is ``<feature>=missing``.

Per-slice figures travel in the same flat ``dict[str, float]`` as overall metrics
(registry versions, model updates, alerts), under keys ``slice:<slice>:<metric>``:

>>> tracker = SliceNamer(("region",), max_values=2)
>>> tracker.slices_of({"region": "eu", "x": 1.0})
['region=eu']
>>> [tracker.slices_of({"region": r})[0] for r in ("us", "apac", None)]
['region=us', 'region=other', 'region=missing']
>>> flat = flatten({"region=eu": {"accuracy": 0.9, "n": 40.0}})
>>> flat
{'slice:region=eu:accuracy': 0.9, 'slice:region=eu:n': 40.0}
>>> split({"accuracy": 0.8, **flat})
({'accuracy': 0.8}, {'region=eu': {'accuracy': 0.9, 'n': 40.0}})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SLICE_PREFIX = "slice:"
OTHER = "other"
MISSING = "missing"
COUNT = "n"


def slice_name(feature: str, value: Any) -> str:
    """``region=eu``; booleans and numbers are written as JSON would write them."""
    if value is None:
        return f"{feature}={MISSING}"
    if isinstance(value, bool):
        return f"{feature}={'true' if value else 'false'}"
    return f"{feature}={value}"


class SliceNamer:
    """Names the slices of an example, capping the distinct values per feature.

    Picklable (it is part of the learner's checkpoint): which values got their own
    slice is decided in arrival order and must survive a restart.
    """

    def __init__(self, features: Sequence[str], max_values: int) -> None:
        self.features = tuple(features)
        self.max_values = max_values
        self._known: dict[str, set[str]] = {f: set() for f in self.features}

    def slices_of(self, x: Mapping[str, Any]) -> list[str]:
        names = []
        for feature in self.features:
            value = x.get(feature)
            name = slice_name(feature, value)
            known = self._known[feature]
            if value is not None and name not in known:
                if len(known) >= self.max_values:
                    name = f"{feature}={OTHER}"
                else:
                    known.add(name)
            names.append(name)
        return names


def flatten(per_slice: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{slice: {metric: v}}`` as flat ``slice:<slice>:<metric>`` keys."""
    return {
        f"{SLICE_PREFIX}{name}:{metric}": value
        for name, figures in per_slice.items()
        for metric, value in figures.items()
    }


def split(metrics: Mapping[str, float]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall metrics and per-slice metrics out of one flat dict (inverse of flatten)."""
    overall: dict[str, float] = {}
    per_slice: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(SLICE_PREFIX):
            name, _, metric = key[len(SLICE_PREFIX) :].rpartition(":")
            per_slice.setdefault(name, {})[metric] = value
        else:
            overall[key] = value
    return overall, per_slice
