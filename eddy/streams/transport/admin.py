"""Creating and listing Eddy's topics on the broker (the I/O edge of
:mod:`eddy.streams.transport.topics`)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
    TopicAlreadyExistsError,
)

from eddy.streams.transport.clients import make_admin
from eddy.streams.transport.config import TopicLayout
from eddy.streams.transport.topics import TopicSpec, topic_specs

READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.1


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    created: bool


def ensure_topics(settings: TopicLayout) -> list[TopicState]:
    """Create every Eddy topic that is missing; existing ones are left as they are.

    Returns only once every topic's partitions are visible in the broker's metadata:
    topic creation is asynchronous, and a consumer group that joins before then is
    assigned no partitions until its next metadata refresh, minutes later.
    """
    specs = topic_specs(prefix=settings.topic_prefix, partitions=settings.partitions)
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            _create(admin, missing, settings.replication_factor)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            partitions = _partition_counts(admin, [spec.name for spec in specs])
            if all(partitions.get(spec.name) == spec.partitions for spec in missing):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready after {READY_TIMEOUT_S}s: {partitions}")
            time.sleep(READY_POLL_S)
    finally:
        admin.close()
    return [TopicState(spec.name, partitions.get(spec.name, 0), spec in missing) for spec in specs]


def _create(admin: KafkaAdminClient, specs: list[TopicSpec], replication_factor: int) -> None:
    new_topics = [
        NewTopic(
            name=spec.name,
            num_partitions=spec.partitions,
            replication_factor=replication_factor,
            topic_configs=spec.config,
        )
        for spec in specs
    ]
    # Another process may create one of them between our listing and our request.
    with contextlib.suppress(TopicAlreadyExistsError):
        admin.create_topics(new_topics)


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions with a leader (usable ones) per topic that the broker knows."""
    described = admin.describe_topics(names)
    return {
        t["topic"]: sum(1 for p in t["partitions"] if p["leader"] >= 0)
        for t in described
        if not t["error_code"]
    }


def list_topics(settings: TopicLayout) -> dict[str, int]:
    """Every topic on the broker (Eddy's and others) with its partition count."""
    admin = make_admin(settings)
    try:
        names = sorted(n for n in admin.list_topics() if not n.startswith("__"))
        return _partition_counts(admin, names) if names else {}
    finally:
        admin.close()


@dataclass(frozen=True)
class GroupView:
    """One look at a consumer group: its state, how many members, what they own."""

    state: str  # "Stable", "PreparingRebalance", "CompletingRebalance", "Empty", "Dead"
    member_ids: frozenset[str]
    owned: frozenset[tuple[str, int]]  # (topic, partition) some member owns now


class GroupAnswerUnreadable(KafkaError):  # type: ignore[misc]
    """An error answer to DescribeGroups that kafka-python 2.3.3 cannot read.

    Kafka fills an error answer's ``authorized_operations`` with its default, INT32_MIN
    (bit 31); kafka-python decodes those bits before it looks at the error code and
    raises ``ValueError: 31 is not a valid ACLOperation`` instead of the error (a broker
    loading its group coordinator answers so: ``tests/unit/test_admin.py`` shows it).
    """

    retriable = True


def describe_group(admin: KafkaAdminClient, group: str) -> GroupView:
    """``group`` as its coordinator describes it (a group that does not exist is
    ``Dead`` with no members)."""
    try:
        (description,) = admin.describe_consumer_groups([group])
    except ValueError as exc:
        if "ACLOperation" not in str(exc):
            raise
        raise GroupAnswerUnreadable(f"group {group}: {exc}") from exc
    owned = frozenset(
        (topic, partition)
        for member in description.members
        # a member not yet assigned carries empty bytes, not a decoded assignment
        for topic, partitions in getattr(member.member_assignment, "assignment", None) or []
        for partition in partitions
    )
    members = frozenset(member.member_id for member in description.members)
    return GroupView(description.state, members, owned)


# What a broker answers about a group before its coordinator is up (just started, its
# offsets topic still being created or loaded) or while the coordinator moves: ask again.
COORDINATOR_NOT_READY = (
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorError,
    GroupAnswerUnreadable,
)


def group_serving(admin: KafkaAdminClient, group: str) -> bool:
    """Whether ``group`` is stable with members (its consumers own their partitions and
    read); False, not an error, while its coordinator is not ready yet."""
    try:
        view = describe_group(admin, group)
    except COORDINATOR_NOT_READY:
        return False
    return view.state == "Stable" and bool(view.member_ids)


def committed_offsets(admin: KafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    """The next offset ``group`` will read per partition, where it has committed one."""
    return {
        tp: meta.offset
        for tp, meta in admin.list_consumer_group_offsets(group).items()
        if meta.offset >= 0
    }
