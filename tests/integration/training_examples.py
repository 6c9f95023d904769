"""Training examples on ``training-examples``, as the feature worker would publish them.

The retrainer, control, slice and champion-choice tests all publish labelled examples
for a retrain to read back; what they share lives here, not in one of them: a test
module imports no other test module.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from eddy.services.config.settings import Settings
from eddy.streams.messages.contracts import SourceOffset, TrainingExample
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name

BASE = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def concept(count: int, seed: int, flipped: bool) -> list[tuple[dict[str, float], bool]]:
    """``count`` seeded rows of one linear concept on two features; ``flipped`` inverts
    its labels (a concept drift)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        x = {"a": rng.uniform(-1, 1), "b": rng.uniform(-1, 1)}
        y = (x["a"] + 0.5 * x["b"] > 0) != flipped
        rows.append((x, y))
    return rows


def publish_examples(
    settings: Settings,
    rows: list[tuple[dict[str, float], Any]],
    start: int,
    *,
    base: float = BASE,
    step_s: float = 1.0,
    tag: str = "ex",
) -> None:
    """``rows`` as training examples ``tag-<start + i>``, event times ``base + i * step_s``
    from ``start`` on."""
    topic = topic_name(Topic.TRAINING_EXAMPLES, settings.topic_prefix)
    producer = make_producer(settings, linger_ms=10)
    try:
        for i, (x, y) in enumerate(rows, start=start):
            example = TrainingExample(
                example_id=f"{tag}-{i}",
                entity_id=f"u{i % 11}",
                event_time=datetime.fromtimestamp(base + i * step_s, UTC),
                label=y,
                features=x,
                feature_set="fs-test",
                source=SourceOffset(topic="events", partition=i % 3, offset=i),
            )
            producer.send(topic, key=example.entity_id.encode(), value=encode(example))
        producer.flush(timeout=60)
    finally:
        producer.close()
