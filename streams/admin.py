"""Creating and listing Eddy's topics on the broker (the I/O edge of :mod:`streams.topics`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from services.settings import Settings
from streams.clients import make_admin
from streams.topics import TopicSpec, topic_specs


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    created: bool


def ensure_topics(settings: Settings) -> list[TopicState]:
    """Create every Eddy topic that is missing; existing ones are left as they are."""
    specs = topic_specs(prefix=settings.topic_prefix, partitions=settings.partitions)
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            _create(admin, missing, settings.replication_factor)
        partitions = _partition_counts(admin, [spec.name for spec in specs])
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
    described = admin.describe_topics(names)
    return {t["name"]: len(t["partitions"]) for t in described if not t["error_code"]}


def list_topics(settings: Settings) -> dict[str, int]:
    """Every topic on the broker (Eddy's and others) with its partition count."""
    admin = make_admin(settings)
    try:
        names = sorted(n for n in admin.list_topics() if not n.startswith("__"))
        return _partition_counts(admin, names) if names else {}
    finally:
        admin.close()
