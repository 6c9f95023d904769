"""Test tiers and the shared infrastructure fixtures.

Tests under ``tests/unit`` are marked ``unit`` and need nothing running. Tests under
``tests/integration`` are marked ``integration`` and get real Kafka and Redis from the
session-scoped :func:`stack` fixture, which starts them once per run:

- with a Docker engine answering, testcontainers runs the same images as
  docker-compose.yml;
- otherwise ``scripts/stack.sh up`` starts (or reuses) the local broker and Redis.

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

import pytest

from services.settings import PROJECT_ROOT, Settings
from streams.clients import make_admin

STACK_SCRIPT = PROJECT_ROOT / "scripts" / "stack.sh"
CHAOS_TESTS = "test_chaos.py"
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
    if session.config.option.collectonly:
        return
    if any(Path(str(item.path)).name == CHAOS_TESTS for item in session.items):
        from tests.integration import chaos_run

        chaos_run.started()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.integration import chaos_run

    chaos_run.stop_if_started()


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


def _stack(action: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STACK_PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(STACK_SCRIPT), action], env=env, capture_output=True, text=True, check=False
    )


def _local_stack(cleanup: ExitStack) -> dict[str, str]:
    already_running = _stack("status").returncode == 0
    if not already_running:
        started = _stack("up")
        if started.returncode != 0:
            pytest.fail(
                "could not start Kafka and Redis with scripts/stack.sh up "
                f"(exit {started.returncode}):\n{started.stderr}{started.stdout}",
                pytrace=False,
            )
        cleanup.callback(_stack, "down")
    return {}


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
            endpoints = _local_stack(cleanup)
        yield base.model_copy(
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
def group_id() -> str:
    """A consumer group of its own for each test."""
    return f"eddy-test-group-{uuid.uuid4().hex[:10]}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The process environment plus ``settings`` as EDDY_* variables, for subprocesses."""
    return settings.child_env()
