"""The learner's and the predictor's bounded wait for Redis: a failover is waited out,
a longer outage, a stop or anything but a Redis outage is raised for the supervisor."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from kafka.errors import KafkaTimeoutError

from eddy.streams.dead_letters.policy import wait_out_redis


def failing(times: int, error: Exception) -> Callable[[], str]:
    calls = {"n": 0}

    def work() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return f"done after {calls['n']} calls"

    return work


def test_a_short_redis_outage_is_waited_out() -> None:
    work = failing(2, redis.ConnectionError("master down"))
    assert wait_out_redis(work, "t", patience_s=30, stopping=lambda: False) == "done after 3 calls"


def test_a_cluster_failover_is_waited_out() -> None:
    work = failing(1, redis.exceptions.ClusterDownError("CLUSTERDOWN"))
    assert wait_out_redis(work, "t", patience_s=30, stopping=lambda: False) == "done after 2 calls"


def test_an_outage_longer_than_the_patience_is_raised() -> None:
    work = failing(100, redis.ConnectionError("master down"))
    with pytest.raises(redis.ConnectionError):
        wait_out_redis(work, "t", patience_s=0.1, stopping=lambda: False)


def test_a_stop_ends_the_wait() -> None:
    work = failing(100, redis.ConnectionError("master down"))
    with pytest.raises(redis.ConnectionError):
        wait_out_redis(work, "t", patience_s=30, stopping=lambda: True)


@pytest.mark.parametrize(
    "error",
    [KafkaTimeoutError("no metadata"), redis.ResponseError("OOM"), KeyError("bug")],
)
def test_anything_but_a_redis_outage_is_raised_at_once(error: Exception) -> None:
    work = failing(1, error)
    with pytest.raises(type(error)):
        wait_out_redis(work, "t", patience_s=30, stopping=lambda: False)
