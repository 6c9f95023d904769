"""Opening the registry so that every alias change is announced on ``model-updates``.

The topic is compacted and keyed by model name: its latest record per model tells a
predictor starting cold which versions serve, and each new record tells running ones to
swap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from services.registry import Registry, Version
from services.settings import Settings
from streams.clients import make_producer
from streams.contracts import ModelUpdate
from streams.serialization import signing_key
from streams.topics import Topic, spec_for
from streams.validation import encode

SEND_TIMEOUT_S = 30.0


def announcer(settings: Settings) -> Callable[[str, Version, str | None], None]:
    topic = spec_for(Topic.MODEL_UPDATES, prefix=settings.topic_prefix, partitions=1).name

    def announce(alias: str, version: Version, reason: str | None) -> None:
        update = ModelUpdate(
            update_id=f"{version.model}:{alias}:{version.version}:{time.time_ns()}",
            model=version.model,
            version=str(version.version),
            alias=alias,
            stage=version.flavor,
            metrics={k: v for k, v in version.metrics.items() if isinstance(v, int | float)},
            lineage_ref=f"{version.name} ({reason})" if reason else version.name,
            changed_at=datetime.now(UTC),
        )
        producer = make_producer(settings)
        try:
            producer.send(topic, key=version.model.encode(), value=encode(update)).get(
                timeout=SEND_TIMEOUT_S
            )
        finally:
            producer.close()

    return announce


def open_registry(settings: Settings, *, announce: bool = True) -> Registry:
    """The deployment's registry, signing with the deployment's key."""
    configured = settings.signing_key.get_secret_value().encode() if settings.signing_key else None
    return Registry(
        settings.data_dir / "registry",
        signing_key(configured, settings.data_dir),
        announcer(settings) if announce else None,
    )
