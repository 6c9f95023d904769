"""The prediction service: requests in, answers out, models swapped live.

``eddy run predictor`` is a kafka-python consumer group on ``prediction-requests``
(several processes share the partitions). Per polled batch:

1. decode every request; an invalid one gets an error answer (``invalid_request``) and
   a dead letter, never silence;
2. read the entities' online features in one Redis round trip and merge each request's
   own features over them, through the same feature code as training;
3. score the whole batch with the champion of the moment (one :class:`ServingModels`
   value per batch, so every answer names the version that produced it), and shadow-score
   the challengers on the same vectors;
4. record, per request id, the features the models saw (for late labels), the request
   log entry (input, output, version, error, latency; ``eddy trace``) and the shadow
   answers (for live champion/challenger comparison), both kept as
   :mod:`eddy.services.serving.request_log` says;
5. send the answers (to the request's ``reply_topic`` or ``predictions``), wait for the
   acknowledgements, then commit the batch's offsets.

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

import json
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from pydantic import TypeAdapter, ValidationError

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.liveness import Liveness, consumer_positions
from eddy.services.registry.store import CHALLENGER, CHAMPION, Registry
from eddy.services.serving.cache import AnswerCache, Ask, Entry, Policy, Precomputer
from eddy.services.serving.redelivery import RedeliveryWindow, WindowOnAssignment, logged_source
from eddy.services.serving.request_log import AnswerToLog, RequestLog, ShadowAnswer, ShadowLog
from eddy.services.serving.scoring import (
    MAX_REASON_CHARS,
    Loaded,
    Scored,
    ServingModels,
    Unscorable,
    score_each,
)
from eddy.streams.dead_letters.letter import RawRecord, dead_letter
from eddy.streams.features.compute import feature_vector, freshness
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.contracts import (
    Identifier,
    Prediction,
    PredictionError,
    PredictionRequest,
)
from eddy.streams.messages.validation import REFUSED_UNPARSED, InvalidMessage, decode, encode
from eddy.streams.store.online import OnlineStore
from eddy.streams.store.serialization import IntegrityError
from eddy.streams.store.snapshots import ServedAnswer, Snapshot, SnapshotStore
from eddy.streams.transport.clients import (
    TopicWatch,
    commit_unless_refused,
    make_consumer,
    make_producer,
    make_redis,
    subscribe,
)
from eddy.streams.transport.groups import group_id
from eddy.streams.transport.topics import KnownTopics, Topic, reply_topic_refusal, spec_for

log = logging.getLogger(__name__)

POLL_MS = 100
PRODUCER_LINGER_MS = 1
# How often, at most, the broker is asked again whether an unknown reply topic exists.
REPLY_TOPICS_REFRESH_S = 5.0
SEND_TIMEOUT_S = 30.0
NO_CHAMPION = "no_champion"
INVALID_REQUEST = "invalid_request"
UNSCORABLE = "unscorable"
RESENT = "resent"  # a repeated answer to a redelivered request (counted once before)


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
        topic = spec_for(Topic.MODEL_UPDATES, prefix=self.settings.topic_prefix, partitions=1).name
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
    def __init__(self, settings: Settings, registry: Registry, model: str) -> None:
        self.settings = settings
        self.model = model
        prefix, partitions = settings.topic_prefix, settings.partitions
        self.requests_topic = spec_for(
            Topic.PREDICTION_REQUESTS, prefix=prefix, partitions=partitions
        ).name
        self.answers_topic = spec_for(Topic.PREDICTIONS, prefix=prefix, partitions=partitions).name
        self.dead_letter_topic = spec_for(
            Topic.DEAD_LETTER, prefix=prefix, partitions=partitions
        ).name
        self.redis = make_redis(settings)
        self.store = OnlineStore(self.redis, prefix, settings.feature_ttl_s)
        self.snapshots = SnapshotStore(self.redis, prefix, settings.label_window_s)
        self.request_log = RequestLog.from_settings(self.redis, settings)
        self.shadow_log = ShadowLog.from_settings(self.redis, settings)
        self.producer = make_producer(settings, linger_ms=PRODUCER_LINGER_MS)
        self.watcher = ModelWatcher(settings, registry, model)
        self.cache = (
            AnswerCache.from_settings(self.redis, settings, model, FEATURES)
            if Policy(settings.prediction_cache) is not Policy.OFF
            else None
        )
        self.precomputer = (
            Precomputer(settings, self.cache, self.store, FEATURES, lambda: self.watcher.serving)
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
        self.redelivery = RedeliveryWindow(settings.predictor_batch_size)
        subscribe(self.consumer, [self.requests_topic], WindowOnAssignment(self.redelivery))
        self._stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.watcher.start()
        if self.precomputer is not None:
            self.precomputer.start()
        liveness = Liveness(self.settings, "predictor").start()
        topics = TopicWatch.start(self.settings, [self.requests_topic])
        try:
            while not self._stopping:
                topics.check()
                liveness.observe(consumer_positions(self.consumer))
                polled = self.consumer.poll(timeout_ms=POLL_MS)
                records = [r for rs in polled.values() for r in rs]
                if records:
                    self.handle(records)
                    commit_unless_refused(self.consumer)  # refused: redelivered, re-sent
        finally:
            topics.stop()
            liveness.stop()
            self.watcher.stop()
            if self.precomputer is not None:
                self.precomputer.stop()
            self.consumer.close(autocommit=False)
            self.producer.close()

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def handle(self, records: list[Any]) -> Outcome:
        """Answer one polled batch; returns once every answer is acknowledged."""
        serving = self.watcher.serving  # one champion for the whole batch
        now = time.time()
        requests: list[tuple[Any, PredictionRequest]] = []
        # (request record, reply topic, answer): every record gets exactly one answer.
        answers: list[tuple[Any, str | None, Prediction]] = []
        redelivered: list[tuple[Any, PredictionRequest]] = []  # read again after a crash?
        served_from_cache: dict[str, Entry] = {}  # by request id
        writes = self.redis.pipeline(transaction=False)  # cache entries + request log
        futures = []
        suspects = self.redelivery.suspects((r.topic, r.partition) for r in records)
        for record, suspect in zip(records, suspects, strict=True):
            try:
                requests.append((record, self._checked(decode(PredictionRequest, record.value))))
            except InvalidMessage as exc:
                answers.append((record, None, self._error(record, exc.error_class, exc.reason)))
                letter = dead_letter(RawRecord.of(record), exc.error_class, exc.reason)
                futures.append(
                    self.producer.send(
                        self.dead_letter_topic,
                        key=letter.key,
                        value=letter.value,
                        headers=letter.headers,
                    )
                )
                continue
            if suspect:
                redelivered.append(requests[-1])
        resent = self.request_log.logged_answers(redelivered)  # by record (logged_source)
        for record, request in redelivered:
            if logged_source(record) in resent:
                answers.append((record, request.reply_topic, resent[logged_source(record)]))
        requests = [(rec, r) for rec, r in requests if logged_source(rec) not in resent]
        stored = self.store.load(request.entity_id for _, request in requests)
        vectors = [
            feature_vector(stored[r.entity_id].state, FEATURES, now, raw=r.features)
            for _, r in requests
        ]
        served: list[ServedAnswer | None] = [None] * len(requests)  # for the label to score
        if serving.champion is None:
            for record, request in requests:
                answers.append((record, request.reply_topic, self._no_champion(record, request)))
        elif requests:
            champion_scores, hits = self._champion_scores(
                serving.champion,
                [(r.entity_id, stored[r.entity_id].rev) for _, r in requests],
                vectors,
                now,
                writes,
            )
            shadow = {c: score_each(c, vectors) for c in serving.challengers}
            for i, (record, request) in enumerate(requests):
                scored = champion_scores[i]
                answer = self._scored_answer(
                    record,
                    request,
                    serving.champion,
                    scored,
                    freshness(stored[request.entity_id].state, now),
                    hits[i],
                )
                answers.append((record, request.reply_topic, answer))
                if answer.error is not None or not isinstance(scored, Scored):
                    continue
                served[i] = ServedAnswer(serving.champion.name, scored.prediction, scored.positive)
                hit = hits[i]
                if hit is not None:
                    served_from_cache[request.request_id] = hit
            if shadow:
                self.shadow_log.append(
                    [
                        ShadowAnswer(r.request_id, model.model, model.version, scored.prediction)
                        for model, scores in [(serving.champion, champion_scores), *shadow.items()]
                        for (_, r), scored in zip(requests, scores, strict=True)
                        if isinstance(scored, Scored)
                    ]
                )
        # What each request saw, answered or not: a late label for it can still teach
        # the learner (that is how a cold start gets its first model).
        self.snapshots.record(
            [
                (request.request_id, Snapshot(request.entity_id, now, vector, served[i]))
                for i, ((_, request), vector) in enumerate(zip(requests, vectors, strict=True))
            ]
        )
        wire = [encode(answer) for _, _, answer in answers]
        # The log first: an answer that went out is always in it, to be re-sent as it was.
        # Where another owner of the partition logged this very record first, its answer
        # is the one that counts: send that one, so both copies are identical.
        fresh = [
            i
            for i, (record, _, _) in enumerate(answers)
            if not resent or logged_source(record) not in resent
        ]
        taken = self.request_log.create(
            [
                AnswerToLog(
                    answers[i][0],
                    answers[i][2],
                    wire[i],
                    served_from_cache.get(answers[i][2].request_id),
                )
                for i in fresh
            ],
            writes,
        )
        taken_over = [i for i in fresh if logged_source(answers[i][0]) in taken]
        for i in taken_over:
            record, reply_topic, _ = answers[i]
            answers[i] = (record, reply_topic, taken[logged_source(record)])
            wire[i] = encode(answers[i][2])
        for (_, reply_topic, answer), value in zip(answers, wire, strict=True):
            futures.append(
                self.producer.send(
                    reply_topic or self.answers_topic,
                    key=(answer.entity_id or answer.request_id).encode(),
                    value=value,
                )
            )
        self.producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)
        errors = sum(1 for _, _, a in answers if a.error is not None)
        # Re-sent from the lookup (not in ``fresh``) or taken over at logging: each was
        # counted when it was first answered.
        repeats = set(range(len(answers))).difference(fresh) | set(taken_over)
        for i, (_, _, answer) in enumerate(answers):
            if i in repeats:
                continue
            metrics.REQUESTS.labels(answer.error.code if answer.error else "answered").inc()
            if answer.latency_ms is not None:
                metrics.REQUEST_LATENCY.observe(answer.latency_ms / 1000)
        if repeats:
            metrics.REQUESTS.labels(RESENT).inc(len(repeats))
        self._report_lag()
        return Outcome(len(answers), errors, sum(1 for _, _, a in answers if a.cached))

    def _champion_scores(
        self,
        champion: Loaded,
        reads: list[tuple[str, int]],
        vectors: list[dict[str, Any]],
        now: float,
        writes: Any,
    ) -> tuple[list[Scored | Unscorable], list[Entry | None]]:
        """The champion's answer per request, served from the cache where an entry
        matches; answers computed for misses worth keeping are queued on ``writes``.
        ``reads`` are the requests' entities and the revisions read for them."""
        if self.cache is None:
            return score_each(champion, vectors), [None] * len(vectors)
        asks = [
            Ask(entity_id, rev, self.cache.timing.digest(vector, now))
            for (entity_id, rev), vector in zip(reads, vectors, strict=True)
        ]
        lookup = self.cache.lookup(champion, asks)
        misses = [i for i, hit in enumerate(lookup.hits) if hit is None]
        metrics.PREDICTION_CACHE.labels("hit").inc(len(asks) - len(misses))
        metrics.PREDICTION_CACHE.labels("miss").inc(len(misses))
        computed = dict(
            zip(misses, score_each(champion, [vectors[i] for i in misses]), strict=True)
        )
        scores = [hit.scored if hit else computed[i] for i, hit in enumerate(lookup.hits)]
        self.cache.save(
            [
                (asks[i], scored)
                for i in misses
                if lookup.keep[i] and isinstance(scored := computed[i], Scored)
            ],
            champion,
            now,
            writes,
        )
        return scores, lookup.hits

    def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None:
                lag = max(0, end - self.consumer.position(tp))
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    def _answer(
        self,
        record: Any,
        request: PredictionRequest,
        model: Loaded,
        scored: Scored,
        fresh: float | None,
        cached: Entry | None,
    ) -> Prediction:
        return Prediction(
            request_id=request.request_id,
            entity_id=request.entity_id,
            prediction=scored.prediction,
            proba=scored.proba,
            model=model.model,
            model_version=str(cached.version if cached else model.version),
            latency_ms=_latency_ms(record),
            freshness_s=fresh,
            cached=cached is not None,
        )

    def _checked(self, request: PredictionRequest) -> PredictionRequest:
        """``request``, unless it names a reply topic answers may not go to."""
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

    def _scored_answer(
        self,
        record: Any,
        request: PredictionRequest,
        champion: Loaded,
        scored: Scored | Unscorable,
        fresh: float | None,
        cached: Entry | None,
    ) -> Prediction:
        """The answer for a scored request, or its error answer when the champion could
        not score it or answered what no answer may carry (a NaN probability)."""
        if isinstance(scored, Scored):
            try:
                return self._answer(record, request, champion, scored, fresh, cached)
            except ValueError as exc:
                scored = Unscorable(f"the model's answer is invalid: {exc}"[:MAX_REASON_CHARS])
        return self._unscorable(record, request, scored)

    def _unscorable(
        self, record: Any, request: PredictionRequest, unscorable: Unscorable
    ) -> Prediction:
        log.warning(
            "the champion could not score a request",
            extra={"request_id": request.request_id, "reason": unscorable.reason},
        )
        return Prediction(
            request_id=request.request_id,
            entity_id=request.entity_id,
            model=self.model,
            latency_ms=_latency_ms(record),
            error=PredictionError(code=UNSCORABLE, message=unscorable.reason),
        )

    def _no_champion(self, record: Any, request: PredictionRequest) -> Prediction:
        return Prediction(
            request_id=request.request_id,
            entity_id=request.entity_id,
            model=self.model,
            latency_ms=_latency_ms(record),
            error=PredictionError(
                code=NO_CHAMPION,
                message=f"no version of {self.model!r} is champion yet; nothing is guessed",
            ),
        )

    def _error(self, record: Any, error_class: str, reason: str) -> Prediction:
        request_id = _salvaged_request_id(record.value, error_class) or (
            f"{record.topic}:{record.partition}:{record.offset}"
        )
        return Prediction(
            request_id=request_id,
            model=self.model,
            latency_ms=_latency_ms(record),
            error=PredictionError(code=INVALID_REQUEST, message=f"{error_class}: {reason}"),
        )


# A request id as a top-level string member, found without parsing (see below).
_ANSWER_ID = TypeAdapter(Identifier)
_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([^"\\]{1,256})"')


def _latency_ms(record: Any) -> float:
    """From the request's Kafka timestamp to now: what the caller waited so far."""
    return round(max(0.0, time.time() * 1000 - float(record.timestamp)), 3)


def _salvaged_request_id(raw: bytes | None, error_class: str) -> str | None:
    """The request id of a request too broken to validate, when one can be read.

    The lenient standard parser is used on purpose: it reads NaN and duplicate keys,
    so a request refused for those still gets its answer under its own id. A request
    refused before it was parsed (too large, too deep, not UTF-8) is not parsed here
    either, since the guards that refused it keep a parser from recursing or running
    long: its id is looked for by a linear scan of the bytes instead.

    >>> _salvaged_request_id(b'{"request_id": "r1", "x": NaN}', "non_finite_number")
    'r1'
    >>> _salvaged_request_id(b'{"request_id": "r2", "x": ' + b"[" * 100_000, "too_deep")
    'r2'

    An id the answer's contract would refuse is no id (the answer then names the
    record's place): a lone surrogate, found by the long fuzz, crashed the predictor.

    >>> _salvaged_request_id(rb'{"request_id": "\\ud800", "x": NaN}', "non_finite_number")
    """
    if error_class in REFUSED_UNPARSED:
        found = _REQUEST_ID.search(raw or b"")
        try:
            value: object = found.group(1).decode("utf-8") if found else None
        except UnicodeDecodeError:
            return None
    else:
        try:
            document = json.loads(raw or b"")
        except ValueError:
            return None
        value = document.get("request_id") if isinstance(document, dict) else None
    try:
        return _ANSWER_ID.validate_python(value)
    except ValidationError:
        return None
