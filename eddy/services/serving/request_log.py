"""What the predictor keeps of what it answered: the request log and the shadow log.

Both live in Redis, outlive the predictor process that wrote them and are read by other
processes: ``eddy trace`` and the skew check read the request log, the live
champion/challenger comparison reads the shadow log. Their keys and formats live here,
apart from the process, so that reading them does not mean importing a Kafka consumer.

**The request log** keeps one JSON entry per request id (``<prefix>request:{<id>}``, for
``EDDY_REQUEST_LOG_TTL_S``): the request's input (its first
``EDDY_REQUEST_LOG_INPUT_BYTES``), the answer sent (``output``, byte for byte), when it
was logged, the record it answered (``source``) and, for an answer served from the
answer cache, the entity revision and the moment the answer was computed from. It is
written before any answer is sent, so the answer to a redelivered record can be re-sent
as it was (:mod:`eddy.services.serving.redelivery`): only an entry naming the very same
record counts, not one left under a reused request id.

>>> keys.request_log("eddy.", "r1"), keys.shadow_log("eddy.")
('eddy.request:{r1}', 'eddy.shadow')
>>> answer = {"request_id": "r1", "prediction": 1}
>>> entry = orjson.dumps({"source": "requests[0]@7", "output": answer})
>>> logged_answer(entry, "requests[0]@7").prediction, logged_answer(entry, "requests[1]@7")
(1, None)

**The shadow log** (the stream ``<prefix>shadow``, capped near ``EDDY_SHADOW_LOG_MAX``
entries) keeps what the champion and every challenger answered for each request scored
while challengers serve in shadow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from eddy.services.config.settings import Settings
from eddy.services.serving.cache import Entry
from eddy.services.serving.redelivery import logged_source
from eddy.services.serving.scoring import Answer
from eddy.streams.messages.contracts import Prediction, PredictionRequest
from eddy.streams.store import keys
from eddy.streams.store.redis_commands import (
    RedisClient,
    is_cluster,
    multi_get,
    queue_script,
    set_expiring,
)
from eddy.streams.store.slots import script_calls

log = logging.getLogger(__name__)

MS_PER_S = 1000


def logged_answer(raw: bytes | str | None, source: str) -> Prediction | None:
    """The answer a request-log entry holds for the record named ``source``; None when
    there is no entry or it is for another record. Raises ``ValueError`` when the entry
    cannot be read."""
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
        if entry.get("source") != source:
            return None
        return Prediction.model_validate(entry["output"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable request-log entry: {exc}") from exc


@dataclass(frozen=True)
class AnswerToLog:
    """One answer the request log is to keep, before it is sent.

    ``record`` is the polled Kafka record it answers, ``wire`` the answer's wire form
    (logged as it is sent, byte for byte) and ``cached`` the answer-cache entry it was
    served from, if any.
    """

    record: Any
    answer: Prediction
    wire: bytes
    cached: Entry | None = None


# Creates each entry not there yet (SET .. PX .. NX, in KEYS order); replies 1 for each
# created, 0 for each refused. One call logs a whole batch (on a cluster, a slot's part
# of it): with a queued command per entry, logging took 15.6% of the predictor's answer
# path under py-spy, with this call 9.4%.
_CREATE = r"""
local created = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1], 'NX') then
    created[i] = 1
  else
    created[i] = 0
  end
end
return created
"""


class RequestLog:
    """The request log's Redis edge: find the answers already sent, log new ones."""

    def __init__(self, client: RedisClient, prefix: str, *, input_bytes: int, ttl_s: int) -> None:
        self._client = client
        self._prefix = prefix
        self._input_bytes = input_bytes
        self._ttl_ms = ttl_s * MS_PER_S
        self._cluster = is_cluster(client)

    @classmethod
    def from_settings(cls, client: RedisClient, settings: Settings) -> RequestLog:
        return cls(
            client,
            settings.topic_prefix,
            input_bytes=settings.request_log_input_bytes,
            ttl_s=settings.request_log_ttl_s,
        )

    def logged_answers(
        self, requests: Sequence[tuple[Any, PredictionRequest]]
    ) -> dict[str, Prediction]:
        """The answers already sent for these records (by :func:`logged_source`), from
        the request log; only an entry naming the very same record counts (not a reused
        request id)."""
        if not requests:
            return {}
        logged = multi_get(self._client, [self.key(request.request_id) for _, request in requests])
        found: dict[str, Prediction] = {}
        for (record, request), raw in zip(requests, logged, strict=True):
            try:
                answer = logged_answer(raw, logged_source(record))
            except ValueError:  # an entry this version cannot read: answer afresh instead
                log.warning(
                    "unreadable request-log entry", extra={"request_id": request.request_id}
                )
                continue
            if answer is None:
                continue
            found[logged_source(record)] = answer
            log.info(
                "re-sent a logged answer to a redelivered request",
                extra={"request_id": request.request_id, "model_version": answer.model_version},
            )
        return found

    def create(self, answers: Sequence[AnswerToLog], pipe: Any) -> dict[str, Prediction]:
        """One entry per answer, under the request id the answer carries, queued on
        ``pipe`` after whatever it holds and executed with it.

        Entries are only created, never replaced blindly: where one exists, an entry for
        the very same record means another owner of the partition (one whose commit the
        group will refuse) answered it first; that answer is returned, by
        :func:`logged_source` of the record, to be sent instead. An entry for another
        record (a reused request id) or one that cannot be read is replaced."""
        entries: list[tuple[str, bytes]] = []
        at = time.time()  # the whole batch is logged in this one round trip
        debugging = log.isEnabledFor(logging.DEBUG)  # looked up once, not per answer
        for to_log in answers:
            answer = to_log.answer
            entry: dict[str, Any] = {
                "request_id": answer.request_id,
                "input": (to_log.record.value or b"")[: self._input_bytes].decode(
                    "utf-8", errors="replace"
                ),
                "output": orjson.Fragment(to_log.wire),
                "at": at,
                "source": logged_source(to_log.record),
            }
            if to_log.cached is not None:
                entry["cache"] = {"rev": to_log.cached.rev, "computed_at": to_log.cached.at}
            entries.append((self.key(answer.request_id), orjson.dumps(entry)))
            if debugging:
                log.debug(
                    "answered",
                    extra={
                        "request_id": answer.request_id,
                        "model_version": answer.model_version,
                        "error": answer.error.code if answer.error else None,
                        "latency_ms": answer.latency_ms,
                        "cached": answer.cached,
                    },
                )
        calls = script_calls([name for name, _ in entries], self._cluster)
        for positions in calls:
            queue_script(
                pipe,
                _CREATE,
                [entries[p][0] for p in positions],
                [self._ttl_ms, *(entries[p][1] for p in positions)],
            )
        ours = len(pipe) - len(calls)  # the replies before are the caller's writes
        replies = pipe.execute()[ours:]
        refused = sorted(
            p
            for positions, reply in zip(calls, replies, strict=True)
            for p, ok in zip(positions, reply, strict=True)
            if not ok
        )
        if not refused:
            return {}
        taken: dict[str, Prediction] = {}
        existing = multi_get(self._client, [entries[k][0] for k in refused])
        for k, raw in zip(refused, existing, strict=True):
            source = logged_source(answers[k].record)
            try:
                first_answer = logged_answer(raw, source)
            except ValueError:  # unreadable: ours replaces it
                first_answer = None
            if first_answer is None:
                set_expiring(pipe, *entries[k], self._ttl_ms)
                continue
            taken[source] = first_answer
            log.info(
                "another owner answered this request first; its answer was sent",
                extra={
                    "request_id": answers[k].answer.request_id,
                    "model_version": first_answer.model_version,
                },
            )
        pipe.execute()
        return taken

    def key(self, request_id: str) -> str:
        return keys.request_log(self._prefix, request_id)


@dataclass(frozen=True)
class ShadowAnswer:
    """What one model (the champion or a challenger) answered for one request."""

    request_id: str
    model: str
    version: int
    prediction: Answer | None


class ShadowLog:
    """The shadow log's Redis edge: appends answers, the oldest trimmed past the cap."""

    def __init__(self, client: RedisClient, prefix: str, *, max_entries: int) -> None:
        self._client = client
        self._stream = keys.shadow_log(prefix)
        self._max_entries = max_entries

    @classmethod
    def from_settings(cls, client: RedisClient, settings: Settings) -> ShadowLog:
        return cls(client, settings.topic_prefix, max_entries=settings.shadow_log_max)

    def newest(self) -> list[ShadowAnswer]:
        """The answers the log holds, newest first (the cap's worth at most)."""
        entries: Any = self._client.xrevrange(self._stream, count=self._max_entries)
        return [
            ShadowAnswer(
                request_id=fields[b"request_id"].decode(),
                model=fields[b"model"].decode(),
                version=int(fields[b"version"]),
                prediction=orjson.loads(fields[b"prediction"]),
            )
            for _, fields in entries
        ]

    def append(self, answers: Sequence[ShadowAnswer], pipe: Any = None) -> None:
        """One round trip for all of ``answers`` (none when there are none); queued on
        ``pipe`` when given (the caller executes it)."""
        if not answers:
            return
        target = pipe if pipe is not None else self._client.pipeline(transaction=False)
        for answer in answers:
            target.xadd(
                self._stream,
                {
                    "request_id": answer.request_id,
                    "model": answer.model,
                    "version": answer.version,
                    "prediction": orjson.dumps(answer.prediction),
                },
                maxlen=self._max_entries,
                approximate=True,
            )
        if pipe is None:
            target.execute()
