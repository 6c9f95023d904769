"""A faust worker keeps its table through a crash that also wipes its local state.

The worker (``faust_counter_app``) runs as a real subprocess against the real broker:
an agent reads one topic, counts records per key in a changelogged table and writes
the running count to another topic. The test kills it with SIGKILL (no clean
shutdown, no final commit), deletes its data directory and starts a fresh worker,
which must rebuild the table from the changelog and resume after the committed
offsets: the next counts continue where they stopped, nothing counted twice.

Deadlines only stop a broken run from hanging; nothing here asserts on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from pydantic import SecretStr

from services.settings import ENV_PREFIX, PROJECT_ROOT, Settings
from streams.clients import make_admin, make_consumer, make_producer
from tests.integration.faust_counter_app import CounterNames, counter_names

PARTITIONS = 2
# Faust start-up, group join and table recovery take seconds; this only bounds a hang.
DEADLINE_S = 90.0
POLL_S = 0.5
LOG_TAIL_LINES = 60


@dataclass(frozen=True)
class Worker:
    """A running counter worker and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log: Path


StartWorker = Callable[[str], Worker]


def settings_env(settings: Settings) -> dict[str, str]:
    """``EDDY_*`` variables that make ``Settings.from_env`` rebuild ``settings``."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Enum):
            value = value.value
        env[ENV_PREFIX + name.upper()] = str(value)
    return env


def log_tail(path: Path) -> str:
    """The end of a worker's log, for assertion messages."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return f"--- last {LOG_TAIL_LINES} lines of {path} ---\n" + "\n".join(lines[-LOG_TAIL_LINES:])


@pytest.fixture
def settings(stack: Settings, tmp_path: Path) -> Settings:
    """The stack's settings with a topic prefix and data folder of this test's own."""
    return stack.model_copy(
        update={
            "topic_prefix": f"{stack.topic_prefix}{uuid.uuid4().hex[:8]}.",
            "partitions": PARTITIONS,
            "data_dir": tmp_path / "data",
        }
    )


@pytest.fixture
def names(settings: Settings) -> CounterNames:
    """The worker's app id and topics, created up front with matching partitions.

    faust declares only its internal topics (the table changelog); the source and sink
    must exist before it starts, with as many partitions as the changelog.
    """
    names = counter_names(settings.topic_prefix)
    admin = make_admin(settings)
    try:
        admin.create_topics(
            [
                NewTopic(topic, PARTITIONS, settings.replication_factor)
                for topic in (names.source, names.sink)
            ]
        )
    finally:
        admin.close()
    return names


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[StartWorker]:
    """Factory: start a counter worker subprocess, logging to ``<label>.log``.

    Every worker started is SIGKILLed at teardown, whatever the test did.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= settings_env(settings) | {"PYTHONUNBUFFERED": "1"}
    assert Settings.from_env(env) == settings
    workers: list[Worker] = []

    def start(label: str) -> Worker:
        log_path = tmp_path / f"{label}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.faust_counter_app",
                    "worker",
                    "--loglevel",
                    "info",
                ],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        workers.append(Worker(process, log_path))
        return workers[-1]

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()


def produce(settings: Settings, topic: str, keys: list[str]) -> dict[int, int]:
    """Send one record per key; returns the next offset of each partition written."""
    producer = make_producer(settings)
    try:
        futures = [producer.send(topic, key=key.encode(), value=b"{}") for key in keys]
        producer.flush()
        written = [future.get(timeout=30) for future in futures]
    finally:
        producer.close()
    ends: dict[int, int] = {}
    for meta in written:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


def read_counts(consumer: KafkaConsumer, expected: int, log: Path) -> list[tuple[str, int]]:
    """The next ``expected`` outputs as (key, count), in order within each key."""
    outputs: list[tuple[str, int]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(outputs) < expected:
        assert time.monotonic() < deadline, (
            f"got {len(outputs)} of {expected} outputs: {outputs}\n{log_tail(log)}"
        )
        for records in consumer.poll(timeout_ms=int(POLL_S * 1000)).values():
            for record in records:
                body = json.loads(record.value)
                assert body["key"] == record.key.decode(), body
                outputs.append((body["key"], body["count"]))
    assert len(outputs) == expected, f"unexpected extra outputs: {outputs}"
    return outputs


def wait_for_commit(
    settings: Settings, names: CounterNames, ends: dict[int, int], log: Path
) -> None:
    """Block until the worker's group has committed past every record in ``ends``."""
    admin = make_admin(settings)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            offsets = admin.list_consumer_group_offsets(group_id=names.app_id)
            committed = {
                partition: offsets[TopicPartition(names.source, partition)].offset
                for partition in ends
                if TopicPartition(names.source, partition) in offsets
            }
            if all(committed.get(p, -1) >= end for p, end in ends.items()):
                return
            assert time.monotonic() < deadline, (
                f"committed {committed}, want {ends}\n{log_tail(log)}"
            )
            time.sleep(POLL_S)
    finally:
        admin.close()


def test_table_is_restored_from_changelog_after_kill_and_wiped_state(
    settings: Settings, names: CounterNames, start_worker: StartWorker
) -> None:
    consumer = make_consumer(settings, group_id=None)
    try:
        consumer.assign([TopicPartition(names.sink, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()

        first = start_worker("worker-1")
        ends = produce(settings, names.source, ["a"] * 5 + ["b"] * 3)
        outputs = read_counts(consumer, 8, first.log)
        counts = {key: [n for k, n in outputs if k == key] for key in ("a", "b")}
        assert counts == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3]}, log_tail(first.log)

        # Offsets committed before the kill are the ones the next worker resumes from;
        # faust flushes its producer (changelog included) before every commit.
        wait_for_commit(settings, names, ends, first.log)
        first.process.kill()
        first.process.wait()
        datadir = settings.data_dir / "faust" / names.app_id
        assert datadir.is_dir(), f"faust kept no data in {datadir}\n{log_tail(first.log)}"
        shutil.rmtree(datadir)

        second = start_worker("worker-2")
        produce(settings, names.source, ["a", "b"])
        outputs = read_counts(consumer, 2, second.log)
        assert sorted(outputs) == [("a", 6), ("b", 4)], log_tail(second.log)
    finally:
        consumer.close()
