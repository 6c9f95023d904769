"""Reading a consumer group's state while its coordinator is not ready yet."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import CoordinatorNotAvailableError, KafkaConnectionError

from streams.admin import group_serving


class RefusingAdmin:
    """An admin client whose broker answers every group question with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def describe_consumer_groups(self, _groups: list[str]) -> Any:
        raise self.error


def test_a_coordinator_not_available_yet_means_not_serving_yet() -> None:
    # A broker that just started answers FindCoordinator with error 15 until its offsets
    # topic exists: the first integration test of a session waiting for its predictor
    # failed on it instead of asking again (xdist starts that test seconds after the
    # broker).
    refusing: Any = RefusingAdmin(CoordinatorNotAvailableError("starting"))
    assert group_serving(refusing, "g") is False


def test_a_broker_that_cannot_be_reached_is_an_error() -> None:
    refusing: Any = RefusingAdmin(KafkaConnectionError("refused"))
    with pytest.raises(KafkaConnectionError):
        group_serving(refusing, "g")
