"""The registry wired to the running system: announcements and online snapshots.

Every alias change is announced on ``model-updates``. The topic is compacted and keyed
by model name: its latest record per model tells a predictor starting cold which
versions serve, and each new record tells running ones to swap. The learner's periodic
snapshots become registry versions through :func:`learner_snapshots`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from eddy.services.config.settings import Settings
from eddy.services.registry.lineage import CALIBRATION_KEY, code_version, library_versions
from eddy.services.registry.store import (
    CHAMPION,
    RIVER,
    Lineage,
    Registry,
    RegistryError,
    Version,
)
from eddy.services.registry.triggers import Trigger, TriggerKind
from eddy.streams.drift.estimate import Calibration
from eddy.streams.learning.checkpoints import LearnerState
from eddy.streams.learning.learner import LearnerConfig
from eddy.streams.learning.slices import flatten
from eddy.streams.messages.contracts import ModelUpdate
from eddy.streams.messages.validation import encode
from eddy.streams.transport.clients import make_producer
from eddy.streams.transport.topics import Topic, topic_name

SEND_TIMEOUT_S = 30.0


def announcer(settings: Settings) -> Callable[[str, Version, str | None], None]:
    topic = topic_name(Topic.MODEL_UPDATES, settings.topic_prefix)

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


def learner_snapshots(registry: Registry, role: str) -> Callable[[LearnerState, Path], None]:
    """The learner's snapshot hook: each snapshot becomes a version (``model@offsets``).

    Its lineage records the offsets learned since the previous snapshot, so two
    snapshots' lineage diff reads "learned offsets a..b since". A snapshot with the same
    offsets as an existing version (a replay after a crash) is not registered twice.
    With no champion yet, the first snapshot becomes champion: the online model serves
    until a retrained one wins.
    """

    def record(state: LearnerState, checkpoint: Path) -> None:
        learner = state.learner
        model = learner.config.model
        learned = state.learned_since_snapshot()
        if registry.learned_exactly(model, RIVER, learned) is not None:
            return
        window: dict[str, object] = {"examples": learner.examples, "since": state.snapshot_examples}
        if state.event_times is not None:
            window["from"], window["to"] = (
                datetime.fromtimestamp(t, UTC).isoformat() for t in state.event_times
            )
        if state.label_coverage is not None:
            window["label_coverage"] = round(state.label_coverage, 4)
        if learner.calibration.labelled:
            window[CALIBRATION_KEY] = learner.calibration.as_table()
        lineage = Lineage(
            trained_on=learned,
            feature_set=",".join(sorted(state.feature_sets)) or "online",
            params=snapshot_params(learner.config),
            libraries=library_versions(),
            code_version=code_version(),
            trigger=Trigger(TriggerKind.CHECKPOINT, checkpoint.name).to_dict(),
            trainer=role,
            window=window,
        )
        overall = learner.metrics.report() | flatten(learner.slice_report())
        metrics = {k: v for k, v in overall.items() if math.isfinite(v)}
        version = registry.register(model, RIVER, learner.model, metrics, lineage)
        if registry.alias(model, CHAMPION) is None:
            registry.promote(model, version.version, role, "cold start: first online snapshot")

    return record


def registry_calibrations(registry: Registry, model: str) -> Callable[[str], Calibration | None]:
    """What the learner's live estimate seeds a served version with: the calibration
    table its lineage kept (a retrain's holdout, an online snapshot's prequential
    answers); None for a version without one, or not ``model``'s."""

    def calibration_of(version: str) -> Calibration | None:
        name, _, number = version.rpartition("@")
        if name != model or not number.isdigit():
            return None
        try:
            table = registry.get(model, int(number)).lineage.window.get(CALIBRATION_KEY)
        except RegistryError:
            return None
        return None if table is None else Calibration.from_table(table)

    return calibration_of


def snapshot_params(config: LearnerConfig) -> dict[str, str]:
    """What an online snapshot's lineage records of its model: the kind and detector,
    and for a project's model (kind ``project``) what its ``online_model()`` builds.

    >>> snapshot_params(LearnerConfig(model="m"))
    {'kind': 'logistic', 'detector': 'adwin'}
    >>> snapshot_params(LearnerConfig(model="m", kind="project", online_model="Pipeline (A | B)"))
    {'kind': 'project', 'detector': 'adwin', 'online_model': 'Pipeline (A | B)'}
    """
    built = {"online_model": config.online_model} if config.online_model else {}
    return {"kind": config.kind, "detector": config.detector, **built}
