"""The dead-letter sink: every rejected record leaves with the same evidence and count."""

from __future__ import annotations

from typing import Any

from eddy.streams.dead_letters.letter import RawRecord, dead_letter, source_of
from eddy.streams.dead_letters.sink import DeadLetterSink


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def send(self, topic: str, *, key: Any, value: Any, headers: Any) -> int:
        self.sent.append((topic, key, value, headers))
        return len(self.sent)  # stands for the future


def record(offset: int, topic: str = "eddy.labels") -> RawRecord:
    return RawRecord(topic, 2, offset, b"u1", b"{not json", [("trace", b"t1")])


def test_a_rejected_record_is_sent_byte_for_byte_with_its_source_and_reason() -> None:
    producer, counts = RecordingProducer(), []
    sink = DeadLetterSink(
        producer,
        "eddy.dead-letter",
        topic_prefix="eddy.",
        counted=lambda s, n: counts.append((s, n)),
    )
    future = sink.reject(record(7), "bad_json", "not JSON")
    topic, key, value, headers = producer.sent[0]
    assert (future, topic, key, value) == (1, "eddy.dead-letter", b"u1", b"{not json")
    assert source_of(headers) == ("eddy.labels", 2, 7)
    assert ("trace", b"t1") in headers
    assert counts == [("labels", 1)]


def test_letters_built_elsewhere_go_out_unchanged_and_uncounted() -> None:
    producer, counts = RecordingProducer(), []
    sink = DeadLetterSink(producer, "dlq", counted=lambda s, n: counts.append((s, n)))
    letters = [dead_letter(record(offset), "bad_json", "x") for offset in (1, 2)]
    assert sink.send(letters) == [1, 2]
    assert [(k, v, h) for _, k, v, h in producer.sent] == [
        (d.key, d.value, d.headers) for d in letters
    ]
    assert counts == []
