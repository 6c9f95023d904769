"""Generated hostile bytes, headers and keys against every decoder and per-batch function.

Property: whatever arrives, a decoder either returns a valid message or raises
:class:`~eddy.streams.messages.validation.InvalidMessage` (never anything else, which would end a
worker), and the pure per-batch functions of the feature pipeline and the predictor turn
every record into exactly one outcome. Examples are bounded so the suite stays fast; the
chaos suite's full mode runs the long fuzz against the real services.
"""

from __future__ import annotations

import json
import math
import string
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eddy.services.serving.answers import salvaged_request_id
from eddy.services.serving.scoring import Loaded, Unscorable, score_each
from eddy.streams.dead_letters.letter import RawRecord
from eddy.streams.features.compute import EntityState
from eddy.streams.features.definitions import FEATURES
from eddy.streams.features.pipeline import decode_batch, fold_events
from eddy.streams.learning.models import make_model, numeric
from eddy.streams.messages.contracts import (
    ControlCommand,
    DriftAlert,
    Event,
    Label,
    Prediction,
    PredictionRequest,
    TrainingExample,
)
from eddy.streams.messages.validation import InvalidMessage, decode, encode
from eddy.streams.store.online import StoredState
from eddy.streams.transport.topics import reply_topic_refusal

pytestmark = pytest.mark.unit

CONTRACTS = (Event, Label, TrainingExample, PredictionRequest, Prediction, DriftAlert)
CONTRACTS += (ControlCommand,)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values a producer can write: every scalar edge, nested a little.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-300, max_value=1e-300),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
feature_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
names = st.text(alphabet=string.ascii_letters + "_=.", min_size=1, max_size=12)
header_values = st.one_of(st.none(), st.binary(max_size=16))
headers = st.lists(st.tuples(st.text(max_size=12), header_values), max_size=4)


def event_document(features: dict[str, Any], label: Any, event_id: str) -> bytes:
    body: dict[str, Any] = {
        "event_id": event_id,
        "entity_id": "u1",
        "event_time": (NOW - timedelta(seconds=len(event_id))).isoformat(),
        "features": features,
    }
    if label is not None:
        body["label"] = label
    return orjson.dumps(body)


def record(value: bytes | None, key: bytes | None, hdrs: Any, offset: int = 0) -> RawRecord:
    return RawRecord.of(_Message(value, key, hdrs, offset))


class _Message:
    """A consumer record as any Kafka client hands it over."""

    def __init__(self, value: bytes | None, key: bytes | None, hdrs: Any, offset: int) -> None:
        self.topic, self.partition, self.offset = "events", 0, offset
        self.value, self.key, self.headers, self.timestamp = value, key, hdrs, 0


def only_invalid_message(contract: type[Any], raw: bytes | None) -> None:
    try:
        decode(contract, raw, now=NOW)
    except InvalidMessage:
        return


@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes_decode_or_raise_invalid_message(raw: bytes) -> None:
    for contract in CONTRACTS:
        only_invalid_message(contract, raw)


@FUZZ
@given(document=json_values, depth=st.integers(min_value=0, max_value=40))
def test_any_json_document_decodes_or_raises_invalid_message(document: Any, depth: int) -> None:
    text = json.dumps(document).encode()  # the standard library writes any integer
    nested = b"[" * depth + text + b"]" * depth
    for contract in CONTRACTS:
        only_invalid_message(contract, text)
        only_invalid_message(contract, nested)


@FUZZ
@given(
    keys=st.lists(names, min_size=1, max_size=30),
    value=st.integers(min_value=-(2**80), max_value=2**80),
)
def test_repeated_keys_and_big_integers_are_refused_by_name(keys: list[str], value: int) -> None:
    members = ", ".join(f'"{k}": {value}' for k in [*keys, keys[0]])
    raw = ('{"request_id": "r", "entity_id": "u", "features": {' + members + "}}").encode()
    with pytest.raises(InvalidMessage) as refused:
        decode(PredictionRequest, raw)
    assert refused.value.error_class in {
        "duplicate_key",
        "number_out_of_range",
        "invalid_fields",
    }


@FUZZ
@given(
    batch=st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.binary(max_size=80),
                st.builds(
                    event_document,
                    st.dictionaries(names, feature_values, max_size=6),
                    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False)),
                    st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8),
                ),
            ),
            st.one_of(st.none(), st.just(b"u1"), st.binary(max_size=8)),
            headers,
        ),
        max_size=12,
    )
)
def test_a_feature_batch_gives_every_record_one_outcome_and_encodable_examples(
    batch: list[tuple[bytes | None, bytes | None, Any]],
) -> None:
    records = [record(v, k, h, i) for i, (v, k, h) in enumerate(batch)]
    events, letters = decode_batch(records, NOW, timedelta(minutes=5))
    assert len(events) + len(letters) == len(records)
    loaded = {e.entity_id: StoredState(0, EntityState()) for _, e in events}
    folded = fold_events(events, loaded, FEATURES, snapshots=True)
    for example in folded.examples:
        assert decode(TrainingExample, encode(example)) == example
    for _, snapshot in folded.snapshots:
        for value in snapshot.features.values():
            assert not isinstance(value, float) or math.isfinite(value)


@FUZZ
@given(raw=st.binary(max_size=200), error_class=st.text(max_size=20))
def test_salvaging_a_request_id_never_raises(raw: bytes, error_class: str) -> None:
    salvaged = salvaged_request_id(raw, error_class)
    assert salvaged is None or 0 < len(salvaged) <= 256


@FUZZ
@given(name=st.text(max_size=300), pattern=st.sampled_from([r"^.*$", r"^[a-z.]+$"]))
def test_any_reply_topic_is_judged_without_raising(name: str, pattern: str) -> None:
    refusal = reply_topic_refusal(name, prefix="eddy.", pattern=pattern)
    if name.startswith("_") or name == "eddy.control":
        assert refusal is not None


@FUZZ
@given(vectors=st.lists(st.dictionaries(names, feature_values, max_size=5), max_size=8))
def test_scoring_any_valid_features_answers_each_or_names_why_not(
    vectors: list[dict[str, Any]],
) -> None:
    model = make_model("logistic")
    model.learn(numeric({"amount": 1.0}), True)
    model.learn(numeric({"amount": -1.0}), False)
    results = score_each(Loaded("m", 1, "river", model), vectors)
    assert len(results) == len(vectors)
    for result in results:
        assert isinstance(result, Unscorable) or all(
            math.isfinite(p) for p in result.proba.values()
        )
