"""Each service's consumer group id, defined once.

The workers join these groups; the monitor's lag view, the demo's readiness wait and
operators' tools (``kafka-consumer-groups``) look them up here.

>>> group_id("eddy.", "predictor", "default"), group_id("eddy.", "learner", "default")
('eddy.predictors', 'eddy.learner-default')
"""

from __future__ import annotations

SERVICES_WITH_GROUPS = ("features", "learner", "predictor", "retrainer")
# The predictors' precomputer of cached answers (static serving) reads events in a
# group of its own, so it never takes partitions from the feature workers.
ANSWER_PRECOMPUTE = "answer-precompute"


def group_id(prefix: str, service: str, model: str) -> str:
    """The consumer group of ``service`` (one of :data:`SERVICES_WITH_GROUPS`, or
    :data:`ANSWER_PRECOMPUTE`)."""
    groups = {
        "features": f"{prefix}features",
        "learner": f"{prefix}learner-{model}",
        "predictor": f"{prefix}predictors",
        "retrainer": f"{prefix}retrainer",
        ANSWER_PRECOMPUTE: f"{prefix}answer-precompute.{model}",
    }
    return groups[service]
