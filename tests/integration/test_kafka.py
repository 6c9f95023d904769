"""A real producer, a real consumer group, committed offsets and a restart."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewPartitions

from eddy.services.config.settings import Settings
from eddy.streams.transport.clients import (
    log_offsets,
    make_admin,
    make_consumer,
    make_producer,
    subscribe,
)
from tests.waiting import wait_until

DEADLINE_S = 60


def _produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = make_producer(settings)
    try:
        for value in values:
            producer.send(topic, key=value[-1:], value=value)
        producer.flush(timeout=DEADLINE_S)
    finally:
        producer.close()


def _take(consumer: KafkaConsumer, count: int) -> list[bytes]:
    """Exactly ``count`` records (or fewer if the deadline passes), one poll at a time."""
    taken: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(taken) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=count - len(taken)).values():
            taken.extend(record.value for record in records)
    return taken


def test_a_restarted_group_member_resumes_after_the_last_commit(
    stack: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic(partitions=2)
    values = [f"record-{i:02d}".encode() for i in range(20)]
    _produce(stack, topic, values)

    first = make_consumer(stack, topic, group_id=group_id)
    try:
        before_commit = _take(first, 12)
        first.commit()
        committed = {p: first.committed(TopicPartition(topic, p)) or 0 for p in (0, 1)}
    finally:
        first.close()
    # Invariant: committed positions add up to exactly what was consumed.
    assert sum(committed.values()) == len(before_commit) == 12

    second = make_consumer(stack, topic, group_id=group_id)
    try:
        after_restart = _take(second, 8)
        assert _take_nothing_more(second)
    finally:
        second.close()

    assert len(after_restart) == 8
    assert set(before_commit).isdisjoint(after_restart), "a committed record was redelivered"
    assert sorted(before_commit + after_restart) == sorted(values), "a record was lost"


def test_uncommitted_records_are_redelivered_after_a_crash(
    stack: Settings, new_topic: Callable[..., str], group_id: str
) -> None:
    topic = new_topic(partitions=1)
    values = [f"v{i}".encode() for i in range(6)]
    _produce(stack, topic, values)

    crashed = make_consumer(stack, topic, group_id=group_id)
    try:
        assert len(_take(crashed, 6)) == 6  # consumed, never committed
    finally:
        crashed.close(autocommit=False)

    restarted = make_consumer(stack, topic, group_id=group_id)
    try:
        assert _take(restarted, 6) == values
    finally:
        restarted.close()


def _take_nothing_more(consumer: KafkaConsumer) -> bool:
    return not any(consumer.poll(timeout_ms=1000).values())


def test_a_group_member_gets_every_partition_at_its_first_join(
    stack: Settings, new_topic: Callable[..., str], group_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before subscribe() fetched the metadata first, the joining leader assigned nothing
    ("No partition metadata") and relied on a later rebalance that might never come."""
    topic = new_topic(partitions=3)
    caplog.set_level(logging.WARNING, logger="kafka.coordinator.assignors")
    consumer = make_consumer(stack, topic, group_id=group_id)
    try:
        joins = 0
        while not consumer.assignment() and joins < 100:
            consumer.poll(timeout_ms=100)
            joins += 1
        assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2}
        assert "No partition metadata" not in caplog.text
    finally:
        consumer.close(autocommit=False)


def test_subscribing_to_a_topic_that_does_not_exist_fails_clearly(stack: Settings) -> None:
    consumer = make_consumer(stack, group_id="eddy-test-nothing")
    try:
        with pytest.raises(TimeoutError, match="eddy topics create"):
            subscribe(consumer, [f"{stack.topic_prefix}no-such-topic"], timeout_s=1.0)
    finally:
        consumer.close(autocommit=False)


def test_a_producer_closed_as_soon_as_it_is_made_closes(stack: Settings) -> None:
    """kafka-python 2.3.3's own producer hung in every such close (10 of 10), asleep in
    its sender until the next metadata refresh; a CLI that refused its input hung with it."""
    for _ in range(5):
        producer = make_producer(stack)
        closing = threading.Thread(target=producer.close, daemon=True)
        closing.start()
        closing.join(DEADLINE_S)
        assert not closing.is_alive(), "close() still waiting for the producer's sender"


def test_a_consumer_behind_on_large_records_reads_them(
    stack: Settings, new_topic: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """kafka-python 2.3.3 fetches up to 1 MiB per partition but refuses any response
    frame over 1,000,000 bytes (``receive_message_max_bytes``): a consumer behind on
    three partitions of records near Eddy's 512 KiB limit closed the connection on
    every fetch ("Invalid frame length"), stalling until a retry happened to ask for
    less. The long fuzz found it.
    """
    topic = new_topic(partitions=3)
    values = [random.Random(i).randbytes(400 * 1024) for i in range(9)]  # incompressible
    producer = make_producer(stack)
    try:
        for i, value in enumerate(values):
            producer.send(topic, partition=i % 3, value=value)
        producer.flush(timeout=DEADLINE_S)
    finally:
        producer.close()
    consumer = make_consumer(stack, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        with caplog.at_level(logging.ERROR, logger="kafka"):
            assert sorted(_take(consumer, len(values))) == sorted(values)
    finally:
        consumer.close()
    assert "Invalid frame length" not in caplog.text


def test_log_offsets_answer_for_a_partition_the_client_has_not_seen_yet(
    stack: Settings, new_topic: Callable[..., str]
) -> None:
    """kafka-python 2.3.3 raises KeyError from ``end_offsets`` for a partition whose
    leader its metadata does not know yet (the monitor's lag view hit it while the demo
    created its topics); ``log_offsets`` asks again once the client has learned it."""
    topic = new_topic(partitions=1)
    _produce(stack, topic, [b"a", b"b"])
    consumer = make_consumer(stack, group_id=None)
    admin = make_admin(stack)
    try:
        assert log_offsets(consumer, [TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 2}
        admin.create_partitions({topic: NewPartitions(total_count=3)})
        grown = [TopicPartition(topic, p) for p in range(3)]
        wait_until(
            lambda: len(admin.describe_topics([topic])[0]["partitions"]) == 3,
            "the topic grown to 3 partitions",
            timeout_s=30,
        )

        assert log_offsets(consumer, grown) == {grown[0]: 2, grown[1]: 0, grown[2]: 0}
        assert log_offsets(consumer, grown, end=False) == dict.fromkeys(grown, 0)
    finally:
        admin.close()
        consumer.close()
