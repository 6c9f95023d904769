"""How the deployment retrains and judges a candidate, as one value.

The retrainer and the backtest both start from
:func:`~eddy.services.config.retraining.deployment_retraining`, so a backtest replays
the deployment's window, hold-out, estimator, gate and debounce unless a policy names
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eddy.services.promotion.rules import HIGHER_IS_BETTER, OfflineGate
from eddy.services.training.core import estimator_params, make_estimator
from eddy.streams.learning.models import model_class

RETRAIN_SEED = 42  # the built-in estimators' seed: the same window gives the same fit
ESTIMATOR_CLASS = "estimator_class"  # lineage: what a project's factory built


@dataclass(frozen=True)
class RetrainConfig:
    """What a retrain reads: its window, how it holds examples out and what the offline
    gate asks of a candidate; when alerts start one (debounce, the wait for examples
    after a drift) and when a schedule or fresh data do.

    ``estimator`` names what a retrain fits, for the lineage: a built-in estimator
    (:data:`~eddy.services.training.core.ESTIMATORS`), or ``project:<name>`` when
    ``estimator_factory`` (a project's ``retrain_estimator``) builds it.

    >>> config = RetrainConfig(window=500, holdout=0.2, min_holdout=50,
    ...     estimator="logistic_regression", metric="accuracy", margin=0.0)
    >>> config.gate.higher_is_better, config.gate.min_holdout
    (True, 50)
    >>> config.lineage_params(config.new_estimator(True))["estimator"]
    'logistic_regression'
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
    # A fresh, unfitted estimator for a classification (True) or a regression; None:
    # the built-in ``estimator``.
    estimator_factory: Callable[[bool], Any] | None = field(default=None, compare=False, repr=False)

    @property
    def gate(self) -> OfflineGate:
        """The offline gate a candidate passes on the hold-out."""
        return offline_gate(self.metric, self.margin, self.min_holdout)

    def new_estimator(self, classification: bool) -> Any:
        """A fresh, unfitted estimator for one retrain: the factory's, else the built-in
        ``estimator`` seeded with :data:`RETRAIN_SEED`."""
        if self.estimator_factory is not None:
            return self.estimator_factory(classification)
        return make_estimator(self.estimator, classification, seed=RETRAIN_SEED)

    def lineage_params(self, estimator: Any) -> dict[str, Any]:
        """What a version's lineage records of the ``estimator`` it fitted: its name,
        for a factory's its classes too, and its plain parameters. The name and classes
        come last: a final step with a parameter of the same name (BaggingClassifier's
        and AdaBoostClassifier's ``estimator``, None by default) must not replace
        ``project:<name>``, by which a version is known to be the project's."""
        built = {} if self.estimator_factory is None else {ESTIMATOR_CLASS: model_class(estimator)}
        return {**estimator_params(estimator), "estimator": self.estimator, **built}


def offline_gate(metric: str, margin: float, min_holdout: int) -> OfflineGate:
    """The gate for ``metric``: which way is better follows from the metric's name."""
    return OfflineGate(
        metric=metric,
        higher_is_better=metric in HIGHER_IS_BETTER,
        margin=margin,
        min_holdout=min_holdout,
    )
