"""A project's own models in a running deployment (issue #17, slice 3).

A project written by ``eddy init`` gets a ``models.py`` of its own: a River pipeline
with a distinctive optimizer online, and a scikit-learn pipeline whose steps are not
named like Eddy's (``vectors``, ``scale``, ``fit``) with ``C=0.5`` for a retrain.
Invariants checked: a retrain against the real broker fits the project's estimator, its
registered version's lineage names it (``project:<name>``, the classes built, their
parameters) and the registry loads back exactly that pipeline; ``eddy run learner`` in
the project learns the project's online model, checkpoints it and registers its
snapshots with lineage naming it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eddy.services.config.settings import Settings
from eddy.services.project.deployment import deployment_project
from eddy.services.project.layout import MODELS_FILE
from eddy.services.project.scaffold import init_project
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import RIVER, SKLEARN
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.services.training.retrainer import Retrainer
from eddy.streams.learning.models import PROJECT_KIND
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.learners import LearnerDeployment, examples, send_messages, synthetic
from tests.integration.training_examples import concept, publish_examples
from tests.projects import LEARNING_RATE, ONLINE_CLASSES, PROJECT_MODELS, RETRAIN_CLASSES, C
from tests.waiting import wait_until

MODEL = "churn"
DEADLINE_S = 120.0
POLL_S = 0.3
RETRAIN_EXAMPLES = 1500
LEARNED_EXAMPLES = 2000
SNAPSHOT_EVERY = 1000
LEARNER_SEED = 8
MIN_ACCURACY = 0.75  # a linear concept: the model learned it, whatever its optimizer


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    init_project(folder)
    (folder / MODELS_FILE).write_text(PROJECT_MODELS)
    return folder


@pytest.fixture
def deployment(deployment_settings: DeploymentSettings, project: Path) -> Settings:
    return deployment_settings(
        "pmodels", retrain_window=2000, retrain_min_holdout=100, project=project
    )


@pytest.fixture
def learner_deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path, project: Path
) -> Iterator[LearnerDeployment]:
    # child_env passes EDDY_PROJECT to the learner: it learns the project's online model.
    settings = deployment_settings(
        "pmlearn",
        partitions=1,
        checkpoint_every=500,
        checkpoint_interval_s=1.0,
        snapshot_every=SNAPSHOT_EVERY,
        project=project,
    )
    deployment = LearnerDeployment(settings, tmp_path, [])
    yield deployment
    deployment.kill_running()


def test_a_retrain_fits_registers_and_loads_the_projects_estimator(deployment: Settings) -> None:
    loaded = deployment_project(deployment)
    assert loaded is not None
    registry = open_registry(deployment, announce=False)
    rows: list[tuple[dict[str, Any], Any]] = list(concept(RETRAIN_EXAMPLES, 4, flipped=False))
    publish_examples(deployment, rows, 0, base=time.time(), step_s=0.001, tag="pm")

    trigger = Trigger(TriggerKind.OPERATOR, "project models test")
    outcome = Retrainer(deployment, registry, project=loaded).retrain(MODEL, trigger)

    version = registry.get(MODEL, outcome.version)
    assert version.flavor == SKLEARN
    params = version.lineage.params
    assert params["estimator"] == f"project:{loaded.name}"
    assert params["estimator_class"] == RETRAIN_CLASSES
    assert params["C"] == C
    assert version.lineage.feature_set == "fs-test"
    fitted = registry.load(MODEL, outcome.version)
    assert [name for name, _ in fitted.steps] == ["vectors", "scale", "fit"]
    assert type(fitted.named_steps["fit"]).__name__ == "LogisticRegression"
    assert fitted.named_steps["fit"].C == C
    # On an empty registry a fit that beats the trivial baseline serves.
    assert outcome.decision.action == "promote", outcome.decision.reason
    held_out = concept(200, 99, flipped=False)
    right = sum(
        bool(p == y)
        for p, (_, y) in zip(fitted.predict([x for x, _ in held_out]), held_out, strict=True)
    )
    assert right / len(held_out) > MIN_ACCURACY


def test_the_learner_of_a_project_learns_its_online_model(
    learner_deployment: LearnerDeployment,
) -> None:
    deployment = learner_deployment
    topic = deployment.topic(Topic.TRAINING_EXAMPLES)
    rows = synthetic(LEARNED_EXAMPLES, seed=LEARNER_SEED)
    send_messages(deployment.settings, topic, examples(rows, topic))
    deployment.start()

    def learned() -> int:
        state = deployment.latest()
        return 0 if state is None else state.learner.examples

    wait_until(
        lambda: learned() == len(rows),
        "every example learned by the project's model",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    state = deployment.latest()
    assert state is not None
    learner = state.learner
    assert (learner.config.kind, learner.config.online_model) == (PROJECT_KIND, ONLINE_CLASSES)
    assert learner.model.kind == PROJECT_KIND
    optimizer = learner.model.estimator["LogisticRegression"].optimizer
    assert optimizer.learning_rate == LEARNING_RATE
    assert learner.metrics.report()["accuracy"] > MIN_ACCURACY

    registry = open_registry(deployment.settings, announce=False)
    model = deployment.settings.model_name
    wait_until(
        lambda: bool(registry.versions(model)),
        "an online snapshot of the project's model",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    snapshot = registry.versions(model)[0]
    assert snapshot.flavor == RIVER
    assert snapshot.lineage.params["kind"] == PROJECT_KIND
    assert snapshot.lineage.params["online_model"] == ONLINE_CLASSES
    served = registry.load(model, snapshot.version)
    assert served.estimator["LogisticRegression"].optimizer.learning_rate == LEARNING_RATE
