"""The deployment's online learner, from settings: one builder for every process.

``eddy run learner`` and ``eddy backtest`` start from the same :class:`LearnerConfig`
(a backtest policy then overrides what it names), so a backtest replays what the
deployment would do: its model, detector, mini-batches, slices, drift tests, the
features data drift leaves out and what drift alone asks for.
"""

from __future__ import annotations

from eddy.services.config.settings import Settings
from eddy.streams.features.compute import FeatureSet
from eddy.streams.learning.learner import LearnerConfig


def deployment_learner(settings: Settings, features: FeatureSet) -> LearnerConfig:
    """The learner of the deployment ``settings`` describe, over its ``features``
    (:func:`eddy.services.project.deployment.deployment_features`)."""
    return LearnerConfig(
        model=settings.model_name,
        kind=settings.learner_kind,
        detector=settings.learner_detector,
        batch=settings.learner_batch,
        slices=settings.slices,
        slice_max_values=settings.slice_max_values,
        drift=settings.drift,
        drift_ignore=features.accumulating_names(),
        drift_action=settings.drift_action,
    )
