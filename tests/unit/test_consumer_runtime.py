"""The consumer runtime's intake: each record decoded on its own, the refused ones
dead-lettered and acknowledged before the batch function sees the batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from eddy.services.config.settings import Settings
from eddy.services.ops.liveness import Liveness
from eddy.services.ops.poll_loop import PollLoop
from eddy.streams.dead_letters.letter import source_of
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.messages.validation import InvalidMessage


@dataclass
class Acknowledgement:
    acknowledged: list[int]
    offset: int

    def get(self, timeout: float) -> None:
        self.acknowledged.append(self.offset)


@dataclass
class RecordingProducer:
    """Records what was sent and which acknowledgements were awaited."""

    sent: list[tuple[str, list[tuple[str, bytes]]]] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    flushes: int = 0

    def send(self, topic: str, *, key: Any, value: Any, headers: Any) -> Acknowledgement:
        self.sent.append((topic, headers))
        return Acknowledgement(self.acknowledged, source_of(headers)[2])

    def flush(self, timeout: float) -> None:
        self.flushes += 1


@dataclass(frozen=True)
class Record:
    topic: str
    offset: int
    value: bytes
    partition: int = 0
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


def as_number(record: Any) -> int:
    if not record.value.isdigit():
        raise InvalidMessage("not_a_number", f"{record.value!r} is not a number")
    return int(record.value)


def runtime(producer: RecordingProducer, counts: list[tuple[str, int]]) -> PollLoop:
    sink = DeadLetterSink(
        producer,
        "eddy.dead-letter",
        topic_prefix="eddy.",
        counted=lambda s, n: counts.append((s, n)),
    )
    return PollLoop(
        Settings(),
        consumer=None,
        decoders={"eddy.numbers": as_number, "eddy.words": lambda r: r.value.decode()},
        dead_letters=sink,
        liveness=Liveness(Settings(), "test"),
        poll_ms=10,
    )


def test_a_refused_record_leaves_its_batch_in_order_and_is_dead_lettered() -> None:
    producer, counts = RecordingProducer(), list[tuple[str, int]]()
    records = [
        Record("eddy.numbers", 0, b"7"),
        Record("eddy.numbers", 1, b"seven"),
        Record("eddy.words", 0, b"seven"),
        Record("eddy.numbers", 2, b"8"),
    ]
    loop = runtime(producer, counts)
    consumed = loop.intake(records)
    assert [c.record for c in consumed] == records
    assert [c.message for c in consumed] == [7, None, "seven", 8]
    refused = consumed[1].refused
    assert refused is not None
    assert refused.error_class == "not_a_number"
    assert [source_of(headers) for _, headers in producer.sent] == [("eddy.numbers", 0, 1)]
    assert producer.acknowledged == []  # sent while the batch is handled
    loop.settle()
    assert producer.acknowledged == [1]
    loop.settle()
    assert producer.acknowledged == [1]  # each letter is awaited once
    assert counts == [("numbers", 1)]


def test_a_clean_batch_sends_and_waits_for_nothing() -> None:
    producer, counts = RecordingProducer(), list[tuple[str, int]]()
    consumed = runtime(producer, counts).intake([Record("eddy.numbers", 0, b"1")])
    assert [c.message for c in consumed] == [1]
    assert (producer.sent, producer.flushes, counts) == ([], 0, [])


def test_a_decoder_bug_is_no_refusal_it_stops_the_worker() -> None:
    """Only InvalidMessage is the record's fault; anything else is a bug to restart on,
    not a record to throw away."""

    def broken(record: Any) -> int:
        raise ZeroDivisionError

    producer = RecordingProducer()
    loop = PollLoop(
        Settings(),
        consumer=None,
        decoders={"eddy.numbers": broken},
        dead_letters=DeadLetterSink(producer, "dlq"),
        liveness=Liveness(Settings(), "test"),
        poll_ms=10,
    )
    with pytest.raises(ZeroDivisionError):
        loop.intake([Record("eddy.numbers", 0, b"1")])
    assert producer.sent == []


@dataclass
class Partition:
    topic: str
    partition: int

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))


@dataclass
class LaggingConsumer:
    """One assigned partition, 40 records behind its log end, one batch to poll."""

    polled: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # no group

    def subscription(self) -> set[str]:
        return set()

    def assignment(self) -> set[Partition]:
        return {Partition("eddy.numbers", 3)}

    def highwater(self, tp: Partition) -> int:
        return 100

    def position(self, tp: Partition, timeout_ms: int | None = None) -> int:
        return 60

    def poll(self, timeout_ms: int) -> dict[Partition, list[Record]]:
        self.polled += 1
        return {
            Partition("eddy.numbers", 3): [
                Record("eddy.numbers", 58, b"one", partition=3),
                Record("eddy.numbers", 59, b"1", partition=3),
            ]
        }


def test_a_turn_acknowledges_dead_letters_before_its_commit_and_reports_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("eddy.services.ops.poll_loop.TopicWatch.start", lambda *_: Watch())
    consumer, producer = LaggingConsumer(), RecordingProducer()
    loop = PollLoop(
        Settings(),
        consumer=consumer,
        decoders={"eddy.numbers": as_number},
        dead_letters=DeadLetterSink(producer, "dlq"),
        liveness=QuietLiveness(),  # type: ignore[arg-type]
        poll_ms=10,
        handle_signals=False,
    )
    handled: list[list[int | None]] = []
    acknowledged_at_commit: list[list[int]] = []

    def handle(batch: list[Any]) -> None:
        handled.append([c.message for c in batch])
        loop.stop()

    loop.run(handle, lambda: acknowledged_at_commit.append(list(producer.acknowledged)))
    assert handled == [[None, 1]]
    assert acknowledged_at_commit == [[58]]
    lag = REGISTRY.get_sample_value(
        "eddy_consumer_lag", {"topic": "eddy.numbers", "partition": "3"}
    )
    assert lag == 40


class Watch:
    """A topic watch with nothing to watch (no broker here)."""

    def check(self) -> None:
        pass

    def stop(self) -> None:
        pass


class QuietLiveness:
    """A liveness watchdog without its thread (it asks the broker about the group)."""

    def start(self) -> None:
        pass

    def observe(self, positions: Any) -> None:
        pass

    def stop(self) -> None:
        pass
