"""Reading a consumer group's state while its coordinator is not ready yet."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import CoordinatorLoadInProgressError, KafkaConnectionError
from kafka.protocol.admin import DescribeGroupsResponse_v3

from eddy.streams.transport.admin import GroupAnswerUnreadable, describe_group, group_serving

LOAD_IN_PROGRESS = 14
KAFKA_DEFAULT_OPERATIONS = {31}  # INT32_MIN: what Kafka puts in an error answer


def read_answer(error_code: int, operations: set[int]) -> Any:
    """kafka-python's reading of a DescribeGroups v3 answer, from its wire bytes."""
    answer = DescribeGroupsResponse_v3(
        throttle_time_ms=0, groups=[(error_code, "g", "", "consumer", "", [], operations)]
    )
    response = DescribeGroupsResponse_v3.decode(answer.encode())
    return KafkaAdminClient._describe_consumer_groups_process_response(None, response)


def test_kafka_python_cannot_read_an_error_answer_with_kafkas_default_operations() -> None:
    # The library behaviour the workaround exists for (kafka-python 2.3.3): the same
    # error answer raises its error only without bit 31 in authorized_operations.
    with pytest.raises(ValueError, match="31 is not a valid ACLOperation"):
        read_answer(LOAD_IN_PROGRESS, KAFKA_DEFAULT_OPERATIONS)
    with pytest.raises(CoordinatorLoadInProgressError):
        read_answer(LOAD_IN_PROGRESS, set())


class AnsweringAdmin:
    """An admin client whose every DescribeGroups answer is ``answer`` (read as
    kafka-python reads it) or raises ``error``."""

    def __init__(self, error: Exception | None = None, answer: Any = None) -> None:
        self.error, self.answer = error, answer

    def describe_consumer_groups(self, _groups: list[str]) -> Any:
        if self.error is not None:
            raise self.error
        return [self.answer]


def unreadable_error() -> Exception:
    try:
        read_answer(LOAD_IN_PROGRESS, KAFKA_DEFAULT_OPERATIONS)
    except ValueError as exc:
        return exc
    raise AssertionError("kafka-python read the answer: the workaround may go")


def test_an_unreadable_error_answer_is_a_retriable_error_and_not_serving_yet() -> None:
    # The first integration test of an xdist session (its broker just started) failed
    # on this ValueError while it waited for its predictor's group.
    admin: Any = AnsweringAdmin(unreadable_error())
    with pytest.raises(GroupAnswerUnreadable):
        describe_group(admin, "g")
    assert group_serving(admin, "g") is False


def test_a_coordinator_still_loading_means_not_serving_yet() -> None:
    admin: Any = AnsweringAdmin(CoordinatorLoadInProgressError("loading"))
    assert group_serving(admin, "g") is False


def test_a_broker_that_cannot_be_reached_is_an_error() -> None:
    admin: Any = AnsweringAdmin(KafkaConnectionError("refused"))
    with pytest.raises(KafkaConnectionError):
        group_serving(admin, "g")


def test_a_stable_group_with_a_member_serves() -> None:
    answer = DescribeGroupsResponse_v3(
        throttle_time_ms=0,
        groups=[(0, "g", "Stable", "consumer", "range", [("m1", "c", "h", b"", b"")], {3})],
    )
    read = KafkaAdminClient._describe_consumer_groups_process_response(
        None, DescribeGroupsResponse_v3.decode(answer.encode())
    )
    admin: Any = AnsweringAdmin(answer=read)
    assert group_serving(admin, "g") is True
