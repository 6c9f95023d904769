"""A project of the user's, from ``eddy init`` to its answers, and a change rolled out
live with ``eddy apply`` (issue #17's acceptance).

The project declares raw fields the shipped demo never uses (a greenhouse's
``temperature``, ``humidity`` and ``site``), features over them, a River pipeline of its
own online and a scikit-learn pipeline of its own for retrains. Everything goes through
the ``eddy`` command and the real services (features, learner, predictor) on the real
broker and Redis. Invariants checked:

- ``eddy plan`` shows the first deployment, ``eddy apply`` records it;
- the learner's snapshots are the project's River pipeline, a retrain fits its
  scikit-learn pipeline, and the answers served come from that version, carry the
  project's feature-set fingerprint, and ``eddy trace`` shows both;
- a changed definition, applied while events keep coming, rebuilds the online store
  under the new fingerprint; the running workers restart with it by themselves; from the
  first answer carrying the new fingerprint on, every answer does; and the new states
  hold every event exactly once (the counts equal the events sent, before, during and
  after the change).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from eddy.services.config.settings import Settings
from eddy.services.project.loading import load_project
from eddy.services.registry.opening import open_registry
from eddy.services.registry.store import CHAMPION, RIVER, SKLEARN
from eddy.streams.features.compute import feature_vector
from eddy.streams.learning.checkpoints import CheckpointStore
from eddy.streams.store.online import OnlineStore
from eddy.streams.store.serialization import signing_key
from eddy.streams.transport.clients import make_redis
from eddy.streams.transport.topics import Topic, topic_name
from tests.factories import DeploymentSettings
from tests.integration.feature_workers import quiet_hour_base, send_records
from tests.integration.predictors import Service, answers_consumer
from tests.processes import EDDY, start_eddy
from tests.projects import ONLINE_CLASSES, PROJECT_MODELS, RETRAIN_CLASSES, edit
from tests.waiting import wait_until

MODEL = "greenhouse"
DEADLINE_S = 120.0
POLL_S = 0.5
COMMAND_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
ENTITIES = [f"gh-{i}" for i in range(6)]
EVENTS_BEFORE = 600  # learned before the change: the first snapshot comes at SNAPSHOT_EVERY
EVENTS_DURING = 300  # sent as the change is applied and the workers restart
EVENTS_AFTER = 60
SNAPSHOT_EVERY = 200
EVENT_SPACING_S = 0.2
HOT = 25.0  # the concept: a greenhouse above this is labelled True
REQUESTS_PER_ROUND = len(ENTITIES)
FOLLOW_EVERY_S = 0.5
RESTARTED = "another revision of the project was applied; restarting with it"
STARTED = '"message":"following the applied project"'  # logged as a worker starts
EDDY_TOML = """
[project]
name = "greenhouse"
model = "greenhouse"

[settings]

[fields.temperature]
type = "float"
min = -40
max = 60

[fields.humidity]
type = "float"
min = 0
max = 100

[fields.site]
type = "str"
categories = ["north", "south"]
"""
FEATURES = """
from eddy.streams.features.compute import Aggregate, FeatureSet, tumbling

FEATURES = FeatureSet(
    aggregates=(
        Aggregate("temperature", ("count", "mean", "max"), tumbling(3600)),
        Aggregate("humidity", ("mean",), tumbling(3600)),
    ),
    passthrough=None,
    time_since_last=False,
)
"""
# Half-hour buckets for the humidity: other states, so a rebuild.
CHANGED_WINDOW = (
    'Aggregate("humidity", ("mean",), tumbling(3600))',
    'Aggregate("humidity", ("mean",), tumbling(1800))',
)


@pytest.fixture
def project(tmp_path: Path, stack: Settings) -> Path:
    folder = tmp_path / "greenhouse"
    made = eddy(stack.child_env(), "init", str(folder))
    assert "wrote" in made
    (folder / "eddy.toml").write_text(EDDY_TOML)
    (folder / "features.py").write_text(FEATURES)
    (folder / "models.py").write_text(PROJECT_MODELS)
    return folder


@pytest.fixture
def settings(deployment_settings: DeploymentSettings, project: Path) -> Settings:
    return deployment_settings(
        "apply",
        partitions=1,
        project=project,
        # child_env sets every EDDY_* variable, and a variable wins over eddy.toml.
        model_name=MODEL,
        deployment_check_s=FOLLOW_EVERY_S,
        snapshot_every=SNAPSHOT_EVERY,
        checkpoint_every=100,
        checkpoint_interval_s=1.0,
        retrain_window=EVENTS_BEFORE,
        retrain_min_holdout=50,
    )


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    running: dict[str, subprocess.Popen[bytes]] = {}
    yield running
    for process in running.values():
        if process.poll() is None:
            process.terminate()
    for process in running.values():
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()


def eddy(env: dict[str, str], *args: str) -> str:
    """``eddy <args>``'s output; fails the test, showing it, unless it exits 0."""
    done = subprocess.run(
        [EDDY, *args], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == 0, f"eddy {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def greenhouse_event(i: int, base: float) -> tuple[str, bytes]:
    """The ``i``-th event: a reading of one greenhouse, labelled by the concept."""
    entity = ENTITIES[i % len(ENTITIES)]
    temperature = 10.0 + (i * 7.3) % 30.0
    value = {
        "event_id": f"reading-{i}",
        "entity_id": entity,
        "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i * EVENT_SPACING_S))
        + f".{int((base + i * EVENT_SPACING_S) * 1000) % 1000:03d}Z",
        "features": {
            "temperature": temperature,
            "humidity": 40.0 + (i * 3.1) % 50.0,
            "site": "north" if i % 2 else "south",
        },
        "label": temperature > HOT,
    }
    return entity, orjson.dumps(value)


def send_events(settings: Settings, first: int, count: int, base: float) -> None:
    records = [greenhouse_event(i, base) for i in range(first, first + count)]
    send_records(
        settings,
        topic_name(Topic.EVENTS, settings.topic_prefix),
        [(entity.encode(), value) for entity, value in records],
    )


def ask(settings: Settings, tag: str) -> list[str]:
    """One request per greenhouse; returns their ids."""
    ids = [f"{tag}-{entity}" for entity in ENTITIES]
    send_records(
        settings,
        topic_name(Topic.PREDICTION_REQUESTS, settings.topic_prefix),
        [
            (entity.encode(), orjson.dumps({"request_id": rid, "entity_id": entity}))
            for rid, entity in zip(ids, ENTITIES, strict=True)
        ],
    )
    return ids


def answers(consumer: KafkaConsumer, into: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers read since the last call, in the order served; also kept in ``into``."""
    read = []
    for records in consumer.poll(timeout_ms=500).values():
        for record in records:
            answer = orjson.loads(record.value)
            into[answer["request_id"]] = answer
            read.append(answer)
    return read


def counts(settings: Settings, features: Any, as_of: float) -> dict[str, int]:
    store = OnlineStore(
        make_redis(settings),
        settings.topic_prefix,
        settings.feature_ttl_s,
        states=features.state_fingerprint(),
    )
    states = store.load(ENTITIES)
    return {
        e: int(feature_vector(s.state, features, as_of)["temperature_count_1h"] or 0)
        for e, s in states.items()
    }


def expected_counts(events: int) -> dict[str, int]:
    return {
        e: sum(1 for i in range(events) if i % len(ENTITIES) == n) for n, e in enumerate(ENTITIES)
    }


def test_a_users_project_is_served_and_a_changed_definition_rolls_out_live(
    settings: Settings,
    project: Path,
    workers: dict[str, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    env = settings.child_env()
    first = load_project(project)

    planned = eddy(env, "plan")
    assert "first deployment: project greenhouse" in planned
    assert "temperature_mean_1h" in planned
    applied = eddy(env, "apply")
    assert "applied revision 1 of project greenhouse" in applied

    logs = {name: tmp_path / f"{name}.log" for name in ("features", "learner", "predictor")}
    for name in ("features", "learner"):
        workers[name] = start_eddy(settings, logs[name], "run", name)
    registry = open_registry(settings, announce=False)
    service = Service(settings, registry, None, logs["predictor"])
    service.start()
    assert service.process is not None
    workers["predictor"] = service.process

    def shown() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in logs.items())

    base = quiet_hour_base()
    send_events(settings, 0, EVENTS_BEFORE, base)
    wait_until(
        lambda: registry.alias(MODEL, CHAMPION) is not None,
        "the project's online model snapshotted as the first champion",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=shown,
    )
    snapshot = registry.get(MODEL, 1)
    assert snapshot.flavor == RIVER
    assert snapshot.lineage.params["online_model"] == ONLINE_CLASSES
    assert snapshot.lineage.feature_set == first.fingerprint

    retrained = eddy(env, "retrain", MODEL, "--reason", "the project's estimator")
    version = int(retrained.split("@", 1)[1].split(":", 1)[0])
    eddy(env, "models", "promote", MODEL, str(version), "--reason", "acceptance test")
    fitted = registry.get(MODEL, version)
    assert fitted.flavor == SKLEARN
    assert fitted.lineage.params["estimator"] == "project:greenhouse"
    assert fitted.lineage.params["estimator_class"] == RETRAIN_CLASSES

    consumer = answers_consumer(service)
    seen: dict[str, dict[str, Any]] = {}

    def served_by_the_retrain() -> bool:
        ids = ask(settings, f"v{version}-{time.monotonic_ns()}")
        deadline = time.monotonic() + 10
        while not all(i in seen for i in ids) and time.monotonic() < deadline:
            answers(consumer, seen)
        return all(seen.get(i, {}).get("model_version") == str(version) for i in ids)

    wait_until(
        served_by_the_retrain,
        "answers from the project's retrained pipeline",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=shown,
    )
    answer = next(a for a in seen.values() if a.get("model_version") == str(version))
    assert answer.get("error") is None
    assert answer["prediction"] in (True, False)
    assert answer["feature_set"] == first.fingerprint
    traced = json.loads(eddy(env, "trace", answer["request_id"]))
    assert traced["lineage"]["params"]["estimator_class"] == RETRAIN_CLASSES
    assert traced["lineage"]["feature_set"] == first.fingerprint
    assert traced["request"]["output"]["feature_set"] == first.fingerprint

    # One definition changes (half-hour humidity windows), applied while events come.
    edit(project / "features.py", *CHANGED_WINDOW)
    changed = load_project(project)
    planned = eddy(env, "plan")
    assert "feature added: humidity_mean_30m" in planned
    assert f"feature set: {first.fingerprint} -> {changed.fingerprint}" in planned
    send_events(settings, EVENTS_BEFORE, EVENTS_DURING // 2, base)
    applied = eddy(env, "apply")
    assert f"online store rebuilt for feature set {changed.fingerprint}" in applied
    assert "applied revision 2" in applied
    send_events(settings, EVENTS_BEFORE + EVENTS_DURING // 2, EVENTS_DURING // 2, base)

    order: list[dict[str, Any]] = []

    def serving_the_change() -> bool:
        ask(settings, f"change-{time.monotonic_ns()}")
        order.extend(answers(consumer, seen))
        return any(a.get("feature_set") == changed.fingerprint for a in order)

    wait_until(
        serving_the_change,
        "answers computed with the changed features",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=shown,
    )
    total = EVENTS_BEFORE + EVENTS_DURING + EVENTS_AFTER
    send_events(settings, EVENTS_BEFORE + EVENTS_DURING, EVENTS_AFTER, base)
    last = ask(settings, "after")
    deadline = time.monotonic() + DEADLINE_S
    while not all(i in seen for i in last) and time.monotonic() < deadline:
        order.extend(answers(consumer, seen))
    assert all(i in seen for i in last), shown()
    switched = next(n for n, a in enumerate(order) if a.get("feature_set") == changed.fingerprint)
    after = [a for a in order[switched:] if a.get("error") is None]
    assert after
    assert {a["feature_set"] for a in after} == {changed.fingerprint}

    as_of = base + total * EVENT_SPACING_S
    wait_until(
        lambda: counts(settings, changed.features, as_of) == expected_counts(total),
        "every event exactly once in the changed feature set's states",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=shown,
    )
    store = OnlineStore(
        make_redis(settings),
        settings.topic_prefix,
        settings.feature_ttl_s,
        states=changed.features.state_fingerprint(),
    )
    vector = feature_vector(store.load([ENTITIES[0]])[ENTITIES[0]].state, changed.features, as_of)
    assert vector["humidity_mean_30m"] is not None
    # Every event is labelled: the learner, restarted across the change, learned each
    # one exactly once (an example the rollout lost, or one sent twice, shows here).
    checkpoints = CheckpointStore(
        settings.data_dir / "checkpoints" / MODEL, signing_key(None, settings.data_dir)
    )

    def learned() -> int:
        state = checkpoints.latest()
        return 0 if state is None else state.learner.examples

    wait_until(
        lambda: learned() >= total,
        "every labelled event learned",
        timeout_s=DEADLINE_S,
        every_s=POLL_S,
        logs=shown,
    )
    assert learned() == total
    for name in ("features", "learner", "predictor"):
        log = logs[name].read_text()
        assert RESTARTED in log, f"{name} did not restart: {shown()}"
        # The process exec'd itself: the new one started, with the changed project.
        assert log.count(STARTED) == 2, f"{name} did not start again: {shown()}"
        assert workers[name].poll() is None, f"{name} exited: {shown()}"
