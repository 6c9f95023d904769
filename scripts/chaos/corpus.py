"""The malformed corpus: every kind of bad input the design names, for events and requests,
and a few bad training examples and labels for the learner.

Design §5: bad UTF-8, bad JSON, wrong types, NaN and infinities, huge payloads, unknown
schema versions, missing ids; plus what Eddy's validation adds (tombstones, nesting,
duplicate keys, times out of range or without a zone, unknown fields, a key that is not
the entity). Each entry names the error class the workers must dead-letter it with.

>>> from datetime import UTC, datetime
>>> events = malformed_events("flood-u0", datetime(2026, 1, 1, tzinfo=UTC), serial=0)
>>> len(events) >= 20, len({e.name for e in events}) == len(events)
(True, True)
>>> requests = malformed_requests("flood-u0", serial=0)
>>> sorted({r.answer_id is None for r in requests})
[False, True]
>>> sorted({topic.value for topic, _ in malformed_learning(serial=0)})
['labels', 'training-examples']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from eddy.streams.messages.validation import MAX_DEPTH, MAX_MESSAGE_BYTES
from eddy.streams.transport.topics import Topic

OVERSIZE = MAX_MESSAGE_BYTES + 1024
LONG_STRING = 5_000  # longer than a feature string may be (4096)


@dataclass(frozen=True)
class Malformed:
    """One bad record: its key and bytes, and the error class it must be refused with.

    ``answer_id`` (requests only): the request id the error answer carries, when the
    request is readable enough to have one; otherwise the answer is filed under
    ``topic:partition:offset``.
    """

    name: str
    error_class: str
    key: bytes | None
    value: bytes | None
    answer_id: str | None = None


def _replace(document: bytes, old: bytes, new: bytes) -> bytes:
    if old not in document:
        raise ValueError(f"{old!r} not in {document!r}")
    return document.replace(old, new)


def malformed_events(entity: str, now: datetime, serial: int) -> list[Malformed]:
    """Bad events for ``entity`` (keyed by it unless the fault is the key)."""
    key = entity.encode()
    good: dict[str, Any] = {
        "event_id": f"{entity}-bad-{serial}",
        "entity_id": entity,
        "event_time": now.isoformat(),
        "features": {"amount": 1.5, "country": "A"},
    }

    def with_(**changes: Any) -> bytes:
        return orjson.dumps({**good, **changes})

    amount = with_()
    nested = b"[" * (MAX_DEPTH + 4) + b"]" * (MAX_DEPTH + 4)
    return [
        Malformed("bad utf-8", "bad_utf8", key, b'{"event_id": "\xc3\x28"}'),
        Malformed("empty bytes", "empty", key, b""),
        Malformed("tombstone", "empty", key, None),
        Malformed("bad json", "bad_json", key, amount[:-7]),
        Malformed("array", "not_an_object", key, b"[1, 2]"),
        Malformed("number", "not_an_object", key, b"42"),
        Malformed("missing ids", "invalid_fields", key, orjson.dumps({"features": {}})),
        Malformed("empty id", "invalid_fields", key, with_(event_id="")),
        Malformed("id of wrong type", "invalid_fields", key, with_(entity_id=12)),
        Malformed("features not an object", "invalid_fields", key, with_(features=[1, 2])),
        Malformed("nested feature", "invalid_fields", key, with_(features={"a": {"b": 1}})),
        Malformed(
            "feature string too long",
            "invalid_fields",
            key,
            with_(features={"note": "x" * LONG_STRING}),
        ),
        Malformed("NaN", "non_finite_number", key, _replace(amount, b"1.5", b"NaN")),
        Malformed("Infinity", "non_finite_number", key, _replace(amount, b"1.5", b"Infinity")),
        Malformed("-Infinity", "non_finite_number", key, _replace(amount, b"1.5", b"-Infinity")),
        Malformed(
            "overflowing number", "non_finite_number", key, _replace(amount, b"1.5", b"1e309")
        ),
        Malformed(
            "epoch 0", "event_time_out_of_range", key, with_(event_time="1970-01-01T00:00:00Z")
        ),
        Malformed(
            "a day ahead",
            "event_time_out_of_range",
            key,
            with_(event_time=(now + timedelta(days=1)).isoformat()),
        ),
        Malformed(
            "time without zone", "invalid_fields", key, with_(event_time="2026-01-01T00:00:00")
        ),
        Malformed("huge payload", "too_large", key, with_(padding="x" * OVERSIZE)),
        Malformed("too deep", "too_deep", key, _replace(amount, b"1.5", nested)),
        Malformed("duplicate key", "duplicate_key", key, b'{"event_id": "d", "event_id": "e"}'),
        Malformed(
            "unknown schema version", "unknown_schema_version", key, with_(schema_version=99)
        ),
        Malformed("unknown field", "invalid_fields", key, with_(colour="red")),
        Malformed("key is not the entity", "key_mismatch", b"someone-else", amount),
    ]


def malformed_requests(entity: str, serial: int) -> list[Malformed]:
    """Bad prediction requests: each must get an error answer and a dead letter."""
    key = entity.encode()

    def request(name: str, **fields: Any) -> tuple[str, bytes]:
        request_id = f"{entity}-bad-{serial}-{name}"
        document = {"request_id": request_id, "entity_id": entity, "features": {}, **fields}
        return request_id, orjson.dumps(document)

    nan_id, nan = request("nan", features={"amount": 1.5})
    huge_id, huge = request("huge", features={"note": "x"}, padding="x" * OVERSIZE)
    typed_id, typed = request("typed", entity_id=7)
    schema_id, schema = request("schema", schema_version=99)
    unknown_id, unknown = request("unknown", colour="red")
    return [
        Malformed("bad utf-8", "bad_utf8", key, b'{"request_id": "\xc3\x28"}'),
        Malformed("empty bytes", "empty", key, b""),
        Malformed("bad json", "bad_json", key, b'{"request_id": "x",'),
        Malformed("array", "not_an_object", key, b"[1, 2]"),
        Malformed("missing ids", "invalid_fields", key, orjson.dumps({"features": {}})),
        Malformed("id of wrong type", "invalid_fields", key, typed, typed_id),
        Malformed("NaN", "non_finite_number", key, _replace(nan, b"1.5", b"NaN"), nan_id),
        Malformed("huge payload", "too_large", key, huge, huge_id),
        Malformed("unknown schema version", "unknown_schema_version", key, schema, schema_id),
        Malformed("unknown field", "invalid_fields", key, unknown, unknown_id),
    ]


def malformed_learning(serial: int) -> list[tuple[Topic, Malformed]]:
    """Bad training examples and labels: the learner must dead-letter each one."""
    event_time = "2026-01-01T00:00:00Z"
    return [
        (Topic.TRAINING_EXAMPLES, Malformed("bad json", "bad_json", None, b'{"example_id": "x",')),
        (
            Topic.TRAINING_EXAMPLES,
            Malformed(
                "missing fields",
                "invalid_fields",
                None,
                orjson.dumps({"example_id": f"bad-example-{serial}"}),
            ),
        ),
        (Topic.LABELS, Malformed("bad utf-8", "bad_utf8", None, b"\xff\xfe")),
        (
            Topic.LABELS,
            Malformed(
                "label of wrong type",
                "invalid_fields",
                None,
                orjson.dumps(
                    {"request_id": f"bad-label-{serial}", "label": {}, "event_time": event_time}
                ),
            ),
        ),
        (
            Topic.LABELS,
            Malformed(
                "no id",
                "invalid_fields",
                None,
                orjson.dumps({"label": True, "event_time": event_time}),
            ),
        ),
    ]
