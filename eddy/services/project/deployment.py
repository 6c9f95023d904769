"""What a deployment runs: the project in use (``EDDY_PROJECT``), or Eddy's built-in demo.

Every service takes its feature set (and, with a project, the raw fields its events
must fit) from here, once, at its entry point, and passes them down: one deployment
computes one feature set for training, serving and replays, and its fingerprint is
what a trained model's lineage records. Without a project the services run
:data:`eddy.streams.features.definitions.FEATURES` and accept any raw fields, as Eddy
did before projects.

The project's models go the same way: the entry points hand the loaded project to
:func:`~eddy.services.config.learner.deployment_learner` and
:func:`~eddy.services.config.learner.online_model_factory` (the learner learns its
``online_model()``), and to the retrainer
(:func:`~eddy.services.config.retraining.deployment_retraining`: a retrain fits its
``retrain_estimator``); the registry trusts its ``[models] trusted`` types
(:func:`~eddy.services.registry.opening.open_registry`). Without a project, the models
``EDDY_LEARNER_KIND`` and ``EDDY_RETRAIN_ESTIMATOR`` name.

>>> from eddy.services.config.settings import Settings
>>> deployment_features(Settings()) is FEATURES, raw_schema_of(None)
(True, None)
"""

from __future__ import annotations

import logging

from eddy.services.config.settings import Settings
from eddy.services.project.loading import Project, load_project
from eddy.streams.features.compute import FeatureSet
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.raw_schema import RawSchema

log = logging.getLogger(__name__)


def deployment_project(settings: Settings) -> Project | None:
    """The project ``settings`` name, loaded and checked (raises
    :class:`~eddy.services.project.errors.ProjectError`); None without one."""
    return None if settings.project is None else load_project(settings.project)


def features_of(project: Project | None) -> FeatureSet:
    """The features a deployment of ``project`` computes (None: the built-in ones)."""
    return FEATURES if project is None else project.features


def raw_schema_of(project: Project | None) -> RawSchema | None:
    """The raw fields events must fit (None: any, as the message contract allows)."""
    return None if project is None else project.schema


def deployment_features(settings: Settings) -> FeatureSet:
    """The feature set of the deployment ``settings`` describe."""
    return features_of(deployment_project(settings))


def warn_of_short_lateness(settings: Settings, features: FeatureSet) -> None:
    """Warn when windows read as of the clock can miss buckets: a source's
    buckets are kept for its windows plus the allowed lateness after the entity's newest
    event, which the worker admits up to ``EDDY_MAX_EVENT_TIME_SKEW_S`` ahead of the
    clock; a lateness below that skew lets a future-dated event push out buckets a
    window as of now still covers, until the clock catches up with it."""
    if features.aggregates and features.allowed_lateness_s < settings.max_event_time_skew_s:
        log.warning(
            "allowed lateness below the event-time skew: windows read as of now can miss "
            "their oldest buckets while an entity's newest event is ahead of the clock",
            extra={
                "allowed_lateness_s": features.allowed_lateness_s,
                "max_event_time_skew_s": settings.max_event_time_skew_s,
            },
        )
