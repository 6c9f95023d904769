"""The predictor's pure step: what each polled record of a batch is answered.

No broker and no Redis: records are plain values, the models small stand-ins for fitted
scikit-learn classifiers, and the clock a constant, so every reply, log entry and count
can be asserted exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from eddy.services.serving.answers import (
    ANSWERED,
    INVALID_REQUEST,
    NO_CHAMPION,
    RESENT,
    UNSCORABLE,
    AnsweredBatch,
    CacheCheck,
    Polled,
    Refused,
    Seen,
    answer_batch,
    fresh_requests,
    suspected_redeliveries,
    wire,
)
from eddy.services.serving.cache import Ask, Entry
from eddy.services.serving.redelivery import RedeliveryWindow, logged_source
from eddy.services.serving.scoring import Loaded, Scored, ServingModels
from eddy.streams.features.compute import EntityState, FeatureValue, apply_event
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.contracts import Prediction, PredictionRequest
from eddy.streams.messages.validation import encode
from eddy.streams.store.snapshots import ServedAnswer

MODEL = "fraud"
REQUESTS = "eddy.prediction-requests"
ANSWERS = "eddy.predictions"
REPLIES = "shop.replies"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SENT_MS_AGO = 40.0  # each request's Kafka timestamp, before NOW
ANSWERED_AT = NOW + 0.25  # what the clock reads while the batch is answered
NAN_AMOUNT = 13.0  # the stand-in model answers a NaN probability for this amount
ABOVE = 50.0  # the stand-in model says True above this amount


@dataclass(frozen=True)
class Record:
    """The parts of a kafka-python ConsumerRecord the step reads."""

    offset: int
    value: bytes | None
    partition: int = 0
    topic: str = REQUESTS
    timestamp: float = NOW * 1000 - SENT_MS_AGO


@dataclass(eq=False)  # hashable, as a Loaded model's estimator must be
class AboveFifty:
    """A fitted binary classifier's stand-in: True above ``ABOVE``; raises for a whole
    batch holding a negative amount; a NaN probability at ``NAN_AMOUNT``. Counts the
    vectors it scored."""

    flip: bool = False
    classes_: tuple[bool, ...] = (False, True)
    scored: list[dict[str, float]] = field(default_factory=list)

    def predict_proba(self, xs: Sequence[dict[str, float]]) -> list[list[float]]:
        if any(x.get("amount", 0.0) < 0 for x in xs):
            raise ValueError("negative amount")
        self.scored.extend(xs)
        rows = []
        for x in xs:
            amount = x.get("amount", 0.0)
            if amount == NAN_AMOUNT:
                rows.append([math.nan, math.nan])
                continue
            p = 0.9 if (amount > ABOVE) != self.flip else 0.2
            rows.append([round(1 - p, 6), p])
        return rows


def champion(version: int = 3, **kwargs: Any) -> Loaded:
    return Loaded(MODEL, version, "sklearn", AboveFifty(**kwargs), artifact=f"sha-{version}")


def request(
    offset: int,
    request_id: str,
    amount: float | None = None,
    *,
    entity_id: str = "u1",
    reply_topic: str | None = None,
    partition: int = 0,
) -> Polled:
    features: dict[str, FeatureValue] = {} if amount is None else {"amount": amount}
    asked = PredictionRequest(
        request_id=request_id, entity_id=entity_id, features=features, reply_topic=reply_topic
    )
    return Polled(Record(offset, encode(asked), partition), asked)


def refused(offset: int, value: bytes | None, error_class: str, reason: str = "bad") -> Polled:
    return Polled(Record(offset, value), Refused(error_class, reason, at=NOW))


def seen(polled: Polled, state: EntityState | None = None) -> Seen:
    """What a valid request saw with an entity's state (none: a new entity)."""
    assert isinstance(polled.decoded, PredictionRequest)
    return Seen(state if state is not None else EntityState(), dict(polled.decoded.features))


def answer(
    polled: list[Polled],
    serving: ServingModels,
    *,
    logged: dict[str, Prediction] | None = None,
    views: list[Seen] | None = None,
) -> AnsweredBatch:
    """The step over ``polled``; every fresh request sees a new entity and only its own
    features unless ``views`` says otherwise."""
    logged = logged or {}
    if views is None:
        views = [
            seen(p)
            for p in polled
            if isinstance(p.decoded, PredictionRequest) and logged_source(p.record) not in logged
        ]
    return answer_batch(
        polled,
        logged=logged,
        seen=views,
        serving=serving,
        model=MODEL,
        answers_topic=ANSWERS,
        now=NOW,
        clock=lambda: ANSWERED_AT,
    )


def codes(batch: AnsweredBatch) -> list[str | None]:
    return [r.answer.error.code if r.answer.error else None for r in batch.replies]


def ids(batch: AnsweredBatch) -> list[str]:
    return [r.answer.request_id for r in batch.replies]


def earlier_answer(request_id: str, version: str = "1") -> Prediction:
    return Prediction(
        request_id=request_id,
        entity_id="u1",
        prediction=True,
        proba={"False": 0.3, "True": 0.7},
        model=MODEL,
        model_version=version,
        latency_ms=12.0,
    )


def test_every_record_gets_exactly_one_reply_refusals_then_repeats_then_fresh_answers() -> None:
    polled = [
        request(0, "a", 70.0),
        refused(1, b"{", "not_json"),
        request(2, "b", 10.0),
        request(3, "c", 80.0),
        refused(4, b"[]", "not_an_object"),
    ]
    logged = {logged_source(polled[2].record): earlier_answer("b")}
    batch = answer(polled, ServingModels(champion()), logged=logged)
    assert sorted(r.record.offset for r in batch.replies) == [0, 1, 2, 3, 4]
    assert [r.record.offset for r in batch.replies] == [1, 4, 2, 0, 3]
    assert codes(batch) == [INVALID_REQUEST, INVALID_REQUEST, None, None, None]
    assert [r.repeat for r in batch.replies] == [False, False, True, False, False]


@pytest.mark.parametrize(
    ("value", "error_class", "request_id"),
    [
        (b'{"request_id": "r1", "amount": NaN}', "non_finite_number", "r1"),
        (b'{"request_id": "r2", "x": ' + b"[" * 50, "too_deep", "r2"),
        (b'{"entity_id": "u1"}', "invalid_fields", f"{REQUESTS}:0:7"),
        (b"\xff\xfe", "bad_utf8", f"{REQUESTS}:0:7"),
        (None, "empty", f"{REQUESTS}:0:7"),
    ],
)
def test_a_malformed_request_is_answered_invalid_request_under_its_id_when_one_can_be_read(
    value: bytes | None, error_class: str, request_id: str
) -> None:
    batch = answer([refused(7, value, error_class, "why")], ServingModels(champion()))
    (reply,) = batch.replies
    assert reply.answer.request_id == request_id
    assert reply.answer.error is not None
    assert (reply.answer.error.code, reply.answer.error.message) == (
        INVALID_REQUEST,
        f"{error_class}: why",
    )
    assert (reply.answer.model, reply.answer.prediction, reply.topic) == (MODEL, None, ANSWERS)
    assert batch.snapshots == ()  # nothing was asked about an entity


def test_a_refusal_is_logged_and_counted_and_its_latency_runs_to_the_refusal() -> None:
    polled = [Polled(Record(0, b"{"), Refused("not_json", "eof", at=NOW + 0.1))]
    batch = answer(polled, ServingModels(champion()))
    (reply,) = batch.replies
    assert reply.answer.latency_ms == pytest.approx(SENT_MS_AGO + 100.0)
    assert [(e.answer, e.wire) for e in batch.to_log] == [(reply.answer, reply.wire)]
    assert batch.outcomes == {INVALID_REQUEST: 1}


def test_without_a_champion_every_valid_request_is_answered_no_champion() -> None:
    polled = [request(0, "a", 70.0), refused(1, b"{", "not_json"), request(2, "b", 10.0)]
    batch = answer(polled, ServingModels(champion=None, challengers=(champion(4),)))
    assert codes(batch) == [INVALID_REQUEST, NO_CHAMPION, NO_CHAMPION]
    assert ids(batch)[1:] == ["a", "b"]
    no_champion = batch.replies[1].answer
    assert no_champion.error is not None
    assert MODEL in no_champion.error.message
    assert (no_champion.entity_id, no_champion.model_version) == ("u1", None)
    # What each request saw is still kept, for a late label to teach the first model.
    assert [(rid, s.served) for rid, s in batch.snapshots] == [("a", None), ("b", None)]
    assert batch.shadow == ()
    assert batch.outcomes == {INVALID_REQUEST: 1, NO_CHAMPION: 2}


def test_a_request_the_model_raises_on_is_unscorable_and_the_rest_are_answered() -> None:
    polled = [request(0, "a", 70.0), request(1, "b", -5.0), request(2, "c", 10.0)]
    batch = answer(polled, ServingModels(champion()))
    assert codes(batch) == [None, UNSCORABLE, None]
    assert [r.answer.prediction for r in batch.replies] == [True, None, False]
    unscorable = batch.replies[1].answer.error
    assert unscorable is not None
    assert unscorable.message == "ValueError: negative amount"
    assert batch.unscorable == (("b", "ValueError: negative amount"),)
    assert [s.served is None for _, s in batch.snapshots] == [False, True, False]
    assert batch.outcomes == {ANSWERED: 2, UNSCORABLE: 1}


def test_an_answer_no_answer_may_carry_is_unscorable() -> None:
    batch = answer([request(0, "a", NAN_AMOUNT)], ServingModels(champion()))
    (reply,) = batch.replies
    assert reply.answer.error is not None
    assert reply.answer.error.code == UNSCORABLE
    assert reply.answer.error.message.startswith("the model's answer is invalid:")
    assert batch.snapshots[0][1].served is None


def test_the_answer_carries_the_champions_version_and_what_it_scored() -> None:
    state = EntityState()
    apply_event(state, FEATURES, "e1", NOW - 30, {"amount": 20.0})
    polled = [request(0, "a", 70.0)]
    batch = answer(polled, ServingModels(champion(version=7)), views=[seen(polled[0], state)])
    (reply,) = batch.replies
    assert reply.answer.model == MODEL
    assert reply.answer.model_version == "7"
    assert reply.answer.prediction is True
    assert reply.answer.proba == {"False": 0.1, "True": 0.9}
    assert reply.answer.freshness_s == pytest.approx(30.0)
    assert reply.answer.latency_ms == pytest.approx(SENT_MS_AGO + 250.0)
    assert reply.answer.cached is False
    assert reply.wire == encode(reply.answer)
    assert reply.key == b"u1"
    assert batch.snapshots[0][1].served == ServedAnswer(f"{MODEL}@7", True, 0.9)
    assert batch.snapshots[0][1].at == NOW


def test_answers_go_to_the_requests_reply_topic_else_to_the_answers_topic() -> None:
    polled = [
        request(0, "a", 70.0, reply_topic=REPLIES),
        request(1, "b", 70.0),
        refused(2, b'{"request_id": "c", "reply_topic": "shop.replies", "x": NaN}', "nan"),
        request(3, "d", 70.0, reply_topic=REPLIES),
    ]
    logged = {logged_source(polled[3].record): earlier_answer("d")}
    for serving in (ServingModels(champion()), ServingModels()):
        batch = answer(polled, serving, logged=logged)
        assert [(r.answer.request_id, r.topic) for r in batch.replies] == [
            ("c", ANSWERS),  # a refused request's reply topic is not trusted
            ("d", REPLIES),
            ("a", REPLIES),
            ("b", ANSWERS),
        ]


def test_duplicate_request_ids_in_one_batch_are_each_answered_and_each_logged() -> None:
    polled = [request(0, "same", 70.0), request(1, "same", 10.0)]
    batch = answer(polled, ServingModels(champion()))
    assert [(r.answer.request_id, r.answer.prediction) for r in batch.replies] == [
        ("same", True),
        ("same", False),
    ]
    assert [logged_source(e.record) for e in batch.to_log] == [
        f"{REQUESTS}[0]@0",
        f"{REQUESTS}[0]@1",
    ]
    assert [rid for rid, _ in batch.snapshots] == ["same", "same"]
    assert batch.outcomes == {ANSWERED: 2}


def test_a_redelivered_record_gets_its_logged_answer_again_not_logged_or_counted_again() -> None:
    polled = [request(0, "a", 10.0), request(1, "b", 70.0)]
    first = earlier_answer("a", version="1")  # answered by an older champion
    batch = answer(
        polled, ServingModels(champion(version=2)), logged={logged_source(polled[0].record): first}
    )
    resent, fresh = batch.replies
    assert (resent.answer, resent.wire, resent.repeat) == (first, encode(first), True)
    assert fresh.answer.model_version == "2"
    assert [e.answer.request_id for e in batch.to_log] == ["b"]
    assert [rid for rid, _ in batch.snapshots] == ["b"]
    assert batch.outcomes == {ANSWERED: 1, RESENT: 1}
    assert batch.latencies_s == [pytest.approx((SENT_MS_AGO + 250.0) / 1000)]


def test_only_suspected_valid_requests_are_looked_up_and_only_their_own_entry_counts() -> None:
    polled = [
        request(0, "a", 10.0),
        refused(1, b'{"request_id": "b", "x": NaN}', "nan"),
        request(2, "c", 10.0),
        request(3, "a", 70.0, partition=1),
    ]
    window = RedeliveryWindow(size=3)
    window.assigned([(REQUESTS, 0)])
    suspects = window.suspects((p.record.topic, p.record.partition) for p in polled)
    looked_up = suspected_redeliveries(polled, suspects)
    assert [(record.offset, r.request_id) for record, r in looked_up] == [(0, "a"), (2, "c")]
    # The log holds an answer for request id "a" of partition 0: the record on
    # partition 1 reuses the id, so it is answered afresh.
    logged = {logged_source(polled[0].record): earlier_answer("a")}
    assert [r.request_id for _, r in fresh_requests(polled, logged)] == ["c", "a"]
    batch = answer(polled, ServingModels(champion()), logged=logged)
    assert [(r.answer.request_id, r.record.partition, r.repeat) for r in batch.replies] == [
        ("b", 0, False),
        ("a", 0, True),
        ("c", 0, False),
        ("a", 1, False),
    ]


def test_an_answer_another_owner_logged_first_is_sent_instead_as_a_repeat() -> None:
    polled = [request(0, "a", 10.0), request(1, "b", 70.0)]
    batch = answer(polled, ServingModels(champion(version=2)))
    first = earlier_answer("b", version="1")
    taken = batch.taken_over({logged_source(polled[1].record): first})
    assert [r.answer for r in taken.replies] == [batch.replies[0].answer, first]
    assert taken.replies[1].wire == encode(first)
    assert taken.outcomes == {ANSWERED: 1, RESENT: 1}
    assert batch.outcomes == {ANSWERED: 2}  # the batch itself is a value: unchanged
    assert batch.taken_over({}) is batch


def test_each_fresh_request_must_come_with_what_it_saw() -> None:
    polled = [request(0, "a", 10.0), request(1, "b", 70.0)]
    with pytest.raises(ValueError, match="zip"):
        answer(polled, ServingModels(champion()), views=[seen(polled[0])])


def test_challengers_are_scored_in_shadow_on_the_same_vectors() -> None:
    polled = [request(0, "a", 70.0), request(1, "b", -1.0), request(2, "c", 10.0)]
    serving = ServingModels(champion(version=3), (champion(version=4, flip=True),))
    batch = answer(polled, serving)
    assert [(s.request_id, s.version, s.prediction) for s in batch.shadow] == [
        ("a", 3, True),
        ("c", 3, False),
        ("a", 4, False),
        ("c", 4, True),
    ]
    assert [r.answer.model_version for r in batch.replies] == ["3", None, "3"]
    assert answer(polled, ServingModels(champion())).shadow == ()


def cache_check(polled: Polled, hit: Entry | None, keep: bool) -> Seen:
    assert isinstance(polled.decoded, PredictionRequest)
    ask = Ask(polled.decoded.entity_id, 5, f"digest-{polled.record.offset}")
    return Seen(EntityState(), dict(polled.decoded.features), CacheCheck(ask, hit, keep))


def test_a_cached_answer_is_served_unscored_and_computed_ones_worth_keeping_are_kept() -> None:
    model = champion(version=3)
    polled = [request(0, "a", 70.0), request(1, "b", 70.0), request(2, "c", 10.0)]
    hit = Entry(3, model.artifact, 5, "digest-0", Scored(False, {"False": 0.6, "True": 0.4}), 9.0)
    views = [
        cache_check(polled[0], hit, keep=True),
        cache_check(polled[1], None, keep=True),
        cache_check(polled[2], None, keep=False),
    ]
    batch = answer(polled, ServingModels(model), views=views)
    cached, computed, unkept = batch.replies
    assert (cached.answer.prediction, cached.answer.cached) == (False, True)
    assert cached.answer.proba == {"False": 0.6, "True": 0.4}
    assert cached.answer.model_version == "3"
    assert (computed.answer.prediction, computed.answer.cached) == (True, False)
    assert len(model.estimator.scored) == 2  # the hit was not scored again
    assert [(ask.digest, s.prediction) for ask, s in batch.to_cache] == [("digest-1", True)]
    assert [e.cached for e in batch.to_log] == [hit, None, None]
    assert batch.snapshots[0][1].served == ServedAnswer(f"{MODEL}@3", False, 0.4)
    assert (unkept.answer.prediction, sum(r.answer.cached for r in batch.replies)) == (False, 1)


def test_an_unscorable_miss_is_not_kept_in_the_cache() -> None:
    polled = [request(0, "a", -1.0)]
    batch = answer(
        polled, ServingModels(champion()), views=[cache_check(polled[0], None, keep=True)]
    )
    assert codes(batch) == [UNSCORABLE]
    assert batch.to_cache == ()


def test_a_replys_key_is_its_entity_else_its_request_id() -> None:
    polled = [request(0, "a", 70.0, entity_id="u9"), refused(1, b'{"request_id": "r"}', "x")]
    batch = answer(polled, ServingModels(champion()))
    assert sorted(r.key for r in batch.replies) == [b"r", b"u9"]
    assert orjson.loads(batch.replies[0].wire)["request_id"] == "r"


@pytest.mark.parametrize(
    "answer",
    [
        earlier_answer("r"),
        Prediction(request_id="r", prediction=3, proba={"1": 0.1, "3": 0.9}, cached=True),
        Prediction(
            request_id="r",
            entity_id="u1",
            prediction="gold",
            proba={"gold": 0.5, "silver": 0.25, "tin": 0.25},
            model=MODEL,
            model_version="2",
            latency_ms=0.0,
            freshness_s=1e-06,
            feature_set="fs",
        ),
        Prediction(request_id="r", prediction=-2.5e18, latency_ms=1.5),
        Prediction(request_id="r", error={"code": UNSCORABLE, "message": 'é "quoted"'}),
    ],
)
def test_an_answers_wire_form_is_the_contracts_encoding_byte_for_byte(answer: Prediction) -> None:
    assert wire(answer) == encode(answer)
    assert Prediction.model_validate_json(wire(answer)) == answer
