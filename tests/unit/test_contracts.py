from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from eddy.services.config.settings import Settings
from eddy.streams.messages import schema_files
from eddy.streams.messages.contracts import (
    DriftAlert,
    DriftEvidence,
    DriftWindow,
    Event,
    Label,
    Prediction,
    PredictionError,
)
from eddy.streams.messages.validation import (
    MAX_KEYS,
    MAX_MESSAGE_BYTES,
    InvalidMessage,
    decode,
    encode,
)
from eddy.streams.transport.topics import Topic, message_key, spec_for, topic_specs

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VALID_EVENT = {
    "event_id": "e1",
    "entity_id": "u1",
    "event_time": "2026-01-01T00:00:00Z",
    "features": {"amount": 3.5, "n": 2, "country": "NL", "mobile": True, "missing": None},
    "label": 1,
}


def _event(**changes: object) -> bytes:
    return orjson.dumps({**VALID_EVENT, **changes})


def test_schema_files_match_the_models() -> None:
    assert schema_files.stale() == [], "run `eddy schemas --write` and commit the result"


def test_a_valid_event_round_trips_unchanged() -> None:
    event = decode(Event, _event(), now=NOW)
    assert decode(Event, encode(event), now=NOW) == event
    assert event.features["n"] == 2
    assert isinstance(event.features["n"], int)
    assert event.features["mobile"] is True


# The malformed corpus: each entry must be rejected with its own error class.
MALFORMED: list[tuple[str, bytes | None, str]] = [
    ("no value", None, "empty"),
    ("bad utf-8", b'{"event_id": "\xff\xfe"}', "bad_utf8"),
    ("bad json", b'{"event_id": ', "bad_json"),
    ("empty bytes", b"", "empty"),
    ("NaN literal", _event().replace(b"3.5", b"NaN"), "non_finite_number"),
    ("-Infinity literal", _event().replace(b"3.5", b"-Infinity"), "non_finite_number"),
    ("overflowing number", _event().replace(b"3.5", b"1e309"), "non_finite_number"),
    ("duplicate key", b'{"event_id": "a", "event_id": "b"}', "duplicate_key"),
    ("deep nesting", b'{"features": ' + b"[" * 50 + b"]" * 50 + b"}", "too_deep"),
    ("20,000 keys", _event(features={f"k{i}": i for i in range(20_000)}), "too_many_keys"),
    ("epoch 0", _event(event_time="1970-01-01T00:00:00Z"), "event_time_out_of_range"),
    ("a day ahead", _event(event_time="2026-01-02T00:00:00Z"), "event_time_out_of_range"),
    ("array", b"[1, 2]", "not_an_object"),
    ("string", b'"event"', "not_an_object"),
    ("future schema", _event(schema_version=2), "unknown_schema_version"),
    ("missing ids", orjson.dumps({"features": {}}), "invalid_fields"),
    ("empty id", _event(event_id=""), "invalid_fields"),
    ("id of wrong type", _event(entity_id=7), "invalid_fields"),
    ("naive time", _event(event_time="2026-01-01T00:00:00"), "invalid_fields"),
    ("nested feature", _event(features={"x": {"y": 1}}), "invalid_fields"),
    ("unknown field", _event(colour="red"), "invalid_fields"),
    ("huge payload", _event(pad="x" * MAX_MESSAGE_BYTES), "too_large"),
]


@pytest.mark.parametrize(
    ("raw", "error_class"),
    [(r, e) for _, r, e in MALFORMED],
    ids=[name for name, _, _ in MALFORMED],
)
def test_malformed_events_are_rejected_with_a_reason(raw: bytes | None, error_class: str) -> None:
    with pytest.raises(InvalidMessage) as raised:
        decode(Event, raw, now=NOW)
    assert raised.value.error_class == error_class
    assert raised.value.reason


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    event = decode(Event, _event(features={"note": "[[[[[[[[[[{{{{{{{{{{"}), now=NOW)
    assert event.features["note"] == "[[[[[[[[[[{{{{{{{{{{"


def test_reasons_name_the_offending_fields() -> None:
    with pytest.raises(InvalidMessage) as raised:
        decode(Event, _event(entity_id=7, features={"x": [1]}), now=NOW)
    assert "entity_id" in raised.value.reason
    assert "features.x" in raised.value.reason


def test_a_label_names_exactly_one_thing_it_labels() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Label(label=1, event_time=NOW)
    with pytest.raises(ValueError, match="exactly one"):
        Label(event_id="e", request_id="r", label=1, event_time=NOW)
    assert Label(event_id="e", label=True, event_time=NOW).label is True


def test_a_prediction_carries_an_answer_or_an_error() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Prediction(request_id="r")
    error = PredictionError(code="no_champion", message="no model is promoted yet")
    assert Prediction(request_id="r", error=error).error == error
    assert Prediction(request_id="r", prediction=0.7, model_version="3").prediction == 0.7


def test_topic_names_carry_the_prefix_and_updates_are_compacted() -> None:
    specs = {spec.topic: spec for spec in topic_specs(prefix="acme.", partitions=6)}
    assert set(specs) == set(Topic)
    assert specs[Topic.EVENTS].name == "acme.events"
    assert specs[Topic.EVENTS].partitions == 6
    assert specs[Topic.MODEL_UPDATES].config["cleanup.policy"] == "compact"
    assert specs[Topic.DRIFT_ALERTS].partitions == 1
    assert specs[Topic.DEAD_LETTER].contract is None


def test_messages_are_keyed_by_entity_or_model() -> None:
    event = decode(Event, _event(), now=NOW)
    assert message_key(spec_for(Topic.EVENTS, prefix="", partitions=1), event) == b"u1"
    label = Label(event_id="e1", entity_id="u1", label=0, event_time=NOW)
    assert message_key(spec_for(Topic.LABELS, prefix="", partitions=1), label) == b"u1"


OUT_OF_RANGE = r"(less|greater) than or equal"


@pytest.mark.parametrize("value", ["1e300", "-1e20", "1.9e19"])
def test_feature_and_label_numbers_beyond_two_to_the_64_are_refused(value: str) -> None:
    event = '{"event_id":"e","entity_id":"a","event_time":"2026-01-01T00:00:00Z","features":'
    with pytest.raises(InvalidMessage, match=OUT_OF_RANGE):
        decode(Event, f'{event}{{"x":{value}}}}}'.encode(), now=datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(InvalidMessage, match=OUT_OF_RANGE):
        decode(
            Label,
            f'{{"event_id":"e","label":{value},"event_time":"2026-01-01T00:00:00Z"}}'.encode(),
            now=datetime(2026, 1, 2, tzinfo=UTC),
        )


def test_numbers_up_to_two_to_the_64_are_kept() -> None:
    raw = (
        b'{"event_id":"e","entity_id":"a","event_time":"2026-01-01T00:00:00Z",'
        b'"features":{"x":1.8e19,"y":-1.8e19,"z":5e-324}}'
    )
    event = decode(Event, raw, now=datetime(2026, 1, 2, tzinfo=UTC))
    assert event.features == {"x": 1.8e19, "y": -1.8e19, "z": 5e-324}


@pytest.mark.parametrize("action", ["retrain", "warn", "investigate", "none"])
def test_an_alert_asks_for_one_of_the_known_actions(action: str) -> None:
    alert = {
        "alert_id": "a1",
        "model": "m",
        "kind": "concept",
        "detector": "adwin",
        "statistic": 1.0,
        "threshold": 0.5,
        "action": action,
    }
    assert decode(DriftAlert, orjson.dumps(alert)).action == action
    with pytest.raises(InvalidMessage, match="action"):
        decode(DriftAlert, orjson.dumps(alert | {"action": action + "x"}))


def test_an_alert_naming_every_feature_a_monitor_may_track_stays_within_the_key_bound() -> None:
    """The largest alert Eddy writes: every tracked feature drifted, on many partitions."""
    evidence = [
        DriftEvidence(feature=f"feature_{i}", test="psi", statistic=1.0, threshold=0.25)
        for i in range(Settings.model_fields["drift_max_features"].default)
    ]
    alert = DriftAlert(
        alert_id="m:data:1",
        model="m",
        kind="data",
        detector="psi",
        statistic=1.0,
        threshold=0.25,
        window=DriftWindow(offsets={f"training-examples[{p}]": (0, 9) for p in range(64)}),
        evidence=evidence,
        metrics={f"metric_{i}": 0.5 for i in range(32)},
    )
    assert decode(DriftAlert, encode(alert)) == alert


def test_the_key_bound_holds_on_the_exact_parser_too() -> None:
    """A lone surrogate sends a document past orjson to the standard library's parser."""
    keys = ", ".join(f'"f{i}": 1' for i in range(MAX_KEYS + 1))
    raw = ('{"event_id": "\\ud800", "entity_id": "u", "features": {' + keys + "}}").encode()
    with pytest.raises(InvalidMessage, match="too_many_keys"):
        decode(Event, raw)
