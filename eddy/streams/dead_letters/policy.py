"""The one place that decides what a failure means: dead-letter, retry, or stop.

- :class:`~eddy.streams.messages.validation.InvalidMessage` (the input's fault) → dead-letter it and
go
  on; a worker never stops on input.
- An infrastructure outage (Redis or Kafka unreachable, a timeout, a retriable broker
  error) → wait and retry the same work, with capped exponential backoff, for as long
  as it takes; the work is idempotent, so retrying is always safe, and processing
  resumes by itself when the service is back.
- Anything else is a bug → stop, so that the supervisor restarts the worker from its
  last committed offsets and the failure is loud.

>>> import redis
>>> action_for(redis.ConnectionError("down")), action_for(KeyError("x"))
(<Action.RETRY: 'retry'>, <Action.STOP: 'stop'>)
>>> action_for(redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"))
<Action.RETRY: 'retry'>
>>> [round(d, 2) for d in backoff_delays(initial_s=0.1, max_s=1.0, attempts=6)]
[0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import TypeVar

import redis
from kafka.errors import KafkaError

from eddy.streams.messages.validation import InvalidMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

INITIAL_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0

# A Redis Cluster in a failover says so in these until a replica is promoted and the
# client's slot map has caught up (ClusterError: down, master down, too many redirects;
# RedisClusterException: no node reachable, slots not covered)...
_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    ConnectionError,
    TimeoutError,
)


class Action(StrEnum):
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    STOP = "stop"


# ...except the cluster client's refusals of what Eddy asked (a bug, not an outage).
_REFUSED = (redis.exceptions.CrossSlotTransactionError, redis.exceptions.InvalidPipelineStack)


def action_for(exc: BaseException) -> Action:
    if isinstance(exc, InvalidMessage):
        return Action.DEAD_LETTER
    if isinstance(exc, _TRANSIENT) and not isinstance(exc, _REFUSED):
        return Action.RETRY
    if isinstance(exc, KafkaError) and exc.retriable:
        return Action.RETRY
    return Action.STOP


def backoff_delays(
    initial_s: float = INITIAL_BACKOFF_S, max_s: float = MAX_BACKOFF_S, attempts: int | None = None
) -> Iterator[float]:
    """Doubling delays capped at ``max_s`` (endless when ``attempts`` is None)."""
    delay, given = initial_s, 0
    while attempts is None or given < attempts:
        yield min(delay, max_s)
        delay *= 2
        given += 1


def wait_out_redis(
    work: Callable[[], T], what: str, *, patience_s: float, stopping: Callable[[], bool]
) -> T:
    """Run ``work``, waiting out a Redis outage (a Cluster master failing over takes a
    few seconds) for up to ``patience_s``; anything else, a longer outage or a stop
    raises, for the service's supervisor to restart it from its committed offsets.

    Bounded, unlike :func:`retry_transient`: a consumer that does not poll for its max
    poll interval is dropped from its group, and a stop must not wait for Redis."""
    deadline = time.monotonic() + patience_s
    delays = backoff_delays()
    while True:
        try:
            return work()
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            delay = next(delays)
            if (
                action_for(exc) is not Action.RETRY
                or stopping()
                or time.monotonic() + delay > deadline
            ):
                raise
            log.warning(
                "Redis unavailable; retrying",
                extra={"work": what, "error": repr(exc), "retry_in_s": delay},
            )
            time.sleep(delay)


def retry_transient(work: Callable[[], T], what: str) -> T:
    """Run ``work`` until it succeeds, waiting out transient outages; stop on bugs."""
    delays = backoff_delays()
    while True:
        try:
            return work()
        except Exception as exc:
            if action_for(exc) is not Action.RETRY:
                raise
            delay = next(delays)
            log.warning(
                "transient failure; retrying",
                extra={"work": what, "error": repr(exc), "retry_in_s": delay},
            )
            time.sleep(delay)
