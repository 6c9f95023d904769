"""The deployment's retraining policy, from settings: one builder for every process.

``eddy run retrainer`` and ``eddy backtest`` start from the same
:class:`~eddy.services.training.policy.RetrainConfig` (a backtest policy then overrides
what it names), so a backtest judges candidates as the deployment would.
"""

from __future__ import annotations

from eddy.services.config.settings import Settings
from eddy.services.training.policy import RetrainConfig


def deployment_retraining(settings: Settings) -> RetrainConfig:
    return RetrainConfig(
        window=settings.retrain_window,
        holdout=settings.retrain_holdout,
        min_holdout=settings.retrain_min_holdout,
        estimator=settings.retrain_estimator,
        metric=settings.retrain_metric,
        margin=settings.retrain_margin,
        confidence=settings.retrain_confidence,
        debounce_s=settings.retrain_debounce_s,
        drift_wait_s=settings.retrain_drift_wait_s,
        refresh=settings.retrain_refresh,
        every_s=settings.retrain_every_s,
    )
