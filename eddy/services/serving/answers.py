"""What one polled batch of prediction requests is answered, decided without I/O.

The predictor's batch (:meth:`eddy.services.serving.predictor.Predictor.handle`) reads
from Kafka and Redis, then writes to Redis, sends to Kafka and commits. Between the reads
and the writes lies every decision that matters to a client: which record gets which
reply, in which order, under which request id and error code, with which model version;
what the request log, the shadow log and the snapshots keep; what the metrics count.
Those decisions are made here, from values alone, by :func:`answer_batch`, so that they
can be read in one place and tested without a broker or Redis.

Every polled record gets exactly one :class:`Reply`, in this order:

1. each record that is no valid request (:class:`Refused`), in poll order: an
   ``invalid_request`` error under its own request id when one can be read
   (:func:`salvaged_request_id`), else under its place ``topic:partition:offset``;
2. each redelivered record whose answer the request log holds, in poll order: that very
   answer again (:mod:`eddy.services.serving.redelivery`), not logged or counted again;
3. every other request, in poll order: the champion's answer, or ``unscorable`` when the
   champion raised on it or answered what no answer may carry, or ``no_champion`` when
   no version is champion.

>>> from types import SimpleNamespace as Record
>>> from eddy.streams.features.compute import EntityState
>>> broken = Record(topic="requests", partition=0, offset=7, timestamp=0, value=b"{")
>>> asked = Record(topic="requests", partition=0, offset=8, timestamp=0, value=b"...")
>>> polled = [
...     Polled(broken, Refused("not_json", "unexpected end of data", at=0.5)),
...     Polled(asked, PredictionRequest(request_id="r1", entity_id="u1")),
... ]
>>> batch = answer_batch(
...     polled, logged={}, seen=[Seen(EntityState(), {})], serving=ServingModels(),
...     model="m", answers_topic="predictions", now=1.0, clock=lambda: 1.0,
... )
>>> [(r.topic, r.answer.request_id, r.answer.error.code) for r in batch.replies]
[('predictions', 'requests:0:7', 'invalid_request'), ('predictions', 'r1', 'no_champion')]
>>> [r.answer.latency_ms for r in batch.replies], batch.outcomes
([500.0, 1000.0], Counter({'invalid_request': 1, 'no_champion': 1}))
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from eddy.services.serving.cache import Ask, Entry
from eddy.services.serving.redelivery import logged_source
from eddy.services.serving.request_log import AnswerToLog, ShadowAnswer
from eddy.services.serving.scoring import (
    MAX_REASON_CHARS,
    Loaded,
    Scored,
    ServingModels,
    Unscorable,
    score_each,
)
from eddy.streams.features.compute import EntityState, FeatureValue, freshness
from eddy.streams.messages.contracts import (
    Identifier,
    Prediction,
    PredictionError,
    PredictionRequest,
    ServedAnswers,
)
from eddy.streams.messages.validation import REFUSED_UNPARSED, encode
from eddy.streams.store.snapshots import ServedAnswer, Snapshot

# Error codes of error answers.
NO_CHAMPION = "no_champion"
INVALID_REQUEST = "invalid_request"
UNSCORABLE = "unscorable"
# Outcomes counted per reply (besides the error codes).
ANSWERED = "answered"
RESENT = "resent"  # a repeated answer to a redelivered request (counted once before)

MS_PER_S = 1000
LATENCY_DECIMALS = 3  # latency_ms to the microsecond

# A request id as a top-level string member, found without parsing (see below).
_ANSWER_ID = TypeAdapter(Identifier)
_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([^"\\]{1,256})"')


@dataclass(frozen=True)
class Refused:
    """A polled record that is no valid request: the kind of fault, why, and when it was
    refused (its error answer's latency runs to that moment)."""

    error_class: str
    reason: str
    at: float  # epoch seconds


@dataclass(frozen=True)
class Polled:
    """One polled record (a kafka-python ``ConsumerRecord``: topic, partition, offset,
    timestamp in milliseconds, value) and what decoding made of it."""

    record: Any
    decoded: PredictionRequest | Refused


@dataclass(frozen=True)
class CacheCheck:
    """What the answer cache said about one request: what was asked, the entry that
    serves it (None: a miss), and whether the champion's answer, when computed on a
    miss, is worth storing."""

    ask: Ask
    hit: Entry | None
    keep: bool


@dataclass(frozen=True)
class Seen:
    """What one request to answer afresh saw: its entity's stored state, the vector
    merged from that state and the request's own features, and (cache on, a champion
    serving) what the answer cache holds for it."""

    state: EntityState
    vector: dict[str, FeatureValue]
    cache: CacheCheck | None = None


@dataclass(frozen=True)
class Reply:
    """One record's reply: the topic it goes to, the answer, and the answer's wire form
    (sent and logged byte for byte). ``repeat``: an answer sent before, for this very
    record, by this or another owner of its partition; it was counted then."""

    record: Any
    topic: str
    answer: Prediction
    wire: bytes
    repeat: bool = False

    @property
    def key(self) -> bytes:
        """The Kafka key the answer is sent with: its entity, else its request id."""
        return (self.answer.entity_id or self.answer.request_id).encode()


@dataclass(frozen=True)
class AnsweredBatch:
    """Every reply of one batch, and what the I/O around it must write.

    ``to_log``: the request-log entries to create before anything is sent (every reply
    but the repeats); ``shadow``: the champion's and challengers' answers for the shadow
    log (only while challengers serve); ``snapshots``: by request id, what each request
    answered afresh saw and was answered, for late labels; ``to_cache``: the champion's
    computed answers worth storing in the answer cache; ``unscorable``: the request id
    and the reason of each request the champion could not answer, to be logged.
    """

    replies: tuple[Reply, ...]
    to_log: tuple[AnswerToLog, ...] = ()
    shadow: tuple[ShadowAnswer, ...] = ()
    snapshots: tuple[tuple[str, Snapshot], ...] = ()
    to_cache: tuple[tuple[Ask, Scored], ...] = ()
    unscorable: tuple[tuple[str, str], ...] = ()

    def taken_over(self, first: Mapping[str, Prediction]) -> AnsweredBatch:
        """This batch with the answers another owner of a partition logged first for
        the same records (by :func:`logged_source`) sent instead of ours, as repeats: a
        client sees at most a duplicate of one answer."""
        if not first:
            return self
        replies = []
        for reply in self.replies:
            earlier = first.get(logged_source(reply.record))
            if earlier is not None:
                reply = replace(reply, answer=earlier, wire=wire(earlier), repeat=True)
            replies.append(reply)
        return replace(self, replies=tuple(replies))

    @property
    def outcomes(self) -> Counter[str]:
        """Replies to count, by outcome: a first answer under its error code (or
        ``answered``), every repeat under ``resent``."""
        counted = Counter(
            reply.answer.error.code if reply.answer.error else ANSWERED
            for reply in self.replies
            if not reply.repeat
        )
        repeats = sum(reply.repeat for reply in self.replies)
        if repeats:
            counted[RESENT] = repeats
        return counted

    @property
    def latencies_s(self) -> list[float]:
        """The latency of every first answer that has one, in seconds."""
        return [
            reply.answer.latency_ms / MS_PER_S
            for reply in self.replies
            if not reply.repeat and reply.answer.latency_ms is not None
        ]


def suspected_redeliveries(
    polled: Sequence[Polled], suspects: Sequence[bool]
) -> list[tuple[Any, PredictionRequest]]:
    """The valid requests that may have been answered before, whose answers are looked
    up in the request log; ``suspects`` flags each polled record
    (:class:`~eddy.services.serving.redelivery.RedeliveryWindow`)."""
    return [
        (item.record, item.decoded)
        for item, suspect in zip(polled, suspects, strict=True)
        if suspect and isinstance(item.decoded, PredictionRequest)
    ]


def fresh_requests(
    polled: Sequence[Polled], logged: Mapping[str, Prediction]
) -> list[tuple[Any, PredictionRequest]]:
    """The valid requests to answer now, in poll order: all but those whose answers the
    request log holds (``logged``, by :func:`logged_source` of the record)."""
    if not logged:  # the usual batch: nothing to look for
        return list(_requests(polled))
    return [
        (record, request)
        for record, request in _requests(polled)
        if logged_source(record) not in logged
    ]


def answer_batch(
    polled: Sequence[Polled],
    *,
    logged: Mapping[str, Prediction],
    seen: Sequence[Seen],
    serving: ServingModels,
    model: str,
    answers_topic: str,
    now: float,
    clock: Callable[[], float],
    feature_set: str | None = None,
) -> AnsweredBatch:
    """One reply per polled record, and what is to be logged, recorded and cached.

    ``logged``: the answers the request log holds for this batch's suspected
    redeliveries, by :func:`logged_source` of the record; ``seen``: one per request of
    :func:`fresh_requests` (``polled``, ``logged``), in its order; ``serving``: the
    models of the moment, one champion for the whole batch; ``model``: the model name
    served; ``answers_topic``: where answers go unless a request names its reply topic;
    ``now``: the moment the features were read as of; ``clock`` is read as each answer
    is made, so that its latency includes the batch's scoring, as its caller waits it;
    ``feature_set``: the fingerprint of the features the vectors were computed with,
    which every scored answer carries.
    """
    replies: list[Reply] = []
    for item in polled:
        if isinstance(item.decoded, Refused):
            answer = invalid_request_answer(item.record, item.decoded, model)
            replies.append(_reply(item.record, None, answers_topic, answer))
    for record, request in _requests(polled) if logged else ():
        earlier = logged.get(logged_source(record))
        if earlier is not None:
            replies.append(_reply(record, request.reply_topic, answers_topic, earlier, repeat=True))
    fresh = list(zip(fresh_requests(polled, logged), seen, strict=True))
    served: list[ServedAnswer | None] = [None] * len(fresh)  # for the label to score
    served_from_cache: dict[str, Entry] = {}  # by request id
    shadow: list[ShadowAnswer] = []
    to_cache: list[tuple[Ask, Scored]] = []
    unscorable: list[tuple[str, str]] = []
    champion = serving.champion
    if champion is None:
        for (record, request), _ in fresh:
            answer = no_champion_answer(record, request, model, clock())
            replies.append(_reply(record, request.reply_topic, answers_topic, answer))
    elif fresh:
        version = champion.name
        champion_scores, to_cache = _champion_scores(champion, [s for _, s in fresh])
        vectors = [saw.vector for _, saw in fresh]
        challenger_scores = {c: score_each(c, vectors) for c in serving.challengers}
        for i, ((record, request), saw) in enumerate(fresh):
            scored = champion_scores[i]
            hit = saw.cache.hit if saw.cache is not None else None
            answer = _champion_answer(
                record,
                request,
                champion,
                (scored, freshness(saw.state, now), hit, feature_set),
                model,
                clock,
            )
            replies.append(_reply(record, request.reply_topic, answers_topic, answer))
            if answer.error is not None:
                unscorable.append((request.request_id, answer.error.message))
            elif isinstance(scored, Scored):
                served[i] = ServedAnswer(version, scored.prediction, scored.positive)
                if hit is not None:
                    served_from_cache[request.request_id] = hit
        if challenger_scores:
            shadow = [
                ShadowAnswer(request.request_id, scorer.model, scorer.version, scored.prediction)
                for scorer, scores in [(champion, champion_scores), *challenger_scores.items()]
                for ((_, request), _), scored in zip(fresh, scores, strict=True)
                if isinstance(scored, Scored)
            ]
    return AnsweredBatch(
        replies=tuple(replies),
        to_log=tuple(
            AnswerToLog(
                reply.record,
                reply.answer,
                reply.wire,
                served_from_cache.get(reply.answer.request_id),
            )
            for reply in replies
            if not reply.repeat
        ),
        shadow=tuple(shadow),
        snapshots=tuple(
            (request.request_id, Snapshot(request.entity_id, now, saw.vector, served[i]))
            for i, ((_, request), saw) in enumerate(fresh)
        ),
        to_cache=tuple(to_cache),
        unscorable=tuple(unscorable),
    )


SERVED_EVERY_S = 1.0
"""How long the predictor gathers fresh answers before it sends them for the live
estimate: a record per batch cost it 14 % of its throughput (scripts/bench.py, the
prediction section, with and without)."""
SERVED_MOST = 10_000  # answers gathered at most before they are sent anyway


@dataclass
class ServedBuffer:
    """The fresh answers of the predictor's batches, per version, in order, until
    they are due (:data:`SERVED_EVERY_S` after the first, or :data:`SERVED_MOST`
    answers): a binary classifier's P(positive) of each, a regressor's answers with the
    features they were computed from; other answers (multiclass) are not kept.

    >>> from datetime import UTC, datetime
    >>> served = (("r1", Snapshot("u1", 0.0, {}, ServedAnswer("m@2", True, 0.8))),
    ...           ("r2", Snapshot("u2", 0.0, {}, None)))
    >>> buffer = ServedBuffer("m")
    >>> buffer.add(AnsweredBatch(replies=(), snapshots=served), "p[0]@7", now=10.0)
    >>> buffer.due(10.5), buffer.due(11.0)
    (False, True)
    >>> [(a.batch_id, a.positives) for a in buffer.take(datetime.now(UTC))]
    [('p[0]@7:m@2', [0.8])]
    >>> buffer.take(datetime.now(UTC))
    []
    """

    model: str
    positives: dict[str, list[float]] = field(default_factory=dict)
    values: dict[str, tuple[list[float], list[dict[str, FeatureValue]]]] = field(
        default_factory=dict
    )
    first: str | None = None  # the first batch's id: the records' ids start from it
    since: float | None = None
    count: int = 0

    def add(self, batch: AnsweredBatch, batch_id: str, now: float) -> None:
        for _, snapshot in batch.snapshots:
            answer = snapshot.served
            if answer is None:
                continue
            if answer.positive is not None:
                self.positives.setdefault(answer.version, []).append(answer.positive)
            elif isinstance(answer.prediction, int | float) and not isinstance(
                answer.prediction, bool
            ):
                numbers, inputs = self.values.setdefault(answer.version, ([], []))
                numbers.append(float(answer.prediction))
                inputs.append(snapshot.features)
            else:
                continue
            self.count += 1
            if self.first is None:
                self.first, self.since = batch_id, now

    def due(self, now: float) -> bool:
        return self.since is not None and (
            now - self.since >= SERVED_EVERY_S or self.count >= SERVED_MOST
        )

    def take(self, at: datetime) -> list[ServedAnswers]:
        """The records to send (one per version), emptying the buffer."""

        def record(version: str, **answers: Any) -> ServedAnswers:
            return ServedAnswers(
                batch_id=f"{self.first}:{version}",
                model=self.model,
                model_version=version,
                served_at=at,
                **answers,
            )

        records = [record(version, positives=scores) for version, scores in self.positives.items()]
        records += [
            record(version, values=numbers, inputs=inputs)
            for version, (numbers, inputs) in self.values.items()
        ]
        self.positives, self.values = {}, {}
        self.first, self.since, self.count = None, None, 0
        return records


def invalid_request_answer(record: Any, refused: Refused, model: str) -> Prediction:
    request_id = salvaged_request_id(record.value, refused.error_class) or (
        f"{record.topic}:{record.partition}:{record.offset}"
    )
    return Prediction(
        request_id=request_id,
        model=model,
        latency_ms=latency_ms(record, refused.at),
        error=PredictionError(
            code=INVALID_REQUEST, message=f"{refused.error_class}: {refused.reason}"
        ),
    )


def no_champion_answer(
    record: Any, request: PredictionRequest, model: str, at: float
) -> Prediction:
    return Prediction(
        request_id=request.request_id,
        entity_id=request.entity_id,
        model=model,
        latency_ms=latency_ms(record, at),
        error=PredictionError(
            code=NO_CHAMPION,
            message=f"no version of {model!r} is champion yet; nothing is guessed",
        ),
    )


def unscorable_answer(
    record: Any, request: PredictionRequest, unscorable: Unscorable, model: str, at: float
) -> Prediction:
    return Prediction(
        request_id=request.request_id,
        entity_id=request.entity_id,
        model=model,
        latency_ms=latency_ms(record, at),
        error=PredictionError(code=UNSCORABLE, message=unscorable.reason),
    )


def latency_ms(record: Any, at: float) -> float:
    """From the request's Kafka timestamp to ``at``: what the caller had waited by then.

    >>> from types import SimpleNamespace as Record
    >>> latency_ms(Record(timestamp=1_000), at=1.25), latency_ms(Record(timestamp=9_000), at=1.0)
    (250.0, 0.0)
    """
    return round(max(0.0, at * MS_PER_S - float(record.timestamp)), LATENCY_DECIMALS)


def salvaged_request_id(raw: bytes | None, error_class: str) -> str | None:
    """The request id of a request too broken to validate, when one can be read.

    The lenient standard parser is used on purpose: it reads NaN and duplicate keys,
    so a request refused for those still gets its answer under its own id. A request
    refused before it was parsed (too large, too deep, not UTF-8) is not parsed here
    either, since the guards that refused it keep a parser from recursing or running
    long: its id is looked for by a linear scan of the bytes instead.

    >>> salvaged_request_id(b'{"request_id": "r1", "x": NaN}', "non_finite_number")
    'r1'
    >>> salvaged_request_id(b'{"request_id": "r2", "x": ' + b"[" * 100_000, "too_deep")
    'r2'

    An id the answer's contract would refuse is no id (the answer then names the
    record's place): a lone surrogate, found by the long fuzz, crashed the predictor.

    >>> salvaged_request_id(rb'{"request_id": "\\ud800", "x": NaN}', "non_finite_number")
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


def _reply(
    record: Any,
    reply_topic: str | None,
    answers_topic: str,
    answer: Prediction,
    *,
    repeat: bool = False,
) -> Reply:
    """The reply to ``record``: to the request's reply topic if it names one, else to the
    answers topic."""
    return Reply(record, reply_topic or answers_topic, answer, wire(answer), repeat)


def wire(answer: Prediction) -> bytes:
    """``encode(answer)``, byte for byte, from the fields the answer was validated into.

    An answer is validated once, when Eddy builds it; pydantic's serializer would then
    walk every field again only to hand the same plain values to orjson (an error
    answer's nested error is left to it). Fields keep their declared order.

    >>> answer = Prediction(request_id="r1", prediction=True, proba={"True": 0.75})
    >>> wire(answer) == encode(answer), wire(answer)[:44]
    (True, b'{"schema_version":1,"request_id":"r1","predi')
    """
    if answer.error is not None:
        return encode(answer)
    return orjson.dumps(
        {name: value for name, value in answer.__dict__.items() if value is not None}
    )


def _requests(polled: Sequence[Polled]) -> Iterator[tuple[Any, PredictionRequest]]:
    """The valid requests among the polled records, with their records, in poll order."""
    for item in polled:
        if isinstance(item.decoded, PredictionRequest):
            yield item.record, item.decoded


def _champion_scores(
    champion: Loaded, seen: Sequence[Seen]
) -> tuple[list[Scored | Unscorable], list[tuple[Ask, Scored]]]:
    """The champion's answer per request: the cached one where an entry serves it, else
    scored now (one call for all the misses); and the answers scored now that are worth
    storing in the answer cache."""
    misses = [i for i, saw in enumerate(seen) if saw.cache is None or saw.cache.hit is None]
    computed = dict(
        zip(misses, score_each(champion, [seen[i].vector for i in misses]), strict=True)
    )
    scores: list[Scored | Unscorable] = []
    for i, saw in enumerate(seen):
        hit = saw.cache.hit if saw.cache is not None else None
        scores.append(hit.scored if hit is not None else computed[i])
    worth_storing = [
        (check.ask, scored)
        for i in misses
        if (check := seen[i].cache) is not None
        and check.keep
        and isinstance(scored := computed[i], Scored)
    ]
    return scores, worth_storing


def _champion_answer(
    record: Any,
    request: PredictionRequest,
    champion: Loaded,
    seen: tuple[Scored | Unscorable, float | None, Entry | None, str | None],
    model: str,
    clock: Callable[[], float],
) -> Prediction:
    """The answer for a scored request, or its error answer when the champion could not
    score it or answered what no answer may carry (a NaN probability). ``seen``: the
    champion's score, the features' freshness, the cache entry that answered (if
    any) and the feature set's fingerprint."""
    scored, freshness_s, cached, feature_set = seen
    if isinstance(scored, Scored):
        try:
            return Prediction(
                request_id=request.request_id,
                entity_id=request.entity_id,
                prediction=scored.prediction,
                proba=scored.proba,
                model=champion.model,
                model_version=str(cached.version if cached else champion.version),
                latency_ms=latency_ms(record, clock()),
                freshness_s=freshness_s,
                feature_set=feature_set,
                cached=cached is not None,
            )
        except ValueError as exc:
            scored = Unscorable(f"the model's answer is invalid: {exc}"[:MAX_REASON_CHARS])
    return unscorable_answer(record, request, scored, model, clock())
