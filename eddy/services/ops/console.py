"""Producing to and reading from Eddy's topics by hand: what ``eddy produce|consume`` do.

Producing validates every line against the topic's contract first, so a bad line gets
its reason (and its line number) instead of reaching a worker's dead-letter queue.
Reading never joins a consumer group: inspecting a topic must not move anyone's offsets.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.streams.messages.contracts import Event, PredictionRequest
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.messages.signatures import SIGNATURE_HEADER, signature
from eddy.streams.messages.validation import InvalidMessage, decode, encode
from eddy.streams.transport.clients import make_consumer, make_producer
from eddy.streams.transport.topics import Topic, TopicSpec, message_key, spec_for

SEND_TIMEOUT_S = 30.0
POLL_MS = 200


class UnknownTopic(ValueError):
    """Not one of Eddy's topics."""


def resolve_topic(settings: Settings, name: str) -> TopicSpec:
    """The spec for ``name``, given as suffix (``events``) or full name (``eddy.events``)."""
    suffix = name.removeprefix(settings.topic_prefix)
    try:
        topic = Topic(suffix)
    except ValueError:
        known = ", ".join(t.value for t in Topic)
        raise UnknownTopic(f"unknown topic {name!r}; Eddy's topics are: {known}") from None
    return spec_for(topic, prefix=settings.topic_prefix, partitions=settings.partitions)


@dataclass(frozen=True)
class Rejection:
    line_number: int
    error_class: str
    reason: str


@dataclass
class ProduceReport:
    sent: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    rejected: list[Rejection] = field(default_factory=list)


def validate_lines(
    spec: TopicSpec, lines: Iterable[tuple[int, bytes | Rejection]], raw: RawSchema | None = None
) -> Iterator[tuple[int, bytes | None, bytes] | Rejection]:
    """Each numbered non-blank line as (line number, key, value) or as a
    :class:`Rejection` (a line already refused passes through). With a project's ``raw``
    fields, an event's or a request's fields are checked against them as the workers
    would, so a bad line is reported now rather than dead-lettered later."""
    if spec.contract is None:
        raise UnknownTopic(f"{spec.name} has no contract: only Eddy's workers write to it")
    for number, line in lines:
        if isinstance(line, Rejection):
            yield line
            continue
        stripped = line.strip()
        if not stripped:
            continue
        try:
            message = decode(spec.contract, stripped)
            if raw is not None and isinstance(message, Event | PredictionRequest):
                refusal = raw.refusal(
                    message.features, partial=isinstance(message, PredictionRequest)
                )
                if refusal is not None:
                    raise refusal
        except InvalidMessage as exc:
            yield Rejection(number, exc.error_class, exc.reason)
            continue
        yield number, message_key(spec, message), encode(message)


def numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes | Rejection]]:
    """Lines of a file with their numbers, from 1."""
    return enumerate(lines, start=1)


def produce_lines(
    settings: Settings,
    spec: TopicSpec,
    lines: Iterable[tuple[int, bytes | Rejection]],
    raw: RawSchema | None = None,
) -> ProduceReport:
    """Send every valid numbered line (:func:`numbered`) to ``spec``'s topic; report the
    others with their reasons (``raw``: as :func:`validate_lines`).

    Control commands are signed with the deployment's key, as the retrainer requires.
    """
    report = ProduceReport()
    key = settings.deployment_key() if spec.topic is Topic.CONTROL else None
    producer = make_producer(settings)
    try:
        futures = []
        for item in validate_lines(spec, lines, raw):
            if isinstance(item, Rejection):
                report.rejected.append(item)
            else:
                _, record_key, value = item
                headers = [] if key is None else [(SIGNATURE_HEADER, signature(key, value))]
                futures.append(
                    producer.send(spec.name, key=record_key, value=value, headers=headers)
                )
        producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            metadata = future.get(timeout=SEND_TIMEOUT_S)
            report.sent.append((metadata.partition, metadata.offset))
    finally:
        producer.close()
    return report


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: Any
    headers: dict[str, str]
    original: Any = field(default=None, repr=False, compare=False)  # the ConsumerRecord

    def as_json(self) -> bytes:
        shown = {k: v for k, v in self.__dict__.items() if k != "original"}
        return orjson.dumps(shown)


def read_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout_s: float,
) -> Iterator[Record]:
    """Records of ``topic`` until ``max_messages`` or ``idle_timeout_s`` without one."""
    consumer = make_consumer(settings, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise UnknownTopic(f"topic {topic!r} does not exist on the broker")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        yield from _drain(consumer, max_messages, idle_timeout_s)
    finally:
        consumer.close()


def read_one(settings: Settings, topic: str, partition: int, offset: int) -> Record | None:
    """The record at ``offset`` of ``topic``'s ``partition``, if it arrives in time."""
    consumer = make_consumer(settings, group_id=None)
    try:
        where = TopicPartition(topic, partition)
        consumer.assign([where])
        consumer.seek(where, offset)
        return next(_drain(consumer, 1, idle_timeout_s=SEND_TIMEOUT_S), None)
    finally:
        consumer.close()


def _drain(consumer: Any, max_messages: int | None, idle_timeout_s: float) -> Iterator[Record]:
    seen = 0
    idle_since = time.monotonic()
    while max_messages is None or seen < max_messages:
        batch = consumer.poll(timeout_ms=POLL_MS)
        if not batch:
            if time.monotonic() - idle_since >= idle_timeout_s:
                return
            continue
        idle_since = time.monotonic()
        for records in batch.values():
            for record in records:
                yield _record(record)
                seen += 1
                if max_messages is not None and seen >= max_messages:
                    return


def _record(raw: Any) -> Record:
    try:
        value: Any = orjson.loads(raw.value) if raw.value is not None else None
    except orjson.JSONDecodeError:
        value = raw.value.decode("utf-8", errors="replace")
    return Record(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        timestamp_ms=raw.timestamp,
        key=raw.key.decode("utf-8", errors="replace") if raw.key is not None else None,
        value=value,
        headers={k: v.decode("utf-8", errors="replace") for k, v in (raw.headers or [])},
        original=raw,
    )
