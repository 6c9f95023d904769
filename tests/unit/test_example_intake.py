"""The learner's trusted fast path for training examples agrees with the full validator.

Property: for any record, :func:`decode_example` returns what the full validator makes of
it (the same fields, the same values and types), or raises the same refusal (error class
and reason) that becomes the dead letter. The fast path may only ever decline to judge.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eddy.streams.learning import intake
from eddy.streams.learning.intake import Example, decode_example
from eddy.streams.messages.contracts import MAX_FEATURES, SourceOffset, TrainingExample
from eddy.streams.messages.validation import InvalidMessage, canonical_document, decode, encode

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def example(**changes: Any) -> TrainingExample:
    fields: dict[str, Any] = {
        "example_id": "ev-1",
        "entity_id": "u1",
        "event_time": datetime(2026, 1, 1, 12, 30, tzinfo=UTC),
        "label": True,
        "features": {"amount": 12.5, "count": 3, "mobile": False, "plan": "pro", "gone": None},
        "feature_set": "fs-1",
        "source": SourceOffset(topic="events", partition=2, offset=41),
    }
    return TrainingExample(**(fields | changes))


def full(raw: bytes | None) -> Example | InvalidMessage:
    """What the full validator makes of ``raw``, as the learner takes it."""
    try:
        message = decode(TrainingExample, raw, now=NOW)
    except InvalidMessage as exc:
        return exc
    return Example.of(message)


def fast(raw: bytes | None) -> Example | InvalidMessage:
    try:
        return decode_example(raw, now=NOW)
    except InvalidMessage as exc:
        return exc


def assert_agrees(raw: bytes | None) -> None:
    expected, got = full(raw), fast(raw)
    if isinstance(expected, InvalidMessage):
        assert isinstance(got, InvalidMessage), raw
        assert (got.error_class, got.reason) == (expected.error_class, expected.reason), raw
        return
    assert got == expected, raw
    assert isinstance(got, Example)
    assert type(got.label) is type(expected.label), raw
    assert [type(v) for v in got.features.values()] == [
        type(v) for v in expected.features.values()
    ], raw


def test_eddys_own_examples_skip_the_full_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: Any, **__: Any) -> None:
        raise AssertionError("the full validator was asked")

    monkeypatch.setattr(intake, "decode", refused)
    for record in (
        example(),
        example(label=0.25, features={}),
        example(label="spam", event_time=datetime(2026, 1, 1, 13, 0, 0, 250, tzinfo=UTC)),
        example(event_time=datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=-5)))),
        example(features={f"f{i}": float(i) for i in range(MAX_FEATURES)}),
    ):
        got = decode_example(encode(record), now=NOW)
        assert got == full(encode(record))


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"\xff",
        b"[]",
        b'{"example_id": "ev-1"}',
        # not in the encoder's form: whitespace, a repeated key, another number spelling
        encode(example()).replace(b'"label":true', b'"label": true'),
        encode(example()).replace(b'"label":true', b'"label":false,"label":true'),
        encode(example()).replace(b'"amount":12.5', b'"amount":1.25e1'),
        # refused by the contract
        encode(example()).replace(b'"example_id":"ev-1"', b'"example_id":""'),
        encode(example()).replace(b'"label":true', b'"label":null'),
        encode(example()).replace(b'"feature_set":"fs-1"', b'"feature_set":"fs-1","x":1'),
        encode(example()).replace(b'"schema_version":1', b'"schema_version":2'),
        encode(example()).replace(b'"schema_version":1', b'"schema_version":true'),
        encode(example()).replace(b'"partition":2', b'"partition":true'),
        encode(example()).replace(b'"partition":2', b'"partition":"2"'),
        encode(example()).replace(b'"amount":12.5', b'"amount":1e300'),
        encode(example()).replace(b'"amount":12.5', b'"amount":[1]'),
        encode(example()).replace(b'"amount":12.5', b'"":1'),
        encode(example()).replace(b'"plan":"pro"', b'"plan":"' + b"p" * 5000 + b'"'),
        encode(example()).replace(b'"label":true', b'"label":1e300'),
        encode(example()).replace(b"12:30:00Z", b"12:30:00"),
        encode(example()).replace(b"2026-01-01T12:30:00Z", b"1999-12-31T23:59:59Z"),
        encode(example()).replace(b"2026-01-01T12:30:00Z", b"2026-06-01T00:05:01Z"),
        encode(example()).replace(b"2026-01-01T12:30:00Z", b"2026-02-30T00:00:00Z"),
        encode(example()).replace(b"2026-01-01T12:30:00Z", b"2026-01-01T12:30:00.1234567Z"),
        encode(example()).replace(b"2026-01-01T12:30:00Z", b"2026-01-01 12:30:00Z"),
        encode(example()).replace(b'"source":{', b'"source":{"extra":1,'),
        # accepted, through the full validator
        encode(example()).replace(b'"plan":"pro"', b'"plan":"' + b"p" * 4000 + b'"'),
        encode(example()).replace(b"2026-01-01T12:30:00Z", b"2026-06-01T00:05:00Z"),
        encode(example()).replace(b'"schema_version":1,', b""),
    ],
)
def test_every_other_record_is_judged_as_the_full_validator_judges_it(raw: bytes | None) -> None:
    assert_agrees(raw)


def test_a_record_in_the_encoders_form_that_the_contract_refuses_is_refused() -> None:
    raw = orjson.dumps({**orjson.loads(encode(example())), "label": None})
    assert canonical_document(raw) is not None
    refused = fast(raw)
    assert isinstance(refused, InvalidMessage)
    assert refused.error_class == "invalid_fields"


feature_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)
labels = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
    st.none(),
)
texts = st.text(max_size=300)
times = st.one_of(
    st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2026, 7, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ).map(lambda t: t.isoformat().replace("+00:00", "Z")),
    texts,
)


@PROPERTY
@given(
    example_id=texts,
    label=labels,
    features=st.dictionaries(st.text(max_size=300), feature_values, max_size=8),
    event_time=times,
    partition=st.one_of(st.integers(0, 10), st.booleans(), st.text(max_size=3)),
    extra=st.dictionaries(st.sampled_from(["schema_version", "x"]), feature_values, max_size=1),
)
def test_any_record_in_the_encoders_form_is_judged_as_the_full_validator_judges_it(
    example_id: str,
    label: Any,
    features: dict[str, Any],
    event_time: str,
    partition: Any,
    extra: dict[str, Any],
) -> None:
    document = {
        "example_id": example_id,
        "entity_id": "u1",
        "event_time": event_time,
        "label": label,
        "features": features,
        "feature_set": "fs",
        "source": {"topic": "events", "partition": partition, "offset": 1},
        **extra,
    }
    assert_agrees(orjson.dumps(document))


def test_the_learner_worker_decoder_hands_on_the_example_with_its_ids_digest() -> None:
    """The reader process computes the dedup memory's digest of each example id, so the
    learning process does not: it must be the digest the memory keeps of that id."""
    from types import SimpleNamespace

    from eddy.services.workers.learner_intake import learner_decoders
    from eddy.streams.learning.models import label_rule
    from eddy.streams.store.recent_ids import RecentIds, digest

    decoders = learner_decoders(("examples", "labels", "served"), label_rule("logistic"))
    ids = ["ev-1", "ev-2", "ev-1"]
    decoded = [
        decoders["examples"](SimpleNamespace(value=encode(example(example_id=i)))) for i in ids
    ]
    assert [d[0] for d in decoded] == [decode_example(encode(example(example_id=i))) for i in ids]
    assert [d[1] for d in decoded] == [digest(i) for i in ids]
    by_digest, by_id = RecentIds(limit=10), RecentIds(limit=10)
    assert (
        by_digest.add_digests([d for _, d in decoded])
        == [by_id.add(i) for i in ids]
        == [
            True,
            True,
            False,
        ]
    )
