"""Every Redis key Eddy writes, defined once.

Keys that belong to one entity or one record put its id in braces (a Redis Cluster
hash tag), so each lands on one slot and a batch's keys spread over the cluster.

>>> entity_features("eddy.", "3f2a", "u1"), snapshot("eddy.", "r1")
('eddy.features:3f2a:{u1}', 'eddy.snapshot:{r1}')
>>> cached_answer("eddy.", "u1", "fraud")
'eddy.answer:{u1}:fraud'
"""

from __future__ import annotations


def entity_features(prefix: str, states: str, entity_id: str) -> str:
    """An entity's online feature state folded by definitions of state fingerprint
    ``states``: definitions that fold other states keep theirs apart
    (:mod:`eddy.streams.store.online`)."""
    return f"{prefix}features:{states}:{{{entity_id}}}"


def applied_offsets(prefix: str, states: str) -> str:
    """The hash of ``<topic>:<partition>`` → last offset those states hold."""
    return f"{prefix}features:{states}:applied"


def snapshot(prefix: str, record_id: str) -> str:
    """The features an event or a served request saw, kept for its late label."""
    return f"{prefix}snapshot:{{{record_id}}}"


def snapshots_recorded(prefix: str) -> str:
    """How many snapshots were ever recorded (the denominator of label coverage)."""
    return f"{prefix}snapshots:recorded"


def joined_label(prefix: str, record_id: str) -> str:
    """A label the learner joined, kept for the live comparison to score against."""
    return f"{prefix}label:{{{record_id}}}"


def request_log(prefix: str, request_id: str) -> str:
    """What the predictor answered a request (its redelivery and skew evidence)."""
    return f"{prefix}request:{{{request_id}}}"


def shadow_log(prefix: str) -> str:
    """The challengers' answers, kept for the live comparison."""
    return f"{prefix}shadow"


def cached_answer(prefix: str, entity_id: str, model: str) -> str:
    """A precomputed champion answer for an entity (static serving)."""
    return f"{prefix}answer:{{{entity_id}}}:{model}"


def hot_requests(prefix: str, entity_id: str, model: str) -> str:
    """How often an entity was asked about lately (what static serving keeps hot)."""
    return f"{prefix}answer-hot:{{{entity_id}}}:{model}"
