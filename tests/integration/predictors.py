"""A predictor service for integration tests, and an outside application's view of it.

The predictor and prediction-cache tests both start `eddy run predictor` and read its
answers; what they share lives here, not in one of them: a test module imports no
other test module.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.registry.store import Lineage, Registry
from eddy.streams.transport.admin import group_serving
from eddy.streams.transport.clients import make_admin
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import Topic, topic_name
from tests.processes import start_eddy
from tests.waiting import wait_until

# How long a predictor may take to start and join its group.
SERVING_DEADLINE_S = 60.0
LINEAGE = Lineage(
    {"events[0]": [0, 99]}, "fs", {}, {}, "test", {"type": "alert", "id": "m:concept:7"}, "test"
)


@dataclass
class Service:
    """A predictor (`eddy run predictor`) over Eddy's topics under a prefix of its own."""

    settings: Settings
    registry: Registry
    process: subprocess.Popen[bytes] | None
    log: Path

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.settings.topic_prefix)

    def start(self) -> None:
        self.process = start_eddy(self.settings, self.log, "run", "predictor")
        self.wait_until_serving()

    def wait_until_serving(self) -> None:
        """Until the predictor's group is stable with a member: a test's load then meets
        a running predictor, however long this machine takes to start one."""
        group = group_id(self.settings.topic_prefix, "predictor", self.settings.model_name)
        admin = make_admin(self.settings)
        try:
            wait_until(
                lambda: group_serving(admin, group),
                "the predictor's group to be stable with a member",
                timeout_s=SERVING_DEADLINE_S,
                logs=lambda: self.log.read_text()[-3000:],
            )
        finally:
            admin.close()

    def stop(self) -> None:
        """SIGTERM the predictor if it still runs, and wait for it (a test's teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def answers_consumer(service: Service) -> KafkaConsumer:
    """An outside application's view of the answers topic: plain kafka-python."""
    consumer = KafkaConsumer(
        bootstrap_servers=service.settings.kafka_bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    partitions = [TopicPartition(service.topic(Topic.PREDICTIONS), p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer
