"""Every Redis key Eddy writes, defined once.

Keys that belong to one entity or one record put its id in braces (a Redis Cluster
hash tag), so everything about it lands in one slot and a batch's keys spread over the
cluster. An id that could break the tag (one with ``{`` or ``}``, or empty: an empty tag
hashes the whole key) is written as ``~`` and its URL-safe base64 instead
(:func:`hash_tag`); so is an id that starts with ``~``, so two ids never share a key.

>>> entity_features("eddy.", "3f2a", "u1"), snapshot("eddy.", "r1")
('eddy.features:3f2a:{u1}', 'eddy.snapshot:{r1}')
>>> cached_answer("eddy.", "u1", "fraud")
'eddy.answer:{u1}:fraud'
>>> entity_features("eddy.", "3f2a", "}u{")
'eddy.features:3f2a:{~fXV7}'
"""

from __future__ import annotations

import base64

ENCODED = "~"  # the mark of an id written in base64 inside its hash tag


def hash_tag(record_id: str) -> str:
    """``record_id`` as it goes between the braces of its keys: itself, unless it holds
    a brace, is empty or starts with the mark, which are encoded (one-to-one).

    >>> hash_tag("user-7"), hash_tag(""), hash_tag("~x")
    ('user-7', '~', '~fng=')
    """
    braced = "{" in record_id or "}" in record_id
    if record_id and not braced and not record_id.startswith(ENCODED):
        return record_id
    return ENCODED + base64.urlsafe_b64encode(record_id.encode()).decode()


def entity_features(prefix: str, states: str, entity_id: str) -> str:
    """An entity's online feature state folded by definitions of state fingerprint
    ``states``: definitions that fold other states keep theirs apart
    (:mod:`eddy.streams.store.online`)."""
    return f"{prefix}features:{states}:{{{hash_tag(entity_id)}}}"


def applied_offsets(prefix: str, states: str) -> str:
    """The hash of ``<topic>:<partition>`` → last offset those states hold."""
    return f"{prefix}features:{states}:applied"


def applied_offsets_on(prefix: str, states: str, tag: str) -> str:
    """On a Redis Cluster, one watermark hash per master, tagged into a slot it serves
    (:mod:`eddy.streams.store.online`)."""
    return f"{prefix}features:{states}:applied:{{{tag}}}"


def snapshot(prefix: str, record_id: str) -> str:
    """The features an event or a served request saw, kept for its late label."""
    return f"{prefix}snapshot:{{{hash_tag(record_id)}}}"


def snapshots_recorded(prefix: str) -> str:
    """How many snapshots were ever recorded (the denominator of label coverage)."""
    return f"{prefix}snapshots:recorded"


def snapshots_recorded_in(prefix: str, tag: str) -> str:
    """On a Redis Cluster, the count of one slot's snapshots (they are summed)."""
    return f"{prefix}snapshots:recorded:{{{tag}}}"


def joined_label(prefix: str, record_id: str) -> str:
    """A label the learner joined, kept for the live comparison to score against."""
    return f"{prefix}label:{{{hash_tag(record_id)}}}"


def request_log(prefix: str, request_id: str) -> str:
    """What the predictor answered a request (its redelivery and skew evidence)."""
    return f"{prefix}request:{{{hash_tag(request_id)}}}"


def shadow_log(prefix: str) -> str:
    """The challengers' answers, kept for the live comparison."""
    return f"{prefix}shadow"


def cached_answer(prefix: str, entity_id: str, model: str) -> str:
    """A precomputed champion answer for an entity (static serving)."""
    return f"{prefix}answer:{{{hash_tag(entity_id)}}}:{model}"


def hot_requests(prefix: str, entity_id: str, model: str) -> str:
    """How often an entity was asked about lately (what static serving keeps hot)."""
    return f"{prefix}answer-hot:{{{hash_tag(entity_id)}}}:{model}"


def performance_estimates(prefix: str, model: str) -> str:
    """Each served version's latest estimated and realized performance (one hash)."""
    return f"{prefix}estimates:{{{hash_tag(model)}}}"
