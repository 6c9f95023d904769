"""The deployment's online learner, from settings: one builder for every process.

``eddy run learner`` and ``eddy backtest`` start from the same :class:`LearnerConfig`
(a backtest policy then overrides what it names), so a backtest replays what the
deployment would do: its model, detector, mini-batches, slices, drift tests, the
features data drift leaves out and what drift alone asks for.

With a project, the online model is the project's ``online_model()``
(:func:`online_model_factory`), wrapped in Eddy's encoding like a built-in kind; without
one, ``EDDY_LEARNER_KIND`` names it, as before projects.
"""

from __future__ import annotations

from collections.abc import Callable

from eddy.services.config.settings import Settings
from eddy.services.project.loading import Project
from eddy.streams.features.compute import FeatureSet
from eddy.streams.learning.learner import LearnerConfig
from eddy.streams.learning.models import PROJECT_KIND, OnlineModel, wrap_model


def deployment_learner(
    settings: Settings, features: FeatureSet, project: Project | None = None
) -> LearnerConfig:
    """The learner of the deployment ``settings`` describe, over its ``features``
    (:func:`eddy.services.project.deployment.deployment_features`); with ``project``,
    of kind ``"project"``, naming what its ``online_model()`` builds."""
    return LearnerConfig(
        model=settings.model_name,
        kind=settings.learner_kind if project is None else PROJECT_KIND,
        online_model="" if project is None else project.online_model_class,
        detector=settings.learner_detector,
        batch=settings.learner_batch,
        slices=settings.slices,
        slice_max_values=settings.slice_max_values,
        drift=settings.drift,
        drift_ignore=features.accumulating_names(),
        drift_action=settings.drift_action,
        estimate=settings.estimate,
        estimate_action=settings.estimate_action,
    )


def online_model_factory(project: Project | None) -> Callable[[], OnlineModel] | None:
    """What builds the deployment's online model afresh: the project's
    ``online_model()`` wrapped in Eddy's encoding; None without a project (the learner
    builds the kind its config names)."""
    if project is None:
        return None
    build = project.online_model
    return lambda: wrap_model(build())


def learner_labels(
    settings: Settings, project: Project | None
) -> tuple[str, str | None, str | None]:
    """The online model's kind, task and, for a project's binary classifier, what it is:
    which labels it can learn (:func:`~eddy.streams.learning.models.label_refusal`), so
    a retrain leaves out of its window the examples the learner refuses. A built-in kind
    knows its task and whether it is binary (None, None)."""
    if project is None:
        return settings.learner_kind, None, None
    return PROJECT_KIND, project.online_task, project.online_binary
