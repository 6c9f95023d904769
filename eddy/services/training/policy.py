"""How the deployment retrains and judges a candidate, as one value.

The retrainer and the backtest both start from
:func:`~eddy.services.config.retraining.deployment_retraining`, so a backtest replays
the deployment's window, hold-out, estimator, gate and debounce unless a policy names
its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from eddy.services.promotion.rules import HIGHER_IS_BETTER, OfflineGate


@dataclass(frozen=True)
class RetrainConfig:
    """What a retrain reads: its window, how it holds examples out and what the offline
    gate asks of a candidate; when alerts start one (debounce, the wait for examples
    after a drift) and when a schedule or fresh data do.

    >>> config = RetrainConfig(window=500, holdout=0.2, min_holdout=50,
    ...     estimator="logistic", metric="accuracy", margin=0.0)
    >>> config.gate.higher_is_better, config.gate.min_holdout
    (True, 50)
    """

    window: int
    holdout: float
    min_holdout: int
    estimator: str
    metric: str
    margin: float
    confidence: float = 0.95
    debounce_s: float = 0.0
    drift_wait_s: float = 0.0
    refresh: bool = True
    every_s: float = 0.0

    @property
    def gate(self) -> OfflineGate:
        """The offline gate a candidate passes on the hold-out."""
        return offline_gate(self.metric, self.margin, self.min_holdout)


def offline_gate(metric: str, margin: float, min_holdout: int) -> OfflineGate:
    """The gate for ``metric``: which way is better follows from the metric's name."""
    return OfflineGate(
        metric=metric,
        higher_is_better=metric in HIGHER_IS_BETTER,
        margin=margin,
        min_holdout=min_holdout,
    )
