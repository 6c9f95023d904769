"""The retrainer: drift alert (or schedule, or operator) → a validated, registered model.

One retrain:

1. read the most recent ``EDDY_RETRAIN_WINDOW`` training examples from Kafka (the same
   point-in-time features the online learner saw, so training and serving share one
   feature code path), drop duplicate ids, order by event time; after a concept alert,
   keep only the examples after the drift (:mod:`eddy.services.training.bursts`);
2. hold out the most recent ``EDDY_RETRAIN_HOLDOUT`` fraction;
3. fit a scikit-learn pipeline (``DictVectorizer`` over Eddy's numeric encoding, then
   histogram gradient boosting by default; a project's ``retrain_estimator``, fresh for
   each retrain) on the rest;
4. score it, the current champion, the online learner's latest snapshot (after a drift
   it adapts first) and the previous champion (a concept may recur) on the same
   held-out examples, and a trivial baseline (the majority class, the mean);
5. decide, like with like: the best contender that beats the trivial baseline is
   promoted when it beats the champion by the margin (:func:`offline_decision`), no
   slice regressed, and, for a classifier, it is significantly better on the very same
   examples (:func:`paired_promotion`), or only no worse for a fresh fit on an alert,
   a refresh, or replacing a stop-gap champion (:func:`refit_needs_no_proof`); otherwise it
   challenges or is kept. When none beats the trivial baseline and the champion is
   below it too, the majority class serves (:func:`majority_class`). A fresh fit to be
   promoted is refitted on its holdout too (:func:`refit_on_all`); a contender already
   registered is promoted as itself;
6. register the fit with lineage (offset ranges, feature-set hash, parameters, library
   and code versions, trigger, trainer, window); the decision and its evidence go to
   the audit log.

This module reads, registers, audits and schedules; the steps in between that need no
I/O (the split, the fit, the scores, the refit, the stand-in, the proof asked of a fresh
fit) are :mod:`eddy.services.training.core`, and what a lineage records about the code
and the data is :mod:`eddy.services.registry.lineage`.

``eddy run retrainer`` listens to ``drift-alerts`` and retrains once per alert burst
(alerts for a model within ``EDDY_RETRAIN_DEBOUNCE_S`` of the first one are folded in; a
concept burst waits up to ``EDDY_RETRAIN_DRIFT_WAIT_S`` for enough examples after the
drift),
every ``EDDY_RETRAIN_EVERY_S`` seconds when that is set (a schedule), and once per
command on the ``control`` topic (the status API's ``POST /api/retrain``, the CLI).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kafka import TopicPartition

from eddy.services.config.learner import learner_labels
from eddy.services.config.retraining import deployment_retraining
from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.liveness import Liveness
from eddy.services.ops.poll_loop import Consumed, PollLoop
from eddy.services.project.loading import Project
from eddy.services.promotion.live_evaluation import LiveEvaluator
from eddy.services.promotion.live_runner import evaluate_live
from eddy.services.promotion.rules import (
    PROMOTE,
    ROLLBACK,
    Decision,
    DecisionAction,
    LiveGate,
    PairedGate,
    RollbackGuard,
    SliceGate,
    best_contender,
    gate_by_slices,
    live_decision,
    offline_decision,
    paired_no_regression,
    paired_promotion,
    significantly_above_majority,
    significantly_below_majority,
    significantly_below_promise,
    slice_regressions,
    trivial_scores,
)
from eddy.services.registry.lineage import (
    CALIBRATION_KEY,
    code_version,
    library_versions,
    offset_ranges,
    window_time,
)
from eddy.services.registry.store import (
    CHALLENGER,
    CHAMPION,
    RIVER,
    SKLEARN,
    Lineage,
    Registry,
    Version,
)
from eddy.services.registry.triggers import AuditAction, Trigger, TriggerKind
from eddy.services.training.bursts import (
    AFTER_DRIFT_SEEN,
    Burst,
    choose_examples,
    decidable_size,
    fold,
)
from eddy.services.training.control import (
    RECENT_IDS,
    audit_refusal,
    carried_out,
    control_topic,
    control_trigger,
    unknown_model,
)
from eddy.services.training.core import (
    HOLDOUT_KEY,
    MAJORITY_CLASS,
    REFITTED_ON,
    EstimatorFailed,
    TooFewExamples,
    TrainingSet,
    correctness,
    current_feature_set,
    evaluate,
    evaluate_slices,
    holdout_calibration,
    holdout_promise,
    is_classification,
    is_majority,
    majority_class,
    no_contender_decision,
    refit_needs_no_proof,
    refit_on_all,
    refitted_until,
    require_examples,
    stand_in_decision,
    training_set,
    unseen_holdout,
)
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.learning.learner import RETRAIN
from eddy.streams.learning.models import fit_vectors, label_refusal
from eddy.streams.learning.slices import SliceNamer, flatten
from eddy.streams.messages.contracts import ControlCommand, DriftAlert, TrainingExample
from eddy.streams.messages.signatures import signature_refusal
from eddy.streams.messages.validation import InvalidMessage, decode
from eddy.streams.store.recent_ids import RecentIds
from eddy.streams.transport.clients import (
    commit_unless_refused,
    log_offsets,
    make_consumer,
    make_producer,
)
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import Topic, spec_for, topic_name

log = logging.getLogger(__name__)

POLL_MS = 500
# A champion review reads this many smallest decidable holdouts of recent examples (at
# most the retrain window): enough to judge, cheap enough for every review tick.
REVIEW_HOLDOUTS = 10


def taken_before(window: Sequence[TrainingExample], needed: int) -> float | None:
    """The time an online snapshot must have been taken before to be judged on at least
    ``needed`` of ``window``'s examples labelled after it (None: the window holds fewer).

    The registry is then asked for the newest snapshot created before it, instead of
    every snapshot being counted against the window in turn.

    >>> from datetime import UTC
    >>> from types import SimpleNamespace as Example
    >>> window = [Example(event_time=datetime.fromtimestamp(t, UTC)) for t in (5, 1, 3, 3)]
    >>> taken_before(window, 2), taken_before(window, 3), taken_before(window, 5)
    (3.0, 3.0, None)
    """
    if needed < 1:
        raise ValueError(f"a snapshot is judged on at least one example, not {needed}")
    labelled_at = sorted((e.event_time.timestamp() for e in window), reverse=True)
    return labelled_at[needed - 1] if len(labelled_at) >= needed else None


def retrained_alerts(versions: Sequence[Version]) -> set[str]:
    """Ids of the alerts some version was already trained for (its trigger's burst).

    >>> trigger = Trigger(TriggerKind.ALERT, "a1", burst=("a1", "a2")).to_dict()
    >>> lineage = Lineage({}, "fs", {}, {}, "c", trigger, "t")
    >>> sorted(retrained_alerts([Version("m", 1, "sklearn", "x", 0.0, "t", {}, lineage)]))
    ['a1', 'a2']
    """
    return {i for v in versions for i in Trigger.from_dict(v.lineage.trigger).alert_ids}


@dataclass(frozen=True)
class Outcome:
    """``version``: the candidate registered; ``winner``: the version the decision is
    about (the candidate, or an online snapshot or earlier champion that beat it)."""

    version: int
    decision: Decision
    seconds: float
    winner: int | None = None


CANDIDATE = "candidate"


class Retrainer:
    """``project``: the deployment's project, whose ``retrain_estimator`` a retrain fits
    and whose online model's labels the window keeps; None: the built-in estimator and
    learner kind the settings name."""

    def __init__(
        self, settings: Settings, registry: Registry, *, project: Project | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.learner_kind, self.learner_task, self.learner_binary = learner_labels(
            settings, project
        )
        examples = spec_for(
            Topic.TRAINING_EXAMPLES, prefix=settings.topic_prefix, partitions=settings.partitions
        )
        self.examples_topic, self.examples_partitions = examples.name, examples.partitions
        self.policy = deployment_retraining(settings, project)
        self.gate = self.policy.gate
        self.paired_gate = PairedGate(confidence=self.policy.confidence)
        self._bootstrapped: set[int] = set()  # snapshots a cold-start retrain was tried for
        # champion version -> the newest example its last underperformance test used
        self._underperformance_tried: dict[int, datetime] = {}
        self.slice_gate = SliceGate(
            metric=self.gate.metric,
            higher_is_better=self.gate.higher_is_better,
            tolerance=settings.slice_tolerance,
            min_examples=settings.slice_min_examples,
        )

    def evaluate_slices(
        self, model: Any, flavor: str, examples: Sequence[TrainingExample]
    ) -> dict[str, dict[str, float]]:
        """Held-out metrics per slice big enough to judge, with its size as ``n``."""
        return evaluate_slices(
            model,
            flavor,
            examples,
            SliceNamer(self.settings.slices, self.settings.slice_max_values),
            self.settings.slice_min_examples,
        )

    def other_contenders(self, model: str, champion: Version | None) -> list[Version]:
        """Registered versions worth judging beside a new candidate: the online
        learner's latest snapshot and the previous champion (not the champion itself)."""
        found = {v.version: v for v in self.registry.versions(model, flavor=RIVER, newest=1)}
        previous = self.registry.previous_champion(model)
        if previous is not None:
            found.setdefault(previous, self.registry.get(model, previous))
        if champion is not None:
            found.pop(champion.version, None)
        return [found[v] for v in sorted(found)]

    def review_champion(self, model: str) -> list[Decision]:
        """Between retrains, judge the champion like with like on the recent labelled
        examples (classifiers; the window read again, every model scoring the features
        each example was served with):

        - roll back to the previous champion if it is significantly better on the
          examples since the champion was promoted (:meth:`guard_champion`);
        - otherwise promote the online learner's newest snapshot with enough examples
          labelled after it was taken, if it is significantly better than the champion
          on them and beats the trivial baseline there: the learner adapts first, and
          the cold start's first snapshot should not serve for ever;
        - while an online snapshot serves and no retrain has judged it since it was
          promoted (a cold start), retrain once the window can decide a promotion
          (trigger ``cold start``): a fresh fit no worse than the snapshot on the same
          held-out examples serves (:func:`refit_needs_no_proof`).
        """
        champion = self.registry.alias(model, CHAMPION)
        if champion is None:
            return []
        recent = min(self.policy.window, REVIEW_HOLDOUTS * self.policy.min_holdout)
        window = current_feature_set(training_set(self.recent_examples(recent)).examples)
        if not window or not is_classification([e.label for e in window]):
            return []
        guarded = self.guard_champion(model, champion, window)
        if guarded is not None and guarded.action == ROLLBACK:
            return [guarded]
        challenged = self.challenge_with_online(model, champion, window)
        decisions = [d for d in (guarded, challenged) if d is not None]
        if challenged is None or challenged.action != PROMOTE:
            retrained = self.retrain_underperforming(model, champion, window)
            if retrained is None:
                retrained = self.retrain_after_cold_start(model, champion, len(window))
            if retrained is None:
                retrained = self.refresh(model, champion, window)
            if retrained is not None:
                decisions.append(retrained)
        return decisions

    def refresh(
        self, model: str, champion: Version, window: Sequence[TrainingExample]
    ) -> Decision | None:
        """Retrain once the recent review window holds only examples that no retrained
        version learned from (trigger ``refresh``), learning after the newest change
        point a retrain learned after; the candidate replaces the champion when it is no
        worse on the same held-out examples (:func:`paired_no_regression`).

        Without it a champion fitted on the first few hundred examples of a stable world
        serves until the next drift, while the same estimator fitted on more recent data
        would serve better: what a fixed retraining schedule gives, paced here by the
        data rather than a clock (at most one refresh per review window of new labels).
        """
        if not self.policy.refresh or not window:
            return None
        retrained = self.registry.versions(model, flavor=SKLEARN)
        learned_until = [window_time(v, "to") for v in retrained]
        if not retrained or None in learned_until:
            return None
        if window[0].event_time <= max(t for t in learned_until if t is not None):
            return None
        return self.retrain_after_change_point(model, champion, TriggerKind.REFRESH)

    def retrain_after_change_point(
        self, model: str, champion: Version, kind: TriggerKind
    ) -> Decision | None:
        """A retrain about ``champion`` (trigger ``kind``) learning after the newest change
        point a retrain learned after; None when there was too little to train on."""
        trigger = Trigger(kind, f"{model}@{champion.version}")
        try:
            return self.retrain(model, trigger, since=self.newest_change_point(model)).decision
        except ValueError as exc:  # e.g. one class only in the window
            log.info(f"{kind} retrain skipped", extra={"model": model, "reason": str(exc)})
            return None

    def newest_change_point(self, model: str) -> datetime | None:
        """The newest change point a retrain learned after (None: none did)."""
        return max(
            (
                t
                for v in self.registry.versions(model, flavor=SKLEARN)
                if (t := window_time(v, AFTER_DRIFT_SEEN))
            ),
            default=None,
        )

    def retrain_underperforming(
        self, model: str, champion: Version, window: Sequence[TrainingExample]
    ) -> Decision | None:
        """Retrain now, whatever the refresh's pacing and setting, when the champion was
        right on significantly fewer of the examples labelled since its promotion than

        - their own majority class (trigger ``below majority``): the retrain's gates
          judge its fit against the champion as against a stop-gap
          (:func:`refit_needs_no_proof`), and if no fit beats the majority class and the
          champion is below it on the holdout too, the majority class serves
          (:func:`majority_class`);
        - or its own held-out examples when it was trained (trigger ``below promise``,
          :func:`significantly_below_promise`): the world it learned is moving on, and a
          fit no worse than it on the newest held-out examples replaces it.

        Each test is on a block of examples disjoint from every earlier test's: after a
        test, fired or not, the next for the same champion waits for
        ``EDDY_RETRAIN_MIN_HOLDOUT`` examples served after the newest it used. Re-testing
        overlapping windows at every review made a stationary stream fire in the end
        (about 14 % of runs within 100 reviews in a simulation); on disjoint blocks each
        test's false alarm rate is one minus ``EDDY_RETRAIN_CONFIDENCE`` and no example
        counts twice.

        Mid-change in a gradual drift (the recovery benchmark, seed 1) the old concept's
        champion served 0.41, then 0.22, for 12 s, while the majority class would have
        been right 0.6 to 0.7 of the time: the drift's retrain had found no fit better
        than the majority class on the mixed window, and the next refresh waited for a
        review window of new labels. In a later sweep a fit of the mixture, right 0.65
        of the time on its holdout, served 0.48 for 12 s while the change went on and
        the refresh waited; a fixed 10 s schedule served better there.
        """
        needed = self.policy.min_holdout
        examples = self.served_since_promotion(model, champion, window)
        tried_until = self._underperformance_tried.get(champion.version)
        if tried_until is not None:
            examples = [e for e in examples if e.event_time > tried_until]
        if len(examples) < needed:
            return None
        labels = [e.label for e in examples]
        right = correctness(self.registry.load(model, champion.version), champion.flavor, examples)
        self._underperformance_tried[champion.version] = examples[-1].event_time
        confidence = self.policy.confidence
        promise = holdout_promise(champion)
        if significantly_below_majority(right, labels, confidence):
            kind = TriggerKind.BELOW_MAJORITY
        elif promise is not None and significantly_below_promise(right, *promise, confidence):
            kind = TriggerKind.BELOW_PROMISE
        else:
            return None
        return self.retrain_after_change_point(model, champion, kind)

    def served_since_promotion(
        self, model: str, champion: Version, window: Sequence[TrainingExample]
    ) -> list[TrainingExample]:
        """The window's examples with an event time after the champion's latest
        promotion: the ones it served."""
        promoted_at = max(
            d.at
            for d in self.registry.history(model)
            if d.alias == CHAMPION and d.version == champion.version
        )
        return [e for e in window if e.event_time.timestamp() >= promoted_at]

    def retrain_after_cold_start(
        self, model: str, champion: Version, examples: int
    ) -> Decision | None:
        """One retrain while an online snapshot serves that no retrain has judged: none
        registered after the snapshot was (a snapshot that won a retrain was judged)."""
        if champion.flavor != RIVER or champion.version in self._bootstrapped:
            return None
        judged = any(
            v.created_at >= champion.created_at
            for v in self.registry.versions(model, flavor=SKLEARN)
        )
        needed = decidable_size(self.policy.min_holdout, self.policy.holdout)
        if judged or examples < needed:
            return None
        self._bootstrapped.add(champion.version)  # tried once per snapshot and process
        trigger = Trigger(TriggerKind.COLD_START, f"{model}@{champion.version}")
        try:
            return self.retrain(model, trigger).decision
        except ValueError as exc:  # e.g. one class only: a later alert or command retrains
            log.info("cold-start retrain skipped", extra={"model": model, "reason": str(exc)})
            return None

    def guard_champion(
        self, model: str, champion: Version, window: Sequence[TrainingExample]
    ) -> Decision | None:
        """Roll the champion back if the previous one is significantly better on the same
        labelled examples served since the champion was promoted, and better there than
        their own majority class."""
        previous = self.registry.previous_champion(model)
        if previous is None:
            return None
        examples = self.served_since_promotion(model, champion, window)
        if not examples:
            return None
        old = self.registry.get(model, previous)
        labels = [e.label for e in examples]
        trivial = trivial_scores(labels, labels)  # hindsight: refuses more, never less
        evaluator = LiveEvaluator(
            self.registry,
            model,
            guard=RollbackGuard(
                min_samples=self.policy.min_holdout,
                confidence=self.policy.confidence,
            ),
            actor=self.reviewer,
        )
        return evaluator.guard_champion(
            correctness(self.registry.load(model, champion.version), champion.flavor, examples),
            correctness(self.registry.load(model, previous), old.flavor, examples),
            trivial_accuracy=trivial["accuracy"],
        )

    def challenge_with_online(
        self, model: str, champion: Version, window: Sequence[TrainingExample]
    ) -> Decision | None:
        """Promote the newest online snapshot judged on examples labelled after it was
        taken, when it beats the trivial baseline and, significantly, the champion."""
        needed = self.policy.min_holdout
        before = taken_before(window, needed)
        if before is None:
            return None
        newest = self.registry.versions(model, flavor=RIVER, created_before=before, newest=1)
        if not newest:
            return None
        snapshot = newest[0]
        after = [e for e in window if e.event_time.timestamp() > snapshot.created_at]
        if snapshot.version == champion.version:
            return None
        until = refitted_until(champion)
        after = [e for e in after if until is None or e.event_time > until]
        if len(after) < needed:
            return None
        earlier = [e.label for e in window if e.event_time.timestamp() <= snapshot.created_at]
        trivial = trivial_scores(earlier or [e.label for e in after], [e.label for e in after])
        online = correctness(self.registry.load(model, snapshot.version), RIVER, after)
        if sum(online) / len(online) <= trivial["accuracy"]:
            return None
        served = self.registry.load(model, champion.version)
        decision = live_decision(
            correctness(served, champion.flavor, after),
            online,
            LiveGate(min_samples=needed, confidence=self.policy.confidence),
        )
        if decision.action != PROMOTE:
            return decision
        self.registry.record_decision(
            model,
            snapshot.version,
            self.reviewer,
            {
                "action": decision.action,
                "reason": decision.reason,
                "evidence": decision.evidence,
                "champion": champion.version,
                "trivial baseline": trivial,
            },
        )
        self.registry.promote(model, snapshot.version, self.reviewer, decision.reason)
        return decision

    @property
    def reviewer(self) -> str:
        return f"live evaluation ({self.settings.client_id})"

    @property
    def trainer(self) -> str:
        """Who registers, decides and audits a retrain."""
        return f"retrainer ({self.settings.client_id})"

    def recent_examples(self, count: int) -> list[TrainingExample]:
        """The last ``count`` examples across partitions (per partition: its share)."""
        consumer = make_consumer(self.settings, group_id=None)
        try:
            # The layout Eddy created the topic with: asking the consumer fetches the
            # metadata of every topic in the cluster (kafka-python 2.3.3), 0.5 s with
            # 3,000 topics on an idle broker, seconds on a busy one, at every retrain.
            partitions = [
                TopicPartition(self.examples_topic, p) for p in range(self.examples_partitions)
            ]
            consumer.assign(partitions)
            ends = log_offsets(consumer, partitions)
            starts = log_offsets(consumer, partitions, end=False)
            share = max(1, count // max(1, len(partitions)))
            for tp in partitions:
                consumer.seek(tp, max(starts[tp], ends[tp] - share))
            found: list[TrainingExample] = []
            # One line per window, not one per record: a window full of junk must not
            # cost a log line per record at every retrain and review.
            skipped: Counter[str] = Counter()
            while any(consumer.position(tp) < ends[tp] for tp in partitions):
                for records in consumer.poll(timeout_ms=POLL_MS).values():
                    for record in records:
                        if record.offset < ends[TopicPartition(record.topic, record.partition)]:
                            try:
                                example = decode(TrainingExample, record.value)
                            except InvalidMessage as exc:
                                skipped[exc.error_class] += 1
                                continue
                            # The learner dead-letters an example of a label its kind
                            # cannot learn; a fit on it would learn a wrong class.
                            refusal = label_refusal(
                                self.learner_kind,
                                example.label,
                                self.learner_task,
                                self.learner_binary,
                            )
                            if refusal is None:
                                found.append(example)
                            else:
                                skipped["label_not_learnable"] += 1
            if skipped:
                log.warning(
                    "skipped bad examples in the window",
                    extra={"skipped": sum(skipped.values()), "by_error": dict(skipped)},
                )
            return found
        finally:
            consumer.close()

    def above_majority(
        self,
        loaded: Mapping[str, tuple[Version | None, Any, str]],
        holdout: Sequence[TrainingExample],
    ) -> set[str]:
        """The contenders right significantly more often than the held-out examples'
        own majority class: none of them is worse than the trivial baseline."""
        labels = [e.label for e in holdout]
        return {
            name
            for name, (_, model, flavor) in loaded.items()
            if significantly_above_majority(
                correctness(model, flavor, holdout), labels, self.policy.confidence
            )
        }

    def retrain(
        self,
        model: str,
        trigger: Trigger,
        since: datetime | None = None,
        waiting: bool = False,
    ) -> Outcome:
        """Train, judge and register one candidate on the recent window.

        ``since``: after a concept drift, learn from the examples with a later event
        time (:func:`~eddy.services.training.bursts.choose_examples`; ``waiting``: rather wait than
        fall back to the whole window). Raises :class:`TooFewExamples` before anything
        is registered when there is too little to learn from, or to wait for.
        """
        started = time.monotonic()
        window = current_feature_set(
            training_set(self.recent_examples(self.policy.window)).examples
        )
        min_holdout, share = self.policy.min_holdout, self.policy.holdout
        chosen = choose_examples(window, since, waiting, min_holdout, share)
        if chosen is None:
            needed = decidable_size(min_holdout, share)
            raise TooFewExamples(f"fewer than {needed} examples after the drift ({since}) yet")
        data = TrainingSet(chosen.examples)  # a subset of a training set: unique, ordered
        require_examples(len(data.examples), min_holdout)
        champion = self.registry.alias(model, CHAMPION)
        train, holdout = unseen_holdout(data, share, champion, min_holdout)
        labels = [e.label for e in train]
        classification = is_classification(labels)
        with self.estimator_failures(model, trigger, "fitting and scoring the candidate"):
            estimator = self.policy.new_estimator(classification)
            estimator.fit(fit_vectors([e.features for e in train]), labels)
            candidate_metrics = evaluate(estimator, SKLEARN, holdout)
            candidate_slices = self.evaluate_slices(estimator, SKLEARN, holdout)
        champion_metrics, champion_slices = None, {}
        loaded: dict[str, tuple[Version | None, Any, str]] = {CANDIDATE: (None, estimator, SKLEARN)}
        below_trivial = False
        if champion is not None:
            served = self.registry.load(model, champion.version)
            champion_metrics = evaluate(served, champion.flavor, holdout)
            champion_slices = self.evaluate_slices(served, champion.flavor, holdout)
            if classification:
                champion_correct = correctness(served, champion.flavor, holdout)
                below_trivial = significantly_below_majority(
                    champion_correct, [e.label for e in holdout], self.policy.confidence
                )
        for other in self.other_contenders(model, champion):
            loaded[other.name] = (other, self.registry.load(model, other.version), other.flavor)
        scores = {CANDIDATE: candidate_metrics} | {
            name: evaluate(m, flavor, holdout)
            for name, (_, m, flavor) in loaded.items()
            if name != CANDIDATE
        }
        trivial = trivial_scores(labels, [e.label for e in holdout])
        cleared = self.above_majority(loaded, holdout) if classification else set()
        winner = best_contender(scores, trivial, self.gate, cleared)
        trainer = self.trainer
        lineage = Lineage(
            trained_on=offset_ranges(e.source for e in data.examples),
            feature_set=",".join(sorted({e.feature_set for e in data.examples})),
            params=self.policy.lineage_params(estimator),
            libraries=library_versions(),
            code_version=code_version(),
            trigger=trigger.to_dict(),
            trainer=trainer,
            window={
                "examples": len(data.examples),
                "train": len(train),
                HOLDOUT_KEY: len(holdout),
                "from": data.examples[0].event_time.isoformat(),
                "to": data.examples[-1].event_time.isoformat(),
                **({AFTER_DRIFT_SEEN: since.isoformat()} if since and chosen.after_drift else {}),
            },
        )
        if winner is None and below_trivial and champion_metrics is not None:
            estimator = majority_class(data.examples)
            candidate_metrics, candidate_slices = trivial, {}
            lineage = replace(lineage, params={"estimator": MAJORITY_CLASS})
            lineage.window[REFITTED_ON] = len(data.examples)
            decision = stand_in_decision(self.gate.metric, trivial, champion_metrics, len(holdout))
        elif winner is None:
            decision = no_contender_decision(self.gate.metric, trivial, len(holdout))
        else:
            entry, winner_model, winner_flavor = loaded[winner]
            winner_slices = (
                candidate_slices
                if entry is None
                else self.evaluate_slices(winner_model, winner_flavor, holdout)
            )
            decision = gate_by_slices(
                offline_decision(scores[winner], champion_metrics, len(holdout), self.gate),
                slice_regressions(winner_slices, champion_slices, self.slice_gate),
            )
            if champion is not None and classification:
                winner_correct = correctness(winner_model, winner_flavor, holdout)
                decision = (
                    paired_no_regression(decision, winner_correct, champion_correct)
                    if winner == CANDIDATE
                    and refit_needs_no_proof(
                        trigger, champion.flavor, stop_gap=below_trivial or is_majority(champion)
                    )
                    else paired_promotion(
                        decision, winner_correct, champion_correct, self.paired_gate
                    )
                )
        calibration = holdout_calibration(estimator, holdout) if classification else None
        if calibration is not None:
            lineage.window[CALIBRATION_KEY] = calibration
        if decision.action == PROMOTE and winner == CANDIDATE:
            with self.estimator_failures(model, trigger, "refitting the winner on its window"):
                estimator = refit_on_all(estimator, data.examples)
            lineage.window[REFITTED_ON] = len(data.examples)
        version = self.registry.register(
            model, SKLEARN, estimator, candidate_metrics | flatten(candidate_slices), lineage
        )
        registered = None if winner is None else loaded[winner][0]
        winner_version = version.version if registered is None else registered.version
        self.registry.record_decision(
            model,
            version.version,
            trainer,
            {
                "action": decision.action,
                "reason": decision.reason,
                "evidence": decision.evidence,
                "champion": champion.version if champion else None,
                "winner": winner_version,
                "contenders": scores | {"trivial baseline": trivial},
                "trigger": trigger.to_dict(),
                "slices": {"candidate": candidate_slices, "champion": champion_slices},
            },
        )
        if decision.action is DecisionAction.PROMOTE:
            self.registry.promote(model, winner_version, trainer, decision.reason)
        elif decision.action is DecisionAction.CHALLENGER:
            self.registry.set_alias(model, CHALLENGER, winner_version, trainer, decision.reason)
        outcome = Outcome(version.version, decision, time.monotonic() - started, winner_version)
        metrics.RETRAINS.labels(decision.action).inc()
        metrics.RETRAIN_SECONDS.observe(outcome.seconds)
        log.info(
            "retrained",
            extra={
                "model_version": version.name,
                "action": decision.action,
                "reason": decision.reason,
                "seconds": round(outcome.seconds, 3),
                "trigger": trigger.to_dict(),
            },
        )
        return outcome

    @contextlib.contextmanager
    def estimator_failures(self, model: str, trigger: Trigger, stage: str) -> Iterator[None]:
        """Turn anything the retrain's estimator raises during ``stage`` into an audited
        :class:`EstimatorFailed`: a project's estimator may fail in any way (a pipeline
        without ``predict_proba`` raises AttributeError, a bare estimator on dict rows
        TypeError), and only a ValueError used to be caught, so the alert loop died and
        crash-looped on the same alert."""
        try:
            yield
        except Exception as exc:
            reason = (
                f"the retrain estimator {self.policy.estimator!r} raised "
                f"{type(exc).__name__} while {stage}: {exc}"
            )
            self.registry.record(
                model,
                None,
                self.trainer,
                AuditAction.RETRAIN_FAILED,
                {"trigger": trigger.to_dict(), "reason": reason},
            )
            log.warning(
                "retrain failed",
                extra={"model": model, "trigger": trigger.to_dict(), "reason": reason},
            )
            raise EstimatorFailed(reason) from exc


class AlertListener:
    """``eddy run retrainer``: one retrain per burst of drift alerts for a model, and one
    per command on the ``control`` topic (:mod:`eddy.services.training.control`).

    A command is carried out once: a duplicate is recognised by its ``command_id``, in
    memory and, after a restart, from the registry's audit log, where its retrain (or its
    refusal) left the id. A command that cannot be carried out (unknown model, too few
    examples) is audited as refused with the reason; a malformed alert or command goes to
    the dead-letter topic. Offsets are committed only after the effects are durable.
    """

    def __init__(self, settings: Settings, retrainer: Retrainer) -> None:
        self.settings = settings
        self.retrainer = retrainer
        self.topic = topic_name(Topic.DRIFT_ALERTS, settings.topic_prefix)
        self.control_topic = control_topic(settings)
        self.control_key = settings.deployment_key()
        self.consumer = make_consumer(
            settings,
            self.topic,
            self.control_topic,
            group_id=group_id(settings.topic_prefix, "retrainer", settings.model_name),
        )
        self.producer = make_producer(settings)
        self.dead_letters = DeadLetterSink(
            self.producer,
            topic_name(Topic.DEAD_LETTER, settings.topic_prefix),
            topic_prefix=settings.topic_prefix,
            counted=metrics.count_dead_letters,
        )
        self.recent = RecentIds(RECENT_IDS)
        # Not the process's main thread in tests: `eddy run retrainer` sets the signals.
        self.loop = PollLoop(
            settings,
            self.consumer,
            {self.topic: self._decode_alert, self.control_topic: self._decode_command},
            self.dead_letters,
            Liveness(settings, "retrainer"),
            poll_ms=POLL_MS,
            handle_signals=False,
        )
        self._bursts: dict[str, Burst] = {}
        self._last_scheduled = self._last_live = time.monotonic()

    def stop(self, *_: Any) -> None:
        self.loop.stop()

    def run(self) -> None:
        self._last_scheduled = self._last_live = time.monotonic()
        try:
            self.loop.run(self._handle, self._after_batch)
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close()

    def _handle(self, batch: list[Consumed]) -> None:
        for consumed in batch:
            if isinstance(consumed.message, ControlCommand):
                self._command(consumed.record, consumed.message)
            elif isinstance(consumed.message, DriftAlert):
                self._collect(consumed.message, self._bursts)

    def _after_batch(self) -> None:
        # Before any long work: a review or a retrain may outlast the max poll interval,
        # and a commit after it is refused; the batch just handled must not be read and
        # handled again at every turn.
        if not self._bursts:
            self._commit()
        now = time.monotonic()
        live_every = self.settings.live_evaluation_every_s
        if live_every > 0 and now - self._last_live >= live_every:
            with self.loop.liveness.busy("live evaluation"):
                self._review(self.settings.model_name)
            # The next review a full period after this one ended: one longer than the
            # period must still leave the loop time to poll.
            self._last_live = now = time.monotonic()
        every = self.retrainer.policy.every_s
        if every > 0 and now - self._last_scheduled >= every:
            self._last_scheduled = now
            self._retrain_safely(
                self.settings.model_name, Trigger(TriggerKind.SCHEDULE, f"every {every}s")
            )
        for model, burst in list(self._bursts.items()):
            if now >= burst.due:
                del self._bursts[model]
                retry = self._retrain(model, burst, now)
                if retry is not None:
                    self._bursts[model] = retry

    def _review(self, model: str) -> None:
        """The live comparison and the champion review; a failure (an unreadable artifact,
        Kafka away) is logged and the next tick tries again: retraining goes on."""
        try:
            evaluate_live(self.settings, self.retrainer.registry, model)
            for decision in self.retrainer.review_champion(model):
                log.info(
                    "champion reviewed",
                    extra={"model": model, "action": decision.action, "reason": decision.reason},
                )
        except Exception:
            log.exception("champion review failed", extra={"model": model})

    def _commit(self) -> None:
        # Refused when a retrain outlasted the max poll interval or a rebalance is under
        # way: the records are read again and recognised as done (see _retrain).
        commit_unless_refused(self.consumer)

    def _decode_alert(self, record: Any) -> DriftAlert:
        """The alert; refused when it asks a model that does not exist to retrain (a
        typo or a forgery must not create a model)."""
        alert = decode(DriftAlert, record.value)
        if alert.action == RETRAIN:
            self._check_model(alert.model)
        return alert

    def _decode_command(self, record: Any) -> ControlCommand:
        """The command, if it is signed with the deployment's key (a command for an
        unknown model is refused when handled: its refusal is audited too)."""
        refusal = signature_refusal(self.control_key, record.value, record.headers or [])
        if refusal is not None:
            raise InvalidMessage(*refusal)
        return decode(ControlCommand, record.value)

    def _check_model(self, model: str) -> None:
        unknown = self._unknown(model)
        if unknown is not None:
            raise InvalidMessage("unknown_model", unknown)

    def _unknown(self, model: str) -> str | None:
        return unknown_model(model, self.settings.model_name, self.retrainer.registry.models())

    def _collect(self, alert: DriftAlert, bursts: dict[str, Burst]) -> None:
        if alert.action != RETRAIN:  # a warning only
            return
        bursts[alert.model] = fold(
            bursts.get(alert.model), alert, time.monotonic(), self.retrainer.policy.debounce_s
        )

    def _command(self, record: Any, command: ControlCommand) -> None:
        """Carry out one control command once, or audit why not; never raises on input."""
        registry = self.retrainer.registry
        context = {"command_id": command.command_id, "model": command.model}
        if not self.recent.add(command.command_id) or carried_out(
            registry.audit_log(command.model), command.command_id
        ):
            log.info("control command already carried out", extra=context)
            return
        reason = self._unknown(command.model)
        if reason is not None:  # a typo or a forgery must not create a model
            self.loop.refuse([(record, InvalidMessage("unknown_model", reason))])
        else:
            try:
                with self.loop.liveness.busy("retrain"):
                    self.retrainer.retrain(command.model, control_trigger(command))
                return
            except ValueError as exc:  # too few examples, one class only: nothing trained
                reason = str(exc)
        audit_refusal(registry, self.retrainer.trainer, command, reason)
        log.warning("control command refused", extra={**context, "reason": reason})

    def _retrain(self, model: str, burst: Burst, now: float) -> Burst | None:
        """Retrain for ``burst``; the burst to try again later while it waits for data."""
        # An alert read again after a crash between registering and committing (or
        # after a retrain outlasted the max poll interval) was retrained already.
        done = retrained_alerts(self.retrainer.registry.versions(model, flavor=SKLEARN))
        fresh = [alert_id for alert_id in burst.alert_ids if alert_id not in done]
        if not fresh:
            log.info("alerts already retrained", extra={"model": model, "alerts": burst.alert_ids})
            return None
        trigger = Trigger(TriggerKind.ALERT, fresh[0], burst=tuple(fresh))
        waiting = burst.waiting(now, self.retrainer.policy.drift_wait_s)
        try:
            with self.loop.liveness.busy("retrain"):
                self.retrainer.retrain(model, trigger, since=burst.since, waiting=waiting)
        except TooFewExamples as exc:
            if waiting:
                log.info(
                    "retrain waits for examples after the drift",
                    extra={"model": model, "alerts": fresh, "reason": str(exc)},
                )
                return burst.retry(now, self.retrainer.policy.debounce_s)
            log.warning("retrain skipped", extra={"model": model, "reason": str(exc)})
        except ValueError as exc:  # e.g. one class only: the next trigger will try again
            log.warning("retrain skipped", extra={"model": model, "reason": str(exc)})
        return None

    def _retrain_safely(self, model: str, trigger: Trigger) -> None:
        try:
            with self.loop.liveness.busy("retrain"):
                self.retrainer.retrain(model, trigger)
        except ValueError as exc:  # not enough data yet: the next trigger will try again
            log.warning("retrain skipped", extra={"model": model, "reason": str(exc)})
