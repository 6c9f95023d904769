"""Learner deployments (`eddy run learner` processes) and the examples they learn from.

The learner, graceful-shutdown and liveness tests all start learners and send them
training examples; what they share lives here, not in one of them: a test module imports
no other test module.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eddy.services.config.settings import Settings
from eddy.streams.learning.checkpoints import CheckpointStore, LearnerState
from eddy.streams.messages.contracts import SourceOffset, TrainingExample
from eddy.streams.messages.validation import encode
from eddy.streams.store.serialization import signing_key
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name
from tests.processes import start_eddy

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@dataclass
class LearnerDeployment:
    """Eddy's topics under a prefix of their own, and the learner processes started."""

    settings: Settings
    workdir: Path
    processes: list[subprocess.Popen[bytes]]

    def topic(self, topic: Topic) -> str:
        return topic_name(topic, self.settings.topic_prefix)

    def start(self) -> subprocess.Popen[bytes]:
        process = start_eddy(
            self.settings, self.workdir / f"learner-{len(self.processes)}.log", "run", "learner"
        )
        self.processes.append(process)
        return process

    def checkpoints(self) -> CheckpointStore:
        key = signing_key(None, self.settings.data_dir)
        return CheckpointStore(
            self.settings.data_dir / "checkpoints" / self.settings.model_name, key
        )

    def latest(self) -> LearnerState | None:
        return self.checkpoints().latest()

    def kill_running(self) -> None:
        """SIGKILL every learner still running: a test's teardown, nothing to save."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("*.log"))
        )


def synthetic(count: int, seed: int) -> list[tuple[dict[str, Any], bool]]:
    """A seeded linear concept on two numeric features and one categorical one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        x: dict[str, Any] = {
            "a": rng.uniform(-1, 1),
            "b": rng.uniform(-1, 1),
            "c": rng.choice("xyz"),
        }
        rows.append((x, x["a"] + 0.5 * x["b"] + (0.3 if x["c"] == "x" else 0.0) > 0))
    return rows


def examples(
    rows: list[tuple[dict[str, Any], bool]], topic: str, *, entities: int = 7
) -> list[TrainingExample]:
    """One training example per row, one second apart, over ``entities`` entities."""
    return [
        TrainingExample(
            example_id=f"ex-{i}",
            entity_id=f"u{i % entities}",
            event_time=datetime.fromtimestamp(BASE_TIME + i, UTC),
            label=y,
            features=x,
            feature_set="test",
            source=SourceOffset(topic="events", partition=0, offset=i),
        )
        for i, (x, y) in enumerate(rows)
    ]


def send_messages(settings: Settings, topic: str, messages: list[Any]) -> None:
    producer = make_producer(settings)
    try:
        for message in messages:
            producer.send(topic, value=encode(message))
        producer.flush(timeout=60)
    finally:
        producer.close()
