"""The prediction service: requests in, answers out, models swapped live.

``eddy run predictor`` is a kafka-python consumer group on ``prediction-requests``
(several processes share the partitions). Per polled batch:

1. decode every request; an invalid one (with a project: also one whose features do
   not fit its declared raw fields) gets an error answer (``invalid_request``) and a
   dead letter, never silence;
2. read the entities' online features in one Redis round trip and merge each request's
   own features over them, through the same feature code as training;
3. score the whole batch with the champion of the moment (one :class:`ServingModels`
   value per batch, so every answer names the version that produced it), and shadow-score
   the challengers on the same vectors;
4. record, per request id, the features the models saw (for late labels), the request
   log entry (input, output, version, error, latency; ``eddy trace``) and the shadow
   answers (for live champion/challenger comparison), both kept as
   :mod:`eddy.services.serving.request_log` says: all of it in one Redis round trip;
5. send the answers (to the request's ``reply_topic`` or ``predictions``), wait for the
   acknowledgements, then commit the batch's offsets (sent without waiting for the
   broker's reply, :mod:`eddy.services.serving.commits`).

What each record is answered, and what steps 4 and 5 write, is decided without I/O by
:func:`eddy.services.serving.answers.answer_batch`; this module reads, writes and sends
around it.

A crash before the commit hands the batch to the partition's next owner, which finds
each request's answer in the request log (written before any answer is sent) and
re-sends it as it was instead of computing it again with later features
(:mod:`eddy.services.serving.redelivery`): a client sees at most a duplicate of the same answer.

With ``EDDY_PREDICTION_CACHE`` on (:mod:`eddy.services.serving.cache`), step 3 first looks
the champion's answers up in Redis: an entry computed by this champion from the same
entity revision and the same vector is served (``cached: true``, with the version that
made it) instead of scoring; steps 4 and 5 are the same for every answer. A
:class:`~eddy.services.serving.cache.Precomputer` thread keeps entries ready as features
change.

:class:`ModelWatcher` follows ``model-updates`` in a thread: it loads and verifies new
versions off the request path and then replaces the serving set in one assignment. A
version that fails verification is refused and the current champion keeps serving.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.collector import settle_collector
from eddy.services.ops.liveness import Liveness
from eddy.services.ops.poll_loop import Consumed, PollLoop
from eddy.services.registry.store import CHALLENGER, CHAMPION, Registry
from eddy.services.serving.answers import (
    AnsweredBatch,
    CacheCheck,
    Polled,
    Refused,
    Seen,
    ServedBuffer,
    answer_batch,
    fresh_requests,
    suspected_redeliveries,
)
from eddy.services.serving.cache import AnswerCache, Ask, Policy, Precomputer
from eddy.services.serving.commits import OverlappedCommits
from eddy.services.serving.redelivery import RedeliveryWindow, WindowOnAssignment
from eddy.services.serving.request_log import RequestLog, ShadowLog
from eddy.services.serving.scoring import Loaded, ServingModels
from eddy.streams.dead_letters.policy import wait_out_redis
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.features.compute import FeatureSet, FeatureValue, feature_vector
from eddy.streams.messages.contracts import PredictionRequest
from eddy.streams.messages.raw_schema import RawSchema
from eddy.streams.messages.validation import InvalidMessage, decode, encode
from eddy.streams.store.online import OnlineStore, StoredState
from eddy.streams.store.serialization import IntegrityError
from eddy.streams.store.snapshots import SnapshotStore
from eddy.streams.transport.clients import (
    make_consumer,
    make_producer,
    make_redis,
    subscribe,
)
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import KnownTopics, Topic, reply_topic_refusal, topic_name

log = logging.getLogger(__name__)

POLL_MS = 100
PRODUCER_LINGER_MS = 1
# How often, at most, the broker is asked again whether an unknown reply topic exists.
REPLY_TOPICS_REFRESH_S = 5.0
SEND_TIMEOUT_S = 30.0


class ModelWatcher(threading.Thread):
    """Keeps :attr:`serving` in step with the registry, announced via ``model-updates``."""

    def __init__(self, settings: Settings, registry: Registry, model: str) -> None:
        super().__init__(name="model-watcher", daemon=True)
        self.settings = settings
        self.registry = registry
        self.model = model
        self.serving = ServingModels()
        self._cache: dict[int, Loaded] = {}
        self._stopping = threading.Event()
        self.refresh()

    def refresh(self) -> None:
        """Load what the registry's aliases name (verified), then swap in one assignment."""
        aliases = self.registry.aliases(self.model)
        try:
            champion = self._load(aliases[CHAMPION]) if CHAMPION in aliases else None
            challenger = self._load(aliases[CHALLENGER]) if CHALLENGER in aliases else None
        except IntegrityError as exc:
            log.error(
                "refused a model version; the current champion keeps serving",
                extra={
                    "model_version": self.serving.champion.name if self.serving.champion else None,
                    "error": str(exc),
                },
            )
            return
        self.serving = ServingModels(champion, (challenger,) if challenger else ())
        for alias, loaded in ((CHAMPION, champion), (CHALLENGER, challenger)):
            metrics.SERVING_VERSION.labels(self.model, alias).set(loaded.version if loaded else 0)
        log.info(
            "serving",
            extra={
                "model_version": champion.name if champion else None,
                "challengers": [challenger.name] if challenger else [],
            },
        )

    def _load(self, version: int) -> Loaded:
        if version not in self._cache:
            record = self.registry.get(self.model, version)
            estimator = self.registry.load(self.model, version)
            self._cache[version] = Loaded(
                self.model, version, record.flavor, estimator, record.artifact
            )
        return self._cache[version]

    def run(self) -> None:
        topic = topic_name(Topic.MODEL_UPDATES, self.settings.topic_prefix)
        consumer = make_consumer(self.settings, group_id=None)
        try:
            where = TopicPartition(topic, 0)
            consumer.assign([where])
            consumer.seek_to_end(where)
            while not self._stopping.is_set():
                polled = consumer.poll(timeout_ms=POLL_MS * 5)
                if any(r.key == self.model.encode() for rs in polled.values() for r in rs):
                    self.refresh()
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stopping.set()


@dataclass(frozen=True)
class Outcome:
    answered: int
    errors: int
    cached: int = 0


class Predictor:
    """Answers ``model``'s requests with the deployment's ``features`` (the ones its
    models were trained on); a request whose own features do not fit the project's
    declared raw fields (``schema``; None: any) gets an error answer."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        model: str,
        *,
        features: FeatureSet,
        schema: RawSchema | None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.features = features
        self.feature_set = features.fingerprint()
        self.schema = schema
        prefix = settings.topic_prefix
        self.requests_topic = topic_name(Topic.PREDICTION_REQUESTS, prefix)
        self.served_topic = topic_name(Topic.SERVED_ANSWERS, prefix)
        self.served = ServedBuffer(model)
        self.answers_topic = topic_name(Topic.PREDICTIONS, prefix)
        self.redis = make_redis(settings)
        self.store = OnlineStore(
            self.redis, prefix, settings.feature_ttl_s, states=features.state_fingerprint()
        )
        self.snapshots = SnapshotStore(self.redis, prefix, settings.label_window_s)
        self.request_log = RequestLog.from_settings(self.redis, settings)
        self.shadow_log = ShadowLog.from_settings(self.redis, settings)
        self.producer = make_producer(settings, linger_ms=PRODUCER_LINGER_MS)
        self.dead_letters = DeadLetterSink(
            self.producer,
            topic_name(Topic.DEAD_LETTER, prefix),
            topic_prefix=prefix,
            counted=metrics.count_dead_letters,
        )
        self.watcher = ModelWatcher(settings, registry, model)
        self.cache = (
            AnswerCache.from_settings(self.redis, settings, model, features)
            if Policy(settings.prediction_cache) is not Policy.OFF
            else None
        )
        self.precomputer = (
            Precomputer(settings, self.cache, self.store, features, lambda: self.watcher.serving)
            if self.cache is not None
            else None
        )
        self.consumer = make_consumer(
            settings,
            group_id=group_id(prefix, "predictor", model),
            max_poll_records=settings.predictor_batch_size,
            fetch_max_wait_ms=settings.predictor_fetch_wait_ms,
        )
        self.known_topics = KnownTopics(self.consumer.topics, REPLY_TOPICS_REFRESH_S)
        self.commits = OverlappedCommits(self.consumer, settings.predictor_batch_size)
        self.redelivery = RedeliveryWindow(self.commits.most_uncommitted)
        subscribe(self.consumer, [self.requests_topic], WindowOnAssignment(self.redelivery))
        self.loop = PollLoop(
            settings,
            self.consumer,
            {self.requests_topic: self._decode},
            self.dead_letters,
            Liveness(settings, "predictor"),
            poll_ms=POLL_MS,
        )

    def run(self) -> None:
        settle_collector()
        self.watcher.start()
        if self.precomputer is not None:
            self.precomputer.start()
        try:
            self.loop.run(self._answer_and_commit, self._after_turn)
            self.commits.settle()  # a clean stop: the last batch's commit confirmed
        finally:
            self.watcher.stop()
            if self.precomputer is not None:
                self.precomputer.stop()
            self.consumer.close(autocommit=False)
            self._flush_served()
            self.producer.close()

    def _answer_and_commit(self, batch: list[Consumed]) -> None:
        # A Redis outage (a Cluster master failing over) is waited out, for a while:
        # nothing of the batch was sent before its writes succeeded. An attempt after a
        # failed one looks every record up in the request log first, so what a failed
        # attempt logged is re-sent as logged, not answered (and counted) again.
        attempts = itertools.count()
        wait_out_redis(
            lambda: self.answer(batch, suspect_all=next(attempts) > 0),
            "answer a batch",
            patience_s=self.settings.redis_outage_patience_s,
            stopping=lambda: self.loop.stopping,
        )
        self.loop.settle()  # the batch's dead letters, sent with its answers
        self.commits.after_batch(len(batch))  # refused: redelivered, re-sent

    def stop(self, *_: Any) -> None:
        self.loop.stop()

    def handle(self, records: list[Any]) -> Outcome:
        """Decode and answer polled records as the runtime would; returns once every
        answer and dead letter is acknowledged."""
        outcome = self.answer(self.loop.intake(records))
        self.loop.settle()
        return outcome

    def answer(self, consumed: list[Consumed], *, suspect_all: bool = False) -> Outcome:
        """Answer one decoded batch; returns once every answer is acknowledged.

        The I/O around :func:`~eddy.services.serving.answers.answer_batch`, which
        decides every reply: look the suspected redeliveries up in the request log,
        read the features and the answer cache; then write what the batch says to
        write, the request log last, send, and wait for the acknowledgements. A refused
        request (its dead letter is on its way) is answered with its error."""
        serving = self.watcher.serving  # one champion for the whole batch
        now = time.time()
        writes = self.redis.pipeline(transaction=False)
        futures = []
        suspects = (
            [True] * len(consumed)  # a second attempt: the first may have logged any
            if suspect_all
            else self.redelivery.suspects((c.record.topic, c.record.partition) for c in consumed)
        )
        polled = [
            Polled(
                c.record,
                c.message
                if c.refused is None
                else Refused(c.refused.error_class, c.refused.reason, at=now),
            )
            for c in consumed
        ]
        logged = self.request_log.logged_answers(suspected_redeliveries(polled, suspects))
        fresh = fresh_requests(polled, logged)
        stored = self.store.load(request.entity_id for _, request in fresh)
        vectors = [
            feature_vector(stored[r.entity_id].state, self.features, now, raw=r.features)
            for _, r in fresh
        ]
        checks = self._check_cache(serving.champion, fresh, stored, vectors, now)
        batch = answer_batch(
            polled,
            logged=logged,
            seen=[
                Seen(stored[request.entity_id].state, vector, check)
                for (_, request), vector, check in zip(fresh, vectors, checks, strict=True)
            ],
            serving=serving,
            model=self.model,
            answers_topic=self.answers_topic,
            now=now,
            clock=time.time,
            feature_set=self.feature_set,
        )
        for request_id, reason in batch.unscorable:
            log.warning(
                "the champion could not score a request",
                extra={"request_id": request_id, "reason": reason},
            )
        # Every write of the batch in one round trip, executed with the request log's.
        if self.cache is not None and serving.champion is not None:
            self.cache.save(batch.to_cache, serving.champion, now, writes)
        self.shadow_log.append(batch.shadow, writes)
        # What each request saw, answered or not: a late label for it can still teach
        # the learner (that is how a cold start gets its first model).
        self.snapshots.queue(writes, batch.snapshots)
        # The log before any answer is sent: an answer that went out is always in it, to
        # be re-sent as it was. Where another owner of the partition logged this very
        # record first, its answer is the one that counts: send that one, so both copies
        # are identical.
        batch = batch.taken_over(self.request_log.create(batch.to_log, writes))
        for reply in batch.replies:
            futures.append(self.producer.send(reply.topic, key=reply.key, value=reply.wire))
        self.producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)
        self._gather_served(consumed[0].record, batch)
        for outcome, count in batch.outcomes.items():
            metrics.REQUESTS.labels(outcome).inc(count)
        for seconds in batch.latencies_s:
            metrics.REQUEST_LATENCY.observe(seconds)
        return Outcome(
            len(batch.replies),
            sum(1 for reply in batch.replies if reply.answer.error is not None),
            sum(1 for reply in batch.replies if reply.answer.cached),
        )

    def _gather_served(self, first: Any, batch: AnsweredBatch) -> None:
        """Gather the batch's fresh answers for the learner's live estimate
        (:class:`~eddy.services.serving.answers.ServedBuffer`); :meth:`_after_turn` sends
        them once due, not waited for: a crash loses at most a second of them from the
        estimate, never an answer; a refused send is logged."""
        self.served.add(batch, f"{first.topic}[{first.partition}]@{first.offset}", time.time())

    def _after_turn(self) -> None:
        """Every turn of the poll loop, records or none: commits, and the served
        answers once due (so a quiet predictor still sends its last ones)."""
        self.commits.after_turn()
        if self.served.due(time.time()):
            self._flush_served()

    def _flush_served(self) -> None:
        for served in self.served.take(datetime.now(UTC)):
            future = self.producer.send(
                self.served_topic, key=served.model.encode(), value=encode(served)
            )
            future.add_errback(_served_not_sent, served.model_version)

    def _decode(self, record: Any) -> PredictionRequest:
        """The record's request; refused (an error answer and a dead letter) when it is
        malformed, its features do not fit the declared raw fields, or it names a reply
        topic answers may not go to."""
        return self._checked(decode(PredictionRequest, record.value))

    def _check_cache(
        self,
        champion: Loaded | None,
        fresh: list[tuple[Any, PredictionRequest]],
        stored: dict[str, StoredState],
        vectors: list[dict[str, FeatureValue]],
        now: float,
    ) -> list[CacheCheck | None]:
        """What the answer cache holds for each request to answer afresh, in one round
        trip; nothing (None each) when the cache is off or no champion serves."""
        if self.cache is None or champion is None or not fresh:
            return [None] * len(fresh)
        asks = [
            Ask(request.entity_id, stored[request.entity_id].rev, self.cache.timing.digest(v, now))
            for (_, request), v in zip(fresh, vectors, strict=True)
        ]
        lookup = self.cache.lookup(champion, asks)
        misses = sum(1 for hit in lookup.hits if hit is None)
        metrics.PREDICTION_CACHE.labels("hit").inc(len(asks) - misses)
        metrics.PREDICTION_CACHE.labels("miss").inc(misses)
        return [
            CacheCheck(ask, hit, keep)
            for ask, hit, keep in zip(asks, lookup.hits, lookup.keep, strict=True)
        ]

    def _checked(self, request: PredictionRequest) -> PredictionRequest:
        """``request``, unless its own features do not fit the declared raw fields (a
        request may leave fields out: the entity's online features fill them) or it
        names a reply topic answers may not go to."""
        unfit = None if self.schema is None else self.schema.refusal(request.features, partial=True)
        if unfit is not None:
            raise unfit
        if request.reply_topic is not None:
            refusal = reply_topic_refusal(
                request.reply_topic,
                prefix=self.settings.topic_prefix,
                pattern=self.settings.reply_topic_pattern,
            )
            if refusal is not None:
                raise InvalidMessage("forbidden_reply_topic", refusal)
            if not self.known_topics.exists(request.reply_topic):
                raise InvalidMessage(
                    "unknown_reply_topic",
                    f"reply topic {request.reply_topic!r} does not exist: create it first "
                    "(topics are never created on first use)",
                )
        return request


def _served_not_sent(error: Exception, version: str) -> None:
    log.warning(
        "served answers not sent: the live estimate misses them",
        extra={"model_version": version, "error": repr(error)},
    )
