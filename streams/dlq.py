"""Operating the dead-letter topic: list, show, and replay after a fix.

A replay re-publishes a dead letter's original key, value and producer headers to the
topic it came from (plus an ``eddy.replayed-from`` header naming the dead letter), so
the fixed worker sees exactly what the producer sent. Replaying twice is harmless:
workers apply an event id once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from services.settings import Settings
from streams.clients import make_producer
from streams.console import Record, read_topic
from streams.dead_letter import ERROR_CLASS, original_headers, source_of
from streams.topics import Topic, spec_for

REPLAYED_FROM = "eddy.replayed-from"
SEND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Replayed:
    dead_letter: str  # partition@offset in the dead-letter topic
    to_topic: str


def dead_letter_topic(settings: Settings) -> str:
    return spec_for(
        Topic.DEAD_LETTER, prefix=settings.topic_prefix, partitions=settings.partitions
    ).name


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
    """Re-publish each dead letter's original record to its source topic."""
    producer = make_producer(settings)
    sent: list[Replayed] = []
    try:
        futures = []
        for record in records:
            raw = record.original
            topic, _, _ = source_of(raw.headers)
            where = f"{record.partition}@{record.offset}"
            headers = [*original_headers(raw.headers), (REPLAYED_FROM, where.encode())]
            futures.append(producer.send(topic, key=raw.key, value=raw.value, headers=headers))
            sent.append(Replayed(where, topic))
        producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close()
    return sent
