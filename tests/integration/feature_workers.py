"""Feature-worker deployments (`eddy run features` processes) and the events they read.

The feature-worker, graceful-shutdown and liveness tests all start feature workers and
send them events; what they share lives here, not in one of them: a test module imports
no other test module.
"""

from __future__ import annotations

import math
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eddy.services.config.settings import Settings
from eddy.services.project.deployment import deployment_features
from eddy.streams.features.compute import feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.store.online import OnlineStore
from eddy.streams.transport.clients import make_producer, make_redis
from eddy.streams.transport.topics import Topic, topic_name
from tests.processes import start_eddy
from tests.waiting import wait_until

HOUR = 3600


@dataclass
class FeatureDeployment:
    """Eddy's topics under a prefix of their own, and the worker processes started."""

    settings: Settings
    workdir: Path
    workers: list[subprocess.Popen[bytes]]

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.settings.topic_prefix)

    def store(self) -> OnlineStore:
        return OnlineStore(
            make_redis(self.settings),
            self.settings.topic_prefix,
            self.settings.feature_ttl_s,
            states=deployment_features(self.settings).state_fingerprint(),
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = start_eddy(
            self.settings, self.workdir / f"worker-{len(self.workers)}.log", "run", "features"
        )
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("*.log"))
        )


def quiet_hour_base() -> float:
    """An event time well inside one clock hour, not in the future: windows stay put."""
    now = time.time()
    hour_start = math.floor(now / HOUR) * HOUR
    return hour_start + 60 if now - hour_start > 15 * 60 else hour_start - HOUR + 30 * 60


def event(entity: str, event_id: str, at: float, amount: float, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "entity_id": entity,
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
            + f".{int(at * 1000) % 1000:03d}Z",
            "features": {"amount": amount, "country": random.Random(event_id).choice("ABC")},
            **extra,
        }
    )


def send_records(
    settings: Settings, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    """``records`` (key, value) to ``topic`` as they are, malformed ones included."""
    producer = make_producer(settings)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def applied_counts(store: OnlineStore, entities: list[str], as_of: float) -> dict[str, int]:
    states = store.load(entities)
    return {
        e: int(feature_vector(s.state, FEATURES, as_of)["amount_count_1h"] or 0)
        for e, s in states.items()
    }


def kill_partway_and_finish(
    deployment: FeatureDeployment,
    events: Sequence[tuple[bytes, bytes]],
    entities: list[str],
    as_of: float,
    *,
    deadline_s: float,
    every_s: float,
) -> int:
    """Send the first half of ``events`` (keyed by entity) to a worker, SIGKILL it once it
    applied some, send the rest to a new worker, and wait until every event is applied
    exactly once. Returns how many the killed worker had applied."""
    expected = Counter(key.decode() for key, _ in events)
    store = deployment.store()
    events_topic = deployment.topic(Topic.EVENTS)
    first = deployment.start_worker()
    send_records(deployment.settings, events_topic, events[: len(events) // 2])
    wait_until(
        lambda: sum(applied_counts(store, entities, as_of).values()) > 0,
        "the first worker to apply something",
        timeout_s=deadline_s,
        every_s=every_s,
        logs=deployment.logs,
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    partway = sum(applied_counts(store, entities, as_of).values())
    send_records(deployment.settings, events_topic, events[len(events) // 2 :])
    deployment.start_worker()
    wait_until(
        lambda: applied_counts(store, entities, as_of) == dict(expected),
        "every event to be applied exactly once",
        timeout_s=deadline_s,
        every_s=every_s,
        logs=deployment.logs,
    )
    return partway
