"""The one place Kafka and Redis clients are built, with Eddy's invariants enforced.

Delivery guarantees rest on two client settings that nobody may loosen: producers wait
for all in-sync replicas with idempotence on (no loss, no duplicates from retries), and
consumers never auto-commit (offsets move only after effects are durable). Callers may
tune anything else; trying to override an invariant raises at start-up.

>>> from eddy.services.config.settings import Settings
>>> producer_config(Settings(), linger_ms=5)["acks"]
'all'
>>> producer_config(Settings(), acks=1)
Traceback (most recent call last):
...
eddy.streams.transport.clients.ClientInvariantError: producer setting acks must stay 'all' (got 1)
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaTimeoutError, RebalanceInProgressError
from redis.cluster import ClusterNode, RedisCluster

from eddy.streams.store.redis_commands import RedisClient
from eddy.streams.transport.config import KafkaConfig, RedisConfig, SecurityProtocol, TopicLayout

log = logging.getLogger(__name__)

PRODUCER_INVARIANTS: dict[str, Any] = {"acks": "all", "enable_idempotence": True}
CONSUMER_INVARIANTS: dict[str, Any] = {"enable_auto_commit": False}
# kafka-python 2.3.3 fetches up to 1 MiB per partition (50 MiB per response) yet refuses
# any response frame over 1,000,000 bytes: a consumer behind on three partitions of large
# records closed its connection on every fetch ("Invalid frame length"). A response is
# bounded here, and the frame limit holds it with room for one oversized batch, which
# the broker returns whole.
FETCH_MAX_BYTES = 16 * 1024 * 1024
BROKER_MAX_BATCH_BYTES = 2 * 1024 * 1024
# A group notices new topics or partitions (scaling out) at its next metadata refresh:
# 30 s instead of the client default of 5 min.
METADATA_MAX_AGE_MS = 30_000
# How long a group member waits for its topics' partitions to be known before joining.
TOPIC_METADATA_TIMEOUT_S = 30.0
TOPIC_METADATA_RETRY_S = 0.2
# How often a closing producer's sender is woken until it has ended (see Producer).
CLOSE_WAKE_EVERY_S = 0.1
# How often log offsets are asked again while the client learns a partition's leader
# (log_offsets), and how long apart.
OFFSET_ATTEMPTS = 20
OFFSET_RETRY_S = 0.1


class ClientInvariantError(ValueError):
    """A caller tried to loosen a delivery invariant."""


def _check(kind: str, invariants: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, required in invariants.items():
        if key in overrides and overrides[key] != required:
            raise ClientInvariantError(
                f"{kind} setting {key} must stay {required!r} (got {overrides[key]!r})"
            )


def security_config(settings: KafkaConfig) -> dict[str, Any]:
    """kafka-python security options from settings (SASL and TLS pass straight through)."""
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol.value}
    if settings.kafka_security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        config |= {
            "ssl_cafile": _path(settings.kafka_ssl_cafile),
            "ssl_certfile": _path(settings.kafka_ssl_certfile),
            "ssl_keyfile": _path(settings.kafka_ssl_keyfile),
        }
    if settings.kafka_sasl_mechanism is not None:
        password = settings.kafka_sasl_password
        config |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism.value,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    return config


def _path(value: object) -> str | None:
    return None if value is None else str(value)


def common_config(settings: KafkaConfig, role: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "client_id": f"{settings.client_id}-{role}",
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        **security_config(settings),
    }


def producer_config(settings: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    _check("producer", PRODUCER_INVARIANTS, overrides)
    return {**common_config(settings, "producer"), **overrides, **PRODUCER_INVARIANTS}


def consumer_config(
    settings: KafkaConfig, group_id: str | None, **overrides: Any
) -> dict[str, Any]:
    _check("consumer", CONSUMER_INVARIANTS, overrides)
    return {
        **common_config(settings, "consumer"),
        "group_id": group_id,
        "session_timeout_ms": settings.consumer_session_timeout_ms,
        "heartbeat_interval_ms": settings.consumer_heartbeat_interval_ms,
        "max_poll_interval_ms": settings.consumer_max_poll_interval_ms,
        "auto_offset_reset": "earliest",
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "receive_message_max_bytes": FETCH_MAX_BYTES + BROKER_MAX_BATCH_BYTES,
        **overrides,
        **CONSUMER_INVARIANTS,
    }


class Producer(KafkaProducer):  # type: ignore[misc]
    """kafka-python's producer, with a close that cannot sleep for minutes.

    kafka-python 2.3.3 loses the close's wake-up when it comes while the sender still
    awaits its idempotent producer id (a producer closed within about half a second of
    its creation): the sender then goes back to sleep in its network poll until its next
    metadata refresh (5 min) and ``close`` waits for it (every such close hung, 10 of 10;
    ``tests/integration/test_kafka.py``). Waking the sender until it has ended makes
    that close as quick as any other; a sender with records to deliver still delivers
    them first, as ``close`` promises.
    """

    def close(self, timeout: float | None = None, null_logger: bool = False) -> None:
        if getattr(self, "_closed", True) or sys.is_finalizing():
            # closed already, or collected at interpreter exit (``__del__`` closes too),
            # when no new thread may start: nothing to wake
            super().close(timeout=timeout, null_logger=null_logger)
            return
        sender: Any = getattr(self, "_sender", None)
        closed = threading.Event()

        def wake_until_closed() -> None:
            while not closed.wait(CLOSE_WAKE_EVERY_S) and sender.is_alive():
                try:
                    sender.wakeup()
                except OSError:  # its client closed in between: it is ending anyway
                    return

        if sender is not None:
            threading.Thread(target=wake_until_closed, name="producer-close", daemon=True).start()
        try:
            super().close(timeout=timeout, null_logger=null_logger)
        finally:
            closed.set()


class TopicGone(RuntimeError):
    """A topic a worker reads was deleted from the broker."""


class TopicWatch:
    """Stops a worker whose topic was deleted, saying which.

    A deleted topic does not come back by itself (the broker Eddy starts never creates
    topics on first use), and kafka-python's consumer just stops being assigned its
    partitions: it would poll nothing for ever, healthy to every probe. A daemon thread
    lists the broker's topics every ``every_s`` (``EDDY_TOPIC_CHECK_S``) with a client
    of its own, so a broker that does not answer never blocks the poll loop; the loop's
    :meth:`check` only reads the verdict. Missing twice in a row means deleted (one
    listing taken mid-change is not enough).

    >>> listings = iter([{"eddy.events"}, set(), set()])
    >>> watch = TopicWatch(lambda: next(listings), ["eddy.events"], every_s=0)
    >>> watch.look(), watch.look(), watch.look()[:34]
    (None, None, 'topic eddy.events no longer exists')
    """

    def __init__(
        self, list_topics: Callable[[], Iterable[str]], topics: Iterable[str], every_s: float
    ) -> None:
        self._list_topics = list_topics
        self._topics = sorted(set(topics))
        self._every_s = every_s
        self._missing_before: set[str] = set()
        self._verdict: str | None = None
        self._stopped = threading.Event()

    @classmethod
    def start(cls, settings: TopicLayout, topics: Iterable[str]) -> TopicWatch:
        """A watch on its own thread and admin client, stopped by :meth:`stop`."""
        watch = cls(list, topics, settings.topic_check_s)  # listing set by the thread
        thread = threading.Thread(
            target=watch._run, args=(settings,), name="topic-watch", daemon=True
        )
        thread.start()
        return watch

    def look(self) -> str | None:
        """List the topics once; the verdict once a topic was missing twice in a row."""
        missing = set(self._topics) - set(self._list_topics())
        gone = sorted(missing & self._missing_before)
        self._missing_before = missing
        if gone:
            self._verdict = (
                f"topic {', '.join(gone)} no longer exists on the broker: stopping "
                "(recreate it with `eddy topics create`)"
            )
        return self._verdict

    def check(self) -> None:
        """Raise :class:`TopicGone` once the watch found a topic deleted."""
        if self._verdict is not None:
            raise TopicGone(self._verdict)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self, settings: TopicLayout) -> None:
        # Connecting here, not in start(): a worker's start-up does not wait for it.
        try:
            admin = make_admin(settings)
        except Exception:  # the broker away: the worker's own clients will say so
            log.warning("topic watch could not connect; not watching", exc_info=True)
            return
        self._list_topics = admin.list_topics
        try:
            while not self._stopped.wait(self._every_s) and self._verdict is None:
                try:
                    self.look()
                except Exception:  # the broker away: the liveness watchdog judges that
                    log.debug("topic listing failed", exc_info=True)
        finally:
            admin.close()


def make_producer(settings: KafkaConfig, **overrides: Any) -> KafkaProducer:
    return Producer(**producer_config(settings, **overrides))


def make_consumer(
    settings: KafkaConfig, *topics: str, group_id: str | None, **overrides: Any
) -> KafkaConsumer:
    """A consumer; with a group and topics, subscribed once the topics are known."""
    if group_id is None:
        return KafkaConsumer(*topics, **consumer_config(settings, group_id, **overrides))
    consumer = KafkaConsumer(**consumer_config(settings, group_id, **overrides))
    if topics:
        subscribe(consumer, topics)
    return consumer


def subscribe(
    consumer: KafkaConsumer,
    topics: Iterable[str],
    listener: ConsumerRebalanceListener | None = None,
    timeout_s: float = TOPIC_METADATA_TIMEOUT_S,
) -> None:
    """Subscribe to ``topics`` after the client has learnt their partitions.

    A member that joins its group before its client has the topics' metadata and ends
    up as the group leader assigns nothing (kafka-python's assignors log "No partition
    metadata for topic ...") and can stay idle until another rebalance happens, which
    may be never. Fetching the metadata first makes the first assignment complete.
    """
    topics = list(topics)
    deadline = time.monotonic() + timeout_s
    for topic in topics:
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"topic {topic} has no partitions on the broker after "
                    f"{timeout_s:.0f} s (create Eddy's topics: eddy topics create)"
                )
            time.sleep(TOPIC_METADATA_RETRY_S)
    consumer.subscribe(topics, listener=listener)


def commit_unless_refused(consumer: KafkaConsumer) -> bool:
    """Commit the consumer's positions; False when the group refused (it is rebalancing,
    or it moved on after a max poll interval) instead of raising.

    A refused commit loses nothing: the records are read again by whoever owns their
    partition next, and Eddy's effects are idempotent (or, for answers, re-sent as
    logged). Raising would only end the worker for its supervisor to restart it.
    """
    try:
        consumer.commit()
    except (CommitFailedError, RebalanceInProgressError) as exc:
        log.warning("offset commit refused by the group", extra={"error": str(exc)})
        return False
    return True


def log_offsets(
    consumer: KafkaConsumer, partitions: Iterable[TopicPartition], *, end: bool = True
) -> dict[TopicPartition, int]:
    """The log end (``end``) or start offset of each of ``partitions``.

    kafka-python 2.3.3 leaves out of its ListOffsets request any partition whose leader
    its metadata does not know yet (a topic created or grown a moment ago, a leader being
    elected) and then fails with ``KeyError`` for it. By then it has asked for fresh
    metadata, so the same question asked again shortly after is answered: this asks up
    to :data:`OFFSET_ATTEMPTS` times, :data:`OFFSET_RETRY_S` apart, and then raises
    ``KafkaTimeoutError`` naming the partition. (Reproduced: metadata of a topic with one
    partition, grown to three, then ``end_offsets`` of all three: ``KeyError`` on the
    first call, answered on the second.)
    """
    asked = list(partitions)
    read = consumer.end_offsets if end else consumer.beginning_offsets
    for _ in range(OFFSET_ATTEMPTS - 1):
        try:
            return dict(read(asked))
        except KeyError as exc:
            log.debug("partition leader not known yet", extra={"partition": str(exc)})
            time.sleep(OFFSET_RETRY_S)
    try:
        return dict(read(asked))
    except KeyError as exc:
        raise KafkaTimeoutError(f"no leader known for {exc} after {OFFSET_ATTEMPTS} tries") from exc


def make_admin(settings: KafkaConfig, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**{**common_config(settings, "admin"), **overrides})


def make_redis(settings: RedisConfig, **overrides: Any) -> RedisClient:
    """A Redis client from the URL, plus the password and TLS CA from settings: redis-py's
    cluster client when ``redis_cluster`` is set (the URL names any node; it starts from
    that one and ``redis_cluster_nodes``: one that answers is enough)."""
    options: dict[str, Any] = dict(overrides)
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ssl_ca_certs is not None:
        options["ssl_ca_certs"] = str(settings.redis_ssl_ca_certs)
    if settings.redis_cluster:
        seeds = [node.rsplit(":", 1) for node in settings.redis_cluster_nodes.split(",") if node]
        startup = [ClusterNode(host, int(port)) for host, port in seeds]  # type: ignore[no-untyped-call]
        return RedisCluster.from_url(settings.redis_url, startup_nodes=startup, **options)
    return redis.Redis.from_url(settings.redis_url, **options)
