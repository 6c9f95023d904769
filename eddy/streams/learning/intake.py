"""Training examples as the learner takes them: Eddy's own records on a trusted fast path.

Training examples are Eddy's output (the feature worker's, or the learner's own late-label
joins), so nearly every one arrives exactly as :func:`~eddy.streams.messages.validation.encode`
wrote it. Validating each through the contract's pydantic model, and building that model,
costs more than learning from it; a learner process spent about as long decoding as
learning. :func:`decode_example` checks such a record directly: it must be in the encoder's
own form (:func:`~eddy.streams.messages.validation.canonical_document`) and every field
plainly what the contract accepts, with the same values. Anything else, or anything it
is not sure of, goes through the full validator, which accepts it as usual or refuses it
with its reason (for the dead letter): the fast path never refuses a record, and never
accepts one the full validator would refuse.

>>> from datetime import UTC, datetime
>>> from eddy.streams.messages.contracts import SourceOffset, TrainingExample
>>> from eddy.streams.messages.validation import encode
>>> raw = encode(TrainingExample(
...     example_id="ev-1", entity_id="u1", event_time=datetime(2026, 1, 1, tzinfo=UTC),
...     label=True, features={"amount": 12.5, "plan": "pro"}, feature_set="fs",
...     source=SourceOffset(topic="events", partition=0, offset=7),
... ))
>>> decode_example(raw)
Example(example_id='ev-1', event_time=1767225600.0, label=True, features={'amount': 12.5, \
'plan': 'pro'}, feature_set='fs', source_topic='events')
>>> decode_example(raw.replace(b'"example_id":"ev-1"', b'"example_id":""'))
Traceback (most recent call last):
...
eddy.streams.messages.validation.InvalidMessage: invalid_fields: example_id: String should have ...
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from eddy.streams.messages.contracts import (
    MAX_FEATURES,
    MAX_ID_LENGTH,
    MAX_MAGNITUDE,
    SCHEMA_VERSION,
    FeatureValue,
    LabelValue,
    TrainingExample,
)
from eddy.streams.messages.validation import (
    DEFAULT_MAX_FUTURE,
    EARLIEST_EVENT_TIME,
    canonical_document,
    decode,
)

REQUIRED = frozenset(
    {"example_id", "entity_id", "event_time", "label", "features", "feature_set", "source"}
)
WITH_VERSION = REQUIRED | {"schema_version"}
SOURCE = frozenset({"topic", "partition", "offset"})
# Times in the encoder's form (RFC 3339, seconds, at most microseconds, an offset), which
# datetime.fromisoformat and the contract's parser read alike; any other spelling takes
# the full path.
ENCODED_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
# Feature strings the fast path takes: the contract allows longer ones, which the full
# validator checks.
SHORT_TEXT = MAX_ID_LENGTH
_NUMBERS = frozenset({float, int, bool})


class Example(NamedTuple):
    """What the learner uses of a :class:`~eddy.streams.messages.contracts.TrainingExample`."""

    example_id: str
    event_time: float  # epoch seconds
    label: LabelValue
    features: dict[str, FeatureValue]
    feature_set: str
    source_topic: str

    @classmethod
    def of(cls, message: TrainingExample) -> Example:
        """What the learner uses of a validated training example."""
        return cls(
            message.example_id,
            message.event_time.timestamp(),
            message.label,
            message.features,
            message.feature_set,
            message.source.topic,
        )


def decode_example(
    raw: bytes | None, *, now: datetime | None = None, max_future: timedelta = DEFAULT_MAX_FUTURE
) -> Example:
    """``raw`` as an :class:`Example`, or :class:`~eddy.streams.messages.validation.InvalidMessage`
    exactly as :func:`~eddy.streams.messages.validation.decode` raises it."""
    fast = _trusted(raw, now, max_future)
    if fast is not None:
        return fast
    return Example.of(decode(TrainingExample, raw, now=now, max_future=max_future))


def _trusted(raw: bytes | None, now: datetime | None, max_future: timedelta) -> Example | None:
    """The example when ``raw`` is plainly valid; None when the full validator must judge."""
    document = canonical_document(raw)
    if document is None:
        return None
    keys = document.keys()
    if keys != REQUIRED and (keys != WITH_VERSION or _inexact(document["schema_version"])):
        return None
    source, features = document["source"], document["features"]
    if (
        not _identifier(document["example_id"])
        or not _identifier(document["entity_id"])
        or type(document["feature_set"]) is not str
        or not _label(document["label"])
        or type(source) is not dict
        or source.keys() != SOURCE
        or type(source["topic"]) is not str
        or type(source["partition"]) is not int
        or type(source["offset"]) is not int
        or not _features(features)
    ):
        return None
    event_time = _event_time(document["event_time"], now, max_future)
    if event_time is None:
        return None
    return Example(
        document["example_id"],
        event_time.timestamp(),
        document["label"],
        features,
        document["feature_set"],
        source["topic"],
    )


def _inexact(version: Any) -> bool:
    return type(version) is not int or version != SCHEMA_VERSION


def _identifier(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH


def _label(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return _within_magnitude(value)
    return kind is bool or kind is int or _identifier(value)


def _features(features: Any) -> bool:
    """Plain names and values: numbers within the contract's magnitude, short strings,
    nulls. Checked a column at a time, so a wide vector costs little more than a narrow one."""
    if type(features) is not dict or len(features) > MAX_FEATURES:
        return False
    if not features:
        return True
    if "" in features or max(map(len, features)) > MAX_ID_LENGTH:
        return False
    values = features.values()
    kinds = set(map(type, values))
    if kinds <= _NUMBERS:
        return float not in kinds or (
            min(values) >= -MAX_MAGNITUDE and max(values) <= MAX_MAGNITUDE
        )
    return all(_feature_value(value) for value in values)


def _feature_value(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return _within_magnitude(value)
    if kind is str:
        return len(value) <= SHORT_TEXT
    return value is None or kind is int or kind is bool


def _within_magnitude(value: float) -> bool:
    return -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE


def _event_time(value: Any, now: datetime | None, max_future: timedelta) -> datetime | None:
    """The time when it is in the encoder's form and within the accepted span (the full
    validator's bounds); None otherwise."""
    if type(value) is not str or ENCODED_TIME.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed < EARLIEST_EVENT_TIME or parsed > (now or datetime.now(UTC)) + max_future:
        return None
    return parsed
