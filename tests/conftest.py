"""Test tiers and the shared infrastructure fixtures.

Tests under ``tests/unit`` are marked ``unit`` and need nothing running. Tests under
``tests/integration`` are marked ``integration`` and get real Kafka and Redis from the
session-scoped :func:`stack` fixture, which starts them once per run:

- with a Docker engine answering, testcontainers runs the same images as
  docker-compose.yml (a pair per pytest-xdist worker);
- otherwise ``scripts/stack.sh up`` starts (or reuses) the local broker and Redis, once
  for all the session's pytest-xdist workers (``tests/session_state.py``); the
  controller stops it when every worker is done.

Tests marked ``cluster`` get the clustered stack instead (:func:`cluster_stack`: three
KRaft brokers, replication factor 3, and a Redis Cluster of three masters with a replica
each), started by ``scripts/stack.sh up --cluster`` the same way, beside the other.

When neither works the run fails loudly: integration tests are never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from eddy.services.config.settings import PROJECT_ROOT, Settings
from eddy.streams.transport.clients import make_admin
from tests import factories, session_state
from tests.factories import DeploymentSettings
from tests.integration import chaos_run

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
CHAOS_TESTS = "test_chaos.py"
STACK_STARTED = "stack-started"
CLUSTER_STARTED = "cluster-stack-started"
KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7"
DOCKER_SOCKET = "/var/run/docker.sock"
# Short group timeouts so joins and failovers in tests take seconds, not the default 45 s.
TEST_SESSION_TIMEOUT_MS = 6_000
TEST_HEARTBEAT_MS = 1_000


def pytest_configure(config: pytest.Config) -> None:
    """One native thread per process, in this one and in every process it starts.

    The suite runs the chaos run's services beside the unit tests, and many processes
    in the integration tests, on few cores: OpenMP's and BLAS's pools (one thread per
    core each) then spin against each other. Measured with two busy cores beside it,
    the backtest detector test took 55 s with two threads and 18 s with one.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    session_state.open_folder()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    threadpool_limits(limits=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "unit" in parts or "tests" not in parts:
            item.add_marker(pytest.mark.unit)
    # What needs nothing running first (the chaos run works in the background meanwhile,
    # see pytest_collection_finish), then the chaos tests, then the other integration tests.
    items.sort(key=_running_order)


def _running_order(item: pytest.Item) -> int:
    path = Path(str(item.path))
    if "integration" not in path.parts:
        return 0
    return 1 if path.name == CHAOS_TESTS else 2


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or session_state.is_worker(session.config):
        return
    if any(Path(str(item.path)).name == CHAOS_TESTS for item in session.items):
        chaos_run.start_once(session_state.folder())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """The controller of pytest-xdist workers starts the chaos run (workers never do)."""
    if node.config.option.collectonly:
        return
    if any(CHAOS_TESTS in test_id for test_id in ids):
        chaos_run.start_once(session_state.folder())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller stops what the session started, once every worker is done."""
    if session_state.is_worker(session.config):
        return
    chaos_run.stop_if_started(session_state.folder())
    if session_state.marked(STACK_STARTED):
        _stack("down")
    if session_state.marked(CLUSTER_STARTED):
        _stack("down", "--cluster")
    session_state.close_folder()


def _docker_answers() -> bool:
    # Look before asking: docker-py leaks a socket when the engine's socket is absent.
    if "DOCKER_HOST" not in os.environ and not Path(DOCKER_SOCKET).exists():
        return False
    import docker

    try:
        client = docker.from_env(timeout=3)
    except Exception:  # no Docker configuration at all: use the local stack
        return False
    try:
        return bool(client.ping())
    except Exception:  # no engine, no socket, no permission: use the local stack
        return False
    finally:
        client.close()


def _stack(action: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STACK_PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(STACK_SCRIPT), action, *options],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _local_stack() -> dict[str, str]:
    """Start the local stack unless it runs; the session's controller stops what it started.

    Every worker asks, under the session's lock, so only one of them starts it.
    """
    _start_once(STACK_STARTED)
    return {}


def _start_once(mark: str, *options: str) -> None:
    """``scripts/stack.sh up [options]`` unless that stack answers, by one process of the
    session (under its lock); ``mark`` tells the controller to stop it at the end."""
    with session_state.exclusive(mark):
        if _stack("status", *options).returncode != 0:
            started = _stack("up", *options)
            if started.returncode != 0:
                pytest.fail(
                    f"could not start the stack with scripts/stack.sh up {' '.join(options)} "
                    f"(exit {started.returncode}):\n{started.stderr}{started.stdout}",
                    pytrace=False,
                )
            session_state.mark(mark)


def _cluster_stack() -> str:
    """Start the clustered stack unless it runs (once per session, like the other), and
    the settings that point at it, from ``scripts/stack.sh env --cluster``."""
    _start_once(CLUSTER_STARTED, "--cluster")
    return _stack("env", "--cluster").stdout


def _containers(cleanup: ExitStack) -> dict[str, str]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    kafka = cleanup.enter_context(
        KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    redis = cleanup.enter_context(
        RedisContainer(REDIS_IMAGE).with_command(
            "redis-server --maxmemory 2gb --maxmemory-policy noeviction"
        )
    )
    host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
    return {
        "kafka_bootstrap": kafka.get_bootstrap_server(),
        "redis_url": f"redis://{host}:{port}/0",
    }


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """Settings pointing at a running Kafka and Redis, with a topic prefix of its own."""
    base = Settings.from_env()
    with ExitStack() as cleanup:
        # stack.sh starts only what the user did not point elsewhere, and checks the rest.
        uses_external = base.uses_external_kafka or base.uses_external_redis
        if not uses_external and _docker_answers():
            endpoints = _containers(cleanup)
        else:
            endpoints = _local_stack()
        yield _for_tests(base, endpoints)


@pytest.fixture(scope="session")
def cluster_stack() -> Settings:
    """Settings pointing at the clustered stack (``scripts/stack.sh up --cluster``)."""
    clustered = Settings.from_env().pointed_at(_cluster_stack())
    assert clustered.redis_cluster, "scripts/stack.sh env --cluster named no Redis Cluster"
    return _for_tests(clustered, {})


def _for_tests(base: Settings, endpoints: dict[str, str]) -> Settings:
    return base.model_copy(
        update={
            **endpoints,
            "topic_prefix": f"eddy-test-{uuid.uuid4().hex[:8]}.",
            "consumer_session_timeout_ms": TEST_SESSION_TIMEOUT_MS,
            # Many services run at once in tests: metrics only where a test asks.
            "metrics_port": 0,
            "consumer_heartbeat_interval_ms": TEST_HEARTBEAT_MS,
            # Services run inside pytest in many tests: a stall must fail the test,
            # not exit the whole run. Liveness tests set their own timeout.
            "stall_timeout_s": 0,
        }
    )


@pytest.fixture
def new_topic(stack: Settings) -> Callable[..., str]:
    """Factory: a fresh topic per call, so tests never see each other's records."""
    from kafka.admin import NewTopic

    def create(partitions: int = 1, **config: str) -> str:
        name = f"{stack.topic_prefix}t-{uuid.uuid4().hex[:10]}"
        admin = make_admin(stack)
        try:
            admin.create_topics(
                [NewTopic(name, partitions, stack.replication_factor, topic_configs=config)]
            )
        finally:
            admin.close()
        return name

    return create


@pytest.fixture
def deployment_settings(stack: Settings, tmp_path: Path) -> DeploymentSettings:
    """Factory: ``make(tag, **overrides)``, settings for a deployment of the test's own.

    A topic prefix and data folder of its own, Eddy's topics created under that prefix
    (:func:`tests.factories.deployment_settings`); the data folder is ``tmp_path/data``.
    """

    def make(tag: str, **overrides: Any) -> Settings:
        return factories.deployment_settings(stack, tmp_path / "data", tag, **overrides)

    return make


@pytest.fixture
def group_id() -> str:
    """A consumer group of its own for each test."""
    return f"eddy-test-group-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A fresh project written by `eddy init`'s template (the demo as a project)."""
    from eddy.services.project.scaffold import init_project

    folder = tmp_path / "project"
    init_project(folder)
    return folder
