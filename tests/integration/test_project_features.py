"""A project's features and raw fields in a running feature worker (issue #17).

A project written by ``eddy init`` is changed to aggregate a field Eddy's demo never
reads (``temperature``, declared as a float between -40 and 60), and ``eddy run
features`` runs with ``EDDY_PROJECT`` naming it. Invariants checked: the online store
holds the project's features for the entity (not the built-in ones), the training
examples carry the project's feature-set fingerprint (what lineage records), and an
event with an undeclared field or a value out of its declared range is dead-lettered
with a reason naming the field, while the worker keeps running.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eddy.services.ops.console import read_topic
from eddy.services.project.layout import FEATURES_FILE, PROJECT_FILE
from eddy.services.project.loading import load_project
from eddy.services.project.scaffold import init_project
from eddy.streams.dead_letters.letter import ERROR_CLASS, ERROR_REASON
from eddy.streams.features.compute import FeatureSet, feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.raw_schema import RAW_FIELDS_ERROR
from eddy.streams.transport.topics import Topic
from tests.factories import DeploymentSettings
from tests.integration.feature_workers import FeatureDeployment, quiet_hour_base, send_records
from tests.waiting import wait_until

DEADLINE_S = 120.0
POLL_S = 0.5
READ_IDLE_S = 5.0
STOP_TIMEOUT_S = 30
ENTITY = "greenhouse-1"
TEMPERATURES = (18.0, 21.0, 24.0)
LABELLED = 20.0  # the temperature of the one labelled event
TOO_HOT = 99.0  # above the declared max of 60
# The template's STAGGER fields are required: every event of this project carries them.
STAGGER = {"size": 1, "color": 0, "shape": 2}
PROJECT_FEATURES = """
from eddy.streams.features.compute import Aggregate, FeatureSet, tumbling

FEATURES = FeatureSet(
    aggregates=(Aggregate("temperature", ("count", "mean", "max"), tumbling(3600)),),
    passthrough=None,
    time_since_last=False,
)
"""
TEMPERATURE_FIELD = """
[fields.temperature]
type = "float"
min = -40
max = 60
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    init_project(folder)
    (folder / FEATURES_FILE).write_text(PROJECT_FEATURES)
    with (folder / PROJECT_FILE).open("a") as toml:
        toml.write(TEMPERATURE_FIELD)
    return folder


@pytest.fixture
def deployment(
    deployment_settings: DeploymentSettings, tmp_path: Path, project: Path
) -> Iterator[FeatureDeployment]:
    # child_env passes EDDY_PROJECT to the worker: it runs the project's features.
    settings = deployment_settings("proj", partitions=1, project=project)
    deployment = FeatureDeployment(settings, tmp_path, [])
    yield deployment
    for worker in deployment.workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                worker.kill()


def project_event(event_id: str, at: float, fields: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "entity_id": ENTITY,
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            "features": fields,
            **extra,
        }
    )


def online(deployment: FeatureDeployment, features: FeatureSet, as_of: float) -> dict[str, Any]:
    stored = deployment.store().load([ENTITY])[ENTITY]
    return dict(feature_vector(stored.state, features, as_of))


def test_the_worker_runs_the_projects_features_and_refuses_undeclared_fields(
    deployment: FeatureDeployment, project: Path
) -> None:
    features = load_project(project).features
    assert features.fingerprint() != FEATURES.fingerprint()
    base = quiet_hour_base()
    key = ENTITY.encode()
    fitting = [
        (key, project_event(f"t{i}", base + i, STAGGER | {"temperature": t}))
        for i, t in enumerate(TEMPERATURES)
    ]
    at = base + len(TEMPERATURES)
    labelled = (key, project_event("labelled", at, STAGGER | {"temperature": LABELLED}, label=True))
    undeclared = (key, project_event("humid", base + 10, STAGGER | {"humidity": 0.4}))
    too_hot = (key, project_event("hot", base + 11, STAGGER | {"temperature": TOO_HOT}))
    deployment.start_worker()
    send_records(
        deployment.settings,
        deployment.topic(Topic.EVENTS),
        [*fitting, undeclared, too_hot, labelled],
    )

    applied = len(fitting) + 1
    wait_until(
        lambda: online(deployment, features, base + 60).get("temperature_count_1h") == applied,
        "the project's features of the fitting events to be in Redis",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=deployment.logs,
    )
    vector = online(deployment, features, base + 60)
    assert vector["temperature_mean_1h"] == pytest.approx((sum(TEMPERATURES) + LABELLED) / applied)
    assert vector["temperature_max_1h"] == max(TEMPERATURES)
    assert "amount_count_1h" not in vector, "the built-in features ran, not the project's"

    examples = list(
        read_topic(
            deployment.settings,
            deployment.topic(Topic.TRAINING_EXAMPLES),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=READ_IDLE_S,
        )
    )
    assert [e.value["example_id"] for e in examples] == ["labelled"]
    assert examples[0].value["feature_set"] == features.fingerprint()
    assert "temperature_mean_1h" in examples[0].value["features"]

    letters = list(
        read_topic(
            deployment.settings,
            deployment.topic(Topic.DEAD_LETTER),
            from_beginning=True,
            max_messages=None,
            idle_timeout_s=READ_IDLE_S,
        )
    )
    by_value = {letter.original.value: letter.headers for letter in letters}
    assert set(by_value) == {undeclared[1], too_hot[1]}
    assert {headers[ERROR_CLASS] for headers in by_value.values()} == {RAW_FIELDS_ERROR}
    assert "unknown field 'humidity'" in by_value[undeclared[1]][ERROR_REASON]
    assert "field 'temperature'" in by_value[too_hot[1]][ERROR_REASON]
    assert "above its max 60" in by_value[too_hot[1]][ERROR_REASON]
    assert all(worker.poll() is None for worker in deployment.workers), deployment.logs()
