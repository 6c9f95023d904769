"""The deployment's retraining policy is built once, and the backtest starts from it."""

from __future__ import annotations

import dataclasses

from eddy.services.backtest.replay import RetrainPolicy, policies_from
from eddy.services.config.retraining import deployment_retraining
from eddy.services.config.settings import Settings
from eddy.streams.features.definitions import FEATURES


def test_the_deployment_policy_reads_every_retrain_setting() -> None:
    settings = Settings(
        retrain_window=777,
        retrain_holdout=0.3,
        retrain_min_holdout=40,
        retrain_metric="accuracy",
        retrain_margin=0.02,
        retrain_confidence=0.9,
        retrain_debounce_s=3.5,
        retrain_drift_wait_s=12.0,
        retrain_refresh=False,
        retrain_every_s=60.0,
    )
    config = deployment_retraining(settings)
    assert (config.window, config.holdout, config.min_holdout) == (777, 0.3, 40)
    assert (config.confidence, config.debounce_s, config.drift_wait_s) == (0.9, 3.5, 12.0)
    assert (config.refresh, config.every_s) == (False, 60.0)
    assert config.gate.metric == "accuracy"
    assert config.gate.higher_is_better
    assert (config.gate.margin, config.gate.min_holdout) == (0.02, 40)


def test_a_backtest_policy_inherits_what_it_does_not_name() -> None:
    settings = Settings(
        retrain_window=640, retrain_debounce_s=4.0, retrain_drift_wait_s=9.0, retrain_margin=0.05
    )
    deployment = dataclasses.asdict(deployment_retraining(settings))
    [policy] = policies_from(
        {"policy": [{"name": "p", "retrain": {"window": 300}}]}, settings, FEATURES
    )
    shared = set(RetrainPolicy.model_fields) & set(deployment)
    assert shared >= {"window", "holdout", "min_holdout", "estimator", "metric", "margin"}
    assert policy.retrain.window == 300
    for name in shared - {"window"}:
        assert getattr(policy.retrain, name) == deployment[name], name
    assert policy.retrain.gate == deployment_retraining(settings).gate
