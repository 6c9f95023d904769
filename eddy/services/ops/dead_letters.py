"""Operating the dead-letter topic: list, show, and replay after a fix.

A replay re-publishes a dead letter's original key, value and producer headers to the
topic it came from (plus an ``eddy.replayed-from`` header naming the dead letter), so
the fixed worker sees exactly what the producer sent. Replaying twice is harmless:
workers apply an event id once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from eddy.services.config.settings import Settings
from eddy.services.ops.console import Record, read_topic
from eddy.streams.dead_letters.letter import ERROR_CLASS, original_headers, source_of
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name

REPLAYED_FROM = "eddy.replayed-from"
SEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Replayed:
    dead_letter: str  # partition@offset in the dead-letter topic
    to_topic: str
    refused: str | None = None  # why it was not sent; None when it was


# The topics Eddy's own consumers read, the only ones a dead letter can have come from.
REPLAYABLE = (
    Topic.EVENTS,
    Topic.LABELS,
    Topic.PREDICTION_REQUESTS,
    Topic.TRAINING_EXAMPLES,
    Topic.DRIFT_ALERTS,
    Topic.CONTROL,
)


def replay_refusal(topic: str, prefix: str) -> str | None:
    """Why a dead letter naming ``topic`` as its source is not replayed there; None if
    it may be. The header is data anyone who can write to the dead-letter topic wrote:
    a replay goes only to a topic this deployment's workers read.

    >>> replay_refusal("eddy.events", "eddy.") is None
    True
    >>> replay_refusal("__consumer_offsets", "eddy.")
    "source topic '__consumer_offsets' is not one Eddy's workers read"
    """
    if topic in {f"{prefix}{t.value}" for t in REPLAYABLE}:
        return None
    return f"source topic {topic!r} is not one Eddy's workers read"


def dead_letter_topic(settings: Settings) -> str:
    return topic_name(Topic.DEAD_LETTER, settings.topic_prefix)


def dead_letters(
    settings: Settings,
    *,
    error_class: str | None = None,
    max_messages: int | None = None,
    idle_timeout_s: float = 3.0,
) -> Iterator[Record]:
    """Dead letters from the beginning, optionally only those of ``error_class``."""
    shown = 0
    for record in read_topic(
        settings,
        dead_letter_topic(settings),
        from_beginning=True,
        max_messages=None,
        idle_timeout_s=idle_timeout_s,
    ):
        if error_class is None or record.headers.get(ERROR_CLASS) == error_class:
            yield record
            shown += 1
            if max_messages is not None and shown >= max_messages:
                return


def replay(records: list[Record], settings: Settings) -> list[Replayed]:
    """Re-publish each dead letter's original record to its source topic, unless that
    is not a topic Eddy's workers read (then it is returned with the refusal)."""
    producer = make_producer(settings)
    sent: list[Replayed] = []
    try:
        futures = []
        for record in records:
            raw = record.original
            where = f"{record.partition}@{record.offset}"
            try:
                topic, _, _ = source_of(raw.headers)
            except (KeyError, ValueError, TypeError, AttributeError):  # not one Eddy wrote
                sent.append(Replayed(where, "", "it has no readable source headers"))
                continue
            refusal = replay_refusal(topic, settings.topic_prefix)
            if refusal is not None:
                sent.append(Replayed(where, topic, refusal))
                continue
            headers = [*original_headers(raw.headers), (REPLAYED_FROM, where.encode())]
            futures.append(producer.send(topic, key=raw.key, value=raw.value, headers=headers))
            sent.append(Replayed(where, topic))
        producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()
    return sent
