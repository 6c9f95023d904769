"""Each service's consumer group id, defined once.

The workers join these groups; the monitor's lag view, the demo's readiness wait and
operators' tools (``kafka-consumer-groups``) look them up here.

>>> group_id("eddy.", "predictor", "default"), group_id("eddy.", "learner", "default")
('eddy.predictors', 'eddy.learner-default')
"""

from __future__ import annotations

SERVICES_WITH_GROUPS = ("features", "learner", "predictor", "retrainer")


def group_id(prefix: str, service: str, model: str) -> str:
    """The consumer group of ``service`` (one of :data:`SERVICES_WITH_GROUPS`)."""
    groups = {
        "features": f"{prefix}features",
        "learner": f"{prefix}learner-{model}",
        "predictor": f"{prefix}predictors",
        "retrainer": f"{prefix}retrainer",
    }
    return groups[service]
