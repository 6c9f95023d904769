"""Dead letters: a rejected record, byte for byte, with why and where it came from.

The value and key are the original bytes, untouched, so that ``eddy dlq replay`` can
re-publish exactly what the producer sent once the fault is fixed. The evidence rides in
headers (the original record's headers are kept too):

>>> letter = dead_letter(
...     RawRecord("eddy.events", 2, 41, b"u1", b"{oops", ()), "bad_json", "not JSON"
... )
>>> letter.value, dict(letter.headers)["eddy.error.class"]
(b'{oops', b'bad_json')
>>> source_of(letter.headers)
('eddy.events', 2, 41)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

HEADER_PREFIX = "eddy."
SOURCE_TOPIC = "eddy.source.topic"
SOURCE_PARTITION = "eddy.source.partition"
SOURCE_OFFSET = "eddy.source.offset"
ERROR_CLASS = "eddy.error.class"
ERROR_REASON = "eddy.error.reason"

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class RawRecord:
    """A record as it came off Kafka, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, record: Any) -> RawRecord:
        """From any Kafka client's record (kafka-python, aiokafka, faust messages).

        A header's value may be null on the wire; it becomes empty bytes (``bytes(None)``
        raised, and the feature agent lost its batch).

        >>> from types import SimpleNamespace as Record
        >>> RawRecord.of(Record(topic="t", partition=0, offset=1, key=None, value=b"{}",
        ...                     headers=[("trace", None), ("k", b"v")])).headers
        [('trace', b''), ('k', b'v')]
        """
        headers = record.headers or []
        if isinstance(headers, dict):
            headers = list(headers.items())
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=[(k, b"" if v is None else bytes(v)) for k, v in headers],
        )


@dataclass(frozen=True)
class DeadLetter:
    """What goes to the dead-letter topic for one rejected record."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(record: RawRecord, error_class: str, reason: str) -> DeadLetter:
    """The dead letter for ``record``; earlier Eddy evidence headers are replaced."""
    kept = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
    evidence = [
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
        (ERROR_CLASS, error_class.encode()),
        (ERROR_REASON, reason.encode("utf-8", errors="replace")),
    ]
    return DeadLetter(key=record.key, value=record.value, headers=kept + evidence)


def source_of(headers: Headers) -> tuple[str, int, int]:
    """(topic, partition, offset) of the record a dead letter stands for."""
    found = dict(headers)
    return (
        found[SOURCE_TOPIC].decode(),
        int(found[SOURCE_PARTITION]),
        int(found[SOURCE_OFFSET]),
    )


def original_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """The producer's own headers, without Eddy's evidence: what a replay re-sends."""
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
