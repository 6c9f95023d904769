"""Hostile records for the long fuzz: valid messages, mutated at random, with random keys
and headers.

The malformed corpus (:mod:`chaos.corpus`) names each bad input and the error class it
must get; the fuzz instead tries many records nobody wrote by hand, and asks only what
must hold for any record: no worker crashes or stalls, and the valid load beside it is
neither lost nor counted twice. A mutation may leave a record valid; it is then
processed like any other (its ids and entities are the fuzz's own, apart from the load's).

Pure and seeded: the same seed gives the same records.

>>> import random
>>> records = hostile_records(random.Random(7), Topic.EVENTS, 50)
>>> len(records), len({r.value for r in records}) > 40
(50, True)
>>> all(isinstance(h[0], str) for r in records for h in r.headers)
True
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eddy.streams.features.compute import EntityState, feature_vector
from eddy.streams.features.definitions import FEATURES
from eddy.streams.messages.validation import MAX_MESSAGE_BYTES
from eddy.streams.transport.topics import Topic

HOSTILE = "hostile"  # the prefix of every id and entity the fuzz writes
MAX_EDITS = 4  # byte edits per mutated record
MAX_HEADERS = 4

# Values that broke, or could break, a decoder or a model: overflows, subnormals, huge
# and deep structures, lone surrogates, the wrong type for every field.
EDGE_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**63,
    2**64 + 1,
    -(2**200),
    1e308,
    -1e308,
    5e-324,
    "",
    "x" * 5_000,
    "\u0000",
    "é" * 300,
    [],
    {},
    [1.0] * 3_000,
    {"nested": {"deeper": [[[[[[]]]]]]}},
    "2026-13-45T99:99:99Z",
    "1970-01-01T00:00:00",
)
RAW_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b'"\\ud800"', b"1e999", b"[" * 200, b"\xff\xfe")


# The input topics the fuzz writes to: every topic a worker reads from outside Eddy.
FUZZED_TOPICS = (
    Topic.EVENTS,
    Topic.PREDICTION_REQUESTS,
    Topic.LABELS,
    Topic.TRAINING_EXAMPLES,
    Topic.CONTROL,
    Topic.DRIFT_ALERTS,
)


@dataclass(frozen=True)
class HostileRecord:
    mutation: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def base_document(topic: Topic, serial: int, now: datetime) -> dict[str, Any]:
    """A valid message of ``topic``'s contract, with the fuzz's own ids."""
    at = now.isoformat()
    if topic is Topic.EVENTS:
        return {
            "event_id": f"{HOSTILE}-e{serial}",
            "entity_id": f"{HOSTILE}-u{serial % 7}",
            "event_time": at,
            "features": {"amount": 12.5, "country": "A"},
            "label": serial % 2 == 0,
        }
    if topic is Topic.PREDICTION_REQUESTS:
        return {
            "request_id": f"{HOSTILE}-r{serial}",
            "entity_id": f"{HOSTILE}-u{serial % 7}",
            "features": {"amount": 40.0},
        }
    if topic is Topic.LABELS:
        return {"request_id": f"{HOSTILE}-r{serial}", "label": True, "event_time": at}
    if topic is Topic.TRAINING_EXAMPLES:
        stamp = now.timestamp()
        features = feature_vector(EntityState(), FEATURES, stamp, raw={"amount": 3.0})
        return {
            "example_id": f"{HOSTILE}-x{serial}",
            "entity_id": f"{HOSTILE}-u{serial % 7}",
            "event_time": at,
            "label": False,
            "features": features,
            "feature_set": FEATURES.fingerprint(),
            "source": {"topic": f"{HOSTILE}-source", "partition": 0, "offset": serial},
        }
    if topic is Topic.CONTROL:
        return {
            "command_id": f"{HOSTILE}-c{serial}",
            "action": "retrain",
            "model": f"{HOSTILE}-model",
            "requested_by": HOSTILE,
            "requested_at": at,
        }
    return {
        "alert_id": f"{HOSTILE}-a{serial}",
        "model": f"{HOSTILE}-model",
        "kind": "concept",
        "detector": HOSTILE,
        "statistic": 1.0,
        "threshold": 0.5,
        "action": "retrain",
        "detected_at": at,
    }


def hostile_records(
    rng: random.Random, topic: Topic, count: int, now: datetime | None = None
) -> list[HostileRecord]:
    """``count`` mutated records for ``topic``."""
    now = now or datetime.now(UTC)
    records = []
    for serial in range(count):
        document = base_document(topic, serial, now - timedelta(seconds=rng.uniform(0, 5)))
        mutation = rng.choice(MUTATIONS)
        value = mutation(rng, document)
        key = _key(rng, document)
        if key is None and value is None:  # not a Kafka record: a tombstone needs its key
            key = b""
        records.append(HostileRecord(mutation.__name__, key, value, _headers(rng)))
    return records


def replace_value(rng: random.Random, document: dict[str, Any]) -> bytes:
    """One field, anywhere in the document, gets an edge value."""
    parent, name = _somewhere(rng, document)
    parent[name] = rng.choice(EDGE_VALUES)
    return _dumps(document)


def edit_bytes(rng: random.Random, document: dict[str, Any]) -> bytes:
    """A few byte edits: flips, cuts, insertions, repeats."""
    raw = bytearray(_dumps(document))
    for _ in range(rng.randint(1, MAX_EDITS)):
        at = rng.randrange(len(raw) + 1)
        edit = rng.randrange(4)
        if edit == 0 and raw:
            raw[min(at, len(raw) - 1)] = rng.randrange(256)
        elif edit == 1:
            del raw[at : at + rng.randint(1, 8)]
        elif edit == 2:
            raw[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            raw[at:at] = raw[at : at + rng.randint(1, 16)]
    return bytes(raw)


def splice_token(rng: random.Random, document: dict[str, Any]) -> bytes:
    """A token JSON does not allow (or a parser chokes on) in place of a value."""
    parent, name = _somewhere(rng, document)
    marker = "__splice__"
    parent[name] = marker
    return _dumps(document).replace(f'"{marker}"'.encode(), rng.choice(RAW_TOKENS), 1)


def many_keys(rng: random.Random, document: dict[str, Any]) -> bytes:
    """Thousands of keys in one object, some of them repeated."""
    parent, _ = _somewhere(rng, document, objects_only=True)
    names = [f"k{i}" for i in range(rng.choice((50, 2_000, 20_000)))]
    body = b",".join(b'"%s":%d' % (n.encode(), i) for i, n in enumerate(names))
    if rng.random() < 0.5:
        body += b',"k0":1'
    marker = "__keys__"
    parent[marker] = 0
    return _dumps(document).replace(f'"{marker}":0'.encode(), body, 1)


def deep_nesting(rng: random.Random, document: dict[str, Any]) -> bytes:
    """Arrays nested far past any sane depth."""
    depth = rng.choice((30, 200, 5_000))
    parent, name = _somewhere(rng, document)
    marker = "__deep__"
    parent[name] = marker
    return _dumps(document).replace(f'"{marker}"'.encode(), b"[" * depth + b"]" * depth, 1)


def oversize(rng: random.Random, document: dict[str, Any]) -> bytes:
    """A document past the message size limit."""
    document["padding"] = "p" * (MAX_MESSAGE_BYTES + rng.randint(1, 4096))
    return _dumps(document)


def not_json(rng: random.Random, document: dict[str, Any]) -> bytes | None:
    """No document at all: a tombstone, empty bytes, random bytes, a bare scalar."""
    return rng.choice((None, b"", rng.randbytes(rng.randint(1, 64)), b"42", b'"text"', b"[]"))


MUTATIONS = (replace_value, edit_bytes, splice_token, many_keys, deep_nesting, oversize, not_json)


def _somewhere(
    rng: random.Random, document: dict[str, Any], *, objects_only: bool = False
) -> tuple[Any, Any]:
    """A random (container, key or index) in ``document``, going down at random."""
    parent: Any = document
    name: Any = rng.choice(list(document)) if document else "extra"
    while True:
        child = parent.get(name) if isinstance(parent, dict) else parent[name]
        if isinstance(child, dict) and child and rng.random() < 0.6:
            parent, name = child, rng.choice(list(child))
        elif isinstance(child, list) and child and not objects_only and rng.random() < 0.6:
            parent, name = child, rng.randrange(len(child))
        else:
            break
    if objects_only and not isinstance(parent, dict):
        return document, name
    return parent, name


def _dumps(document: dict[str, Any]) -> bytes:
    """Compact JSON that keeps integers of any size (orjson refuses those past 64 bits)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _key(rng: random.Random, document: dict[str, Any]) -> bytes | None:
    own = document.get("entity_id") or document.get("request_id") or document.get("model")
    return rng.choice((str(own).encode(), None, b"", rng.randbytes(rng.randint(1, 32))))


def _headers(rng: random.Random) -> list[tuple[str, bytes]]:
    """Random headers, forged Eddy ones among them. (kafka-python cannot send a null
    header value; the unit fuzz feeds those to the decoders.)"""
    headers: list[tuple[str, bytes]] = []
    for _ in range(rng.randrange(MAX_HEADERS + 1)):
        name = rng.choice(("eddy-hmac", "eddy.source.topic", "trace", "", "é", "x" * 300))
        value = rng.choice((b"", rng.randbytes(rng.randint(1, 64)), b"x" * 10_000))
        headers.append((name, value))
    return headers
