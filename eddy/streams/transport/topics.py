"""Eddy's topics: names, contracts, keys and broker-side configuration, in one place.

Names are ``<prefix><suffix>`` so several deployments can share a cluster; everything
else in the code refers to topics through :class:`Topic` and :func:`topic_specs`.

>>> spec = spec_for(Topic.MODEL_UPDATES, prefix="eddy.", partitions=3)
>>> spec.name, spec.partitions, spec.config["cleanup.policy"]
('eddy.model-updates', 1, 'compact')
>>> spec_for(Topic.EVENTS, prefix="eddy.", partitions=3).key_field
'entity_id'
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from eddy.streams.messages.contracts import (
    Contract,
    ControlCommand,
    DriftAlert,
    Event,
    Label,
    ModelUpdate,
    Prediction,
    PredictionRequest,
    ServedAnswers,
    TrainingExample,
)

DAY_MS = 24 * 60 * 60 * 1000


class Topic(StrEnum):
    """Topic suffixes; the deployment's prefix goes in front."""

    EVENTS = "events"
    LABELS = "labels"
    PREDICTION_REQUESTS = "prediction-requests"
    PREDICTIONS = "predictions"
    DRIFT_ALERTS = "drift-alerts"
    MODEL_UPDATES = "model-updates"
    DEAD_LETTER = "dead-letter"
    TRAINING_EXAMPLES = "training-examples"
    CONTROL = "control"
    SERVED_ANSWERS = "served-answers"


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is created and what its messages look like."""

    topic: Topic
    name: str
    partitions: int
    contract: type[Contract] | None
    key_field: str | None
    config: dict[str, str] = field(default_factory=dict)


# (contract, key field, partitioned?, config) per topic. The dead-letter topic carries
# the original bytes unchanged, so it has no contract; its key is the original key.
_LAYOUT: dict[Topic, tuple[type[Contract] | None, str | None, bool, dict[str, str]]] = {
    Topic.EVENTS: (Event, "entity_id", True, {"retention.ms": str(7 * DAY_MS)}),
    Topic.LABELS: (Label, "entity_id", True, {"retention.ms": str(7 * DAY_MS)}),
    Topic.PREDICTION_REQUESTS: (
        PredictionRequest,
        "entity_id",
        True,
        {"retention.ms": str(DAY_MS)},
    ),
    Topic.PREDICTIONS: (Prediction, "entity_id", True, {"retention.ms": str(DAY_MS)}),
    Topic.DRIFT_ALERTS: (DriftAlert, "model", False, {"retention.ms": str(30 * DAY_MS)}),
    Topic.MODEL_UPDATES: (
        ModelUpdate,
        "model",
        False,
        {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    ),
    Topic.DEAD_LETTER: (None, None, True, {"retention.ms": str(30 * DAY_MS)}),
    # The bounded recent window that retraining reads: retention is the bound.
    Topic.TRAINING_EXAMPLES: (
        TrainingExample,
        "entity_id",
        True,
        {"retention.ms": str(7 * DAY_MS)},
    ),
    # Operator commands (retrain requests): low volume, ordered per model.
    Topic.CONTROL: (ControlCommand, "model", False, {"retention.ms": str(30 * DAY_MS)}),
    # Each predictor batch's answers per version, for the learner's live estimate: read
    # within moments, so a day is plenty.
    Topic.SERVED_ANSWERS: (ServedAnswers, "model", True, {"retention.ms": str(DAY_MS)}),
}


def topic_name(topic: Topic, prefix: str) -> str:
    """The name of ``topic`` in a deployment whose topics start with ``prefix``.

    >>> topic_name(Topic.EVENTS, "eddy.")
    'eddy.events'
    """
    return f"{prefix}{topic.value}"


def spec_for(topic: Topic, *, prefix: str, partitions: int) -> TopicSpec:
    """The spec of ``topic`` under ``prefix``; unpartitioned topics get one partition.

    Drift alerts and model updates are low-volume and must stay ordered per model, so
    they have a single partition whatever the deployment's partition count.
    """
    contract, key_field, partitioned, config = _LAYOUT[topic]
    return TopicSpec(
        topic=topic,
        name=topic_name(topic, prefix),
        partitions=partitions if partitioned else 1,
        contract=contract,
        key_field=key_field,
        config=dict(config),
    )


def topic_specs(*, prefix: str, partitions: int) -> list[TopicSpec]:
    """Every Eddy topic, in declaration order."""
    return [spec_for(t, prefix=prefix, partitions=partitions) for t in Topic]


def reply_topic_refusal(name: str, *, prefix: str, pattern: str) -> str | None:
    """Why a prediction request may not have its answer sent to ``name``; None if it may.

    Answers go to the answers topic or to a topic of the application's own: never to a
    broker-internal topic, nor to a topic Eddy reads, where an answer would be taken for
    an event, a label or a control message.

    >>> reply_topic_refusal("app.answers", prefix="eddy.", pattern=r"^[a-z.]+$") is None
    True
    >>> reply_topic_refusal("eddy.predictions", prefix="eddy.", pattern=r"^[a-z.]+$") is None
    True
    >>> reply_topic_refusal("eddy.control", prefix="eddy.", pattern=r"^[a-z.]+$")
    "'eddy.control' is one of Eddy's own topics"
    >>> reply_topic_refusal("__consumer_offsets", prefix="eddy.", pattern=r"^.*$")
    "'__consumer_offsets' is internal to the broker"
    """
    if name.startswith("_"):
        return f"{name!r} is internal to the broker"
    own = {f"{prefix}{topic.value}" for topic in Topic if topic is not Topic.PREDICTIONS}
    if name in own:
        return f"{name!r} is one of Eddy's own topics"
    if re.fullmatch(pattern, name) is None:
        return f"{name!r} does not match the allowed reply topics {pattern!r}"
    return None


class KnownTopics:
    """Which topics exist, as the broker lists them; listed again (at most every
    ``refresh_s``) only when asked about a name it has not seen.

    The broker Eddy starts never creates a topic on first use, so an answer for a reply
    topic nobody created would wait for it until the send times out: the predictor asks
    here first and answers ``unknown_reply_topic`` instead.

    >>> calls = []
    >>> known = KnownTopics(lambda: calls.append(1) or {"a"}, refresh_s=60, clock=lambda: 0.0)
    >>> known.exists("a"), known.exists("a"), known.exists("b"), len(calls)
    (True, True, False, 1)
    """

    def __init__(
        self,
        list_names: Callable[[], Iterable[str]],
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_names = list_names
        self._refresh_s = refresh_s
        self._clock = clock
        self._names: set[str] = set()
        self._listed_at: float | None = None

    def exists(self, name: str) -> bool:
        if name in self._names:
            return True
        now = self._clock()
        if self._listed_at is None or now - self._listed_at >= self._refresh_s:
            self._names, self._listed_at = set(self._list_names()), now
        return name in self._names


def message_key(spec: TopicSpec, message: Contract) -> bytes | None:
    """The Kafka key of ``message`` on ``spec``'s topic.

    A label without an entity id is keyed by what it labels (event or request id).

    >>> from datetime import UTC, datetime
    >>> label = Label(request_id="r1", label=1, event_time=datetime(2026, 1, 1, tzinfo=UTC))
    >>> message_key(spec_for(Topic.LABELS, prefix="", partitions=1), label)
    b'r1'
    """
    value = getattr(message, spec.key_field) if spec.key_field else None
    if value is None and isinstance(message, Label):
        value = message.event_id or message.request_id
    return None if value is None else str(value).encode()
