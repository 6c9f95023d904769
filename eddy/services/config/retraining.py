"""The deployment's retraining policy, from settings: one builder for every process.

``eddy run retrainer`` and ``eddy backtest`` start from the same
:class:`~eddy.services.training.policy.RetrainConfig` (a backtest policy then overrides
what it names), so a backtest judges candidates as the deployment would.

With a project, a retrain fits a fresh ``retrain_estimator(classification)`` of the
project's; without one, the estimator ``EDDY_RETRAIN_ESTIMATOR`` names, as before
projects.
"""

from __future__ import annotations

from eddy.services.config.settings import Settings
from eddy.services.project.loading import Project
from eddy.services.training.policy import RetrainConfig

PROJECT_ESTIMATOR = "project:"  # a project's estimator's name in the lineage: project:<name>


def deployment_retraining(settings: Settings, project: Project | None = None) -> RetrainConfig:
    """The retraining policy of the deployment ``settings`` describe; with ``project``,
    fitting what its ``retrain_estimator`` builds, named ``project:<its name>``."""
    return RetrainConfig(
        window=settings.retrain_window,
        holdout=settings.retrain_holdout,
        min_holdout=settings.retrain_min_holdout,
        estimator=settings.retrain_estimator
        if project is None
        else f"{PROJECT_ESTIMATOR}{project.name}",
        metric=settings.retrain_metric,
        margin=settings.retrain_margin,
        confidence=settings.retrain_confidence,
        debounce_s=settings.retrain_debounce_s,
        drift_wait_s=settings.retrain_drift_wait_s,
        refresh=settings.retrain_refresh,
        every_s=settings.retrain_every_s,
        estimator_factory=None if project is None else project.retrain_estimator,
    )
