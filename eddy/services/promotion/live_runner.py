"""Live champion/challenger comparison wired to the running system.

The predictors record every shadow-scored request's answers (champion and challengers)
on the ``<prefix>shadow`` stream; the learner records each label it joins under the
request id. Every ``EDDY_LIVE_EVALUATION_EVERY_S`` the retrainer process pairs them and
lets :class:`~eddy.services.promotion.live_evaluation.LiveEvaluator` promote a significantly better
challenger (:func:`evaluate_live`). The same round guards the champion on the same
recent labelled examples (:meth:`eddy.services.training.retrainer.Retrainer.guard_champion`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from eddy.services.config.settings import Settings
from eddy.services.promotion.live_evaluation import LiveEvaluator, RecordedAnswer
from eddy.services.promotion.rules import Decision, SliceGate
from eddy.services.registry.store import Registry
from eddy.services.serving.request_log import ShadowLog
from eddy.streams.learning.slices import SliceNamer
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import make_redis

log = logging.getLogger(__name__)


def recorded_answers(settings: Settings) -> list[RecordedAnswer]:
    """The shadow log as answers (newest ``EDDY_SHADOW_LOG_MAX`` at most)."""
    client = make_redis(settings)
    try:
        shadow = ShadowLog.from_settings(client, settings).newest()
    finally:
        client.close()
    return [RecordedAnswer(a.request_id, a.model, a.version, a.prediction) for a in shadow]


def request_slices(
    settings: Settings, store: SnapshotStore, request_ids: Iterable[str]
) -> dict[str, list[str]] | None:
    """Each labelled request's slices, from the features it was served with."""
    if not settings.slices:
        return None
    namer = SliceNamer(settings.slices, settings.slice_max_values)
    seen = store.fetch(sorted(request_ids))
    return {rid: namer.slices_of(snapshot.features) for rid, snapshot in sorted(seen.items())}


def evaluate_live(settings: Settings, registry: Registry, model: str) -> list[Decision]:
    """One round of the challenger comparison on shadow-scored requests."""
    answers = [a for a in recorded_answers(settings) if a.model == model]
    if not answers:
        return []
    store = SnapshotStore(make_redis(settings), settings.topic_prefix, settings.label_window_s)
    labels = store.fetch_labels({a.request_id for a in answers})
    evaluator = LiveEvaluator(
        registry,
        model,
        actor=f"live evaluation ({settings.client_id})",
        slice_gate=SliceGate(
            metric="accuracy",
            higher_is_better=True,
            tolerance=settings.slice_tolerance,
            min_examples=settings.slice_min_examples,
        ),
    )
    decisions = []
    compared = evaluator.compare(answers, labels, request_slices(settings, store, labels))
    if compared is not None:
        decisions.append(compared)
    for decision in decisions:
        log.info(
            "live decision",
            extra={"model": model, "action": decision.action, "reason": decision.reason},
        )
    return decisions
