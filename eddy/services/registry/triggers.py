"""Why a version exists and what the audit log says was done: one vocabulary, typed.

A version's lineage records its trigger, what started the retrain or the snapshot, as a
small JSON object; every audit entry names its action. The retrainer and the learner's
snapshot hook write them, the control listener searches the audit log for a command's
trigger, and the governance report reads both back. They are defined here once, so a
writer and a reader cannot disagree on a spelling.

The stored shape does not change: :meth:`Trigger.to_dict` writes the keys, their order
and their string values exactly as registries already hold them, and
:meth:`Trigger.from_dict` reads any of them back, a kind this code does not know
included.

>>> trigger = Trigger(TriggerKind.ALERT, "m:concept:10", burst=("m:concept:10", "m:data:12"))
>>> trigger.to_dict()
{'type': 'alert', 'id': 'm:concept:10', 'burst': 'm:concept:10,m:data:12'}
>>> Trigger.from_dict(trigger.to_dict()) == trigger
True
>>> trigger.alert_ids
['m:concept:10', 'm:data:12']
>>> AuditAction.alias_change("challenger", cleared=True)
<AuditAction.CLEAR_CHALLENGER: 'clear challenger'>
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

# The stored trigger's keys, in the order they are written.
KIND_KEY = "type"
ID_KEY = "id"
BURST_KEY = "burst"
BY_KEY = "by"
REASON_KEY = "reason"
REQUESTED_AT_KEY = "requested_at"
BURST_SEPARATOR = ","


class TriggerKind(StrEnum):
    """What started a retrain (or, for a snapshot, a learner's checkpoint)."""

    ALERT = "alert"  # a burst of drift alerts
    SCHEDULE = "schedule"  # EDDY_RETRAIN_EVERY_S
    OPERATOR = "operator"  # ``eddy retrain`` run by hand
    CONTROL = "control"  # a signed command on the control topic (status API, CLI)
    CHECKPOINT = "checkpoint"  # the online learner's snapshot
    COLD_START = "cold start"  # an online snapshot serves that no retrain has judged
    REFRESH = "refresh"  # the review window holds only data no retrained version saw
    BELOW_MAJORITY = "below majority"  # the champion is worse than the majority class
    BELOW_PROMISE = "below promise"  # the champion is worse than on its own holdout


@dataclass(frozen=True)
class Trigger:
    """A trigger as a version's lineage and the audit log record it.

    ``kind`` is a :class:`TriggerKind`; read back from a registry, a kind this code does
    not know stays the string it was. ``burst``: every alert id of an alert burst;
    ``by``, ``reason`` and ``requested_at``: who asked, why and when (an operator's or a
    control command's). A field left None is not written.
    """

    kind: TriggerKind | str
    id: str | None = None
    burst: tuple[str, ...] | None = None
    by: str | None = None
    reason: str | None = None
    requested_at: str | None = None

    def to_dict(self) -> dict[str, str]:
        """The JSON object stored in lineage and audit entries."""
        optional = {
            ID_KEY: self.id,
            BURST_KEY: None if self.burst is None else BURST_SEPARATOR.join(self.burst),
            BY_KEY: self.by,
            REASON_KEY: self.reason,
            REQUESTED_AT_KEY: self.requested_at,
        }
        return {KIND_KEY: str(self.kind)} | {k: v for k, v in optional.items() if v is not None}

    @classmethod
    def from_dict(cls, stored: Mapping[str, str]) -> Trigger:
        """The trigger a stored JSON object records (no kind recorded: an empty one).

        >>> Trigger.from_dict({"type": "operator", "id": "t"})
        Trigger(kind=<TriggerKind.OPERATOR: 'operator'>, id='t', burst=None, by=None, ...)
        """
        burst = stored.get(BURST_KEY)
        return cls(
            kind=_kind(stored.get(KIND_KEY, "")),
            id=stored.get(ID_KEY),
            burst=None if burst is None else tuple(burst.split(BURST_SEPARATOR)),
            by=stored.get(BY_KEY),
            reason=stored.get(REASON_KEY),
            requested_at=stored.get(REQUESTED_AT_KEY),
        )

    @property
    def alert_ids(self) -> list[str]:
        """The alert ids behind an alert trigger: its id, then the rest of its burst."""
        if self.kind != TriggerKind.ALERT:
            return []
        ids = [self.id or "", *(self.burst or ())]
        return [i for i in dict.fromkeys(ids) if i]


def _kind(stored: str) -> TriggerKind | str:
    try:
        return TriggerKind(stored)
    except ValueError:  # written by another version of Eddy: kept as it was
        return stored


class AuditAction(StrEnum):
    """What an audit log entry records."""

    REGISTER = "register"  # a version was added; details: its lineage
    DECISION = "decision"  # a promotion decision and its evidence (a retrain's: its trigger)
    REFUSED = "refused"  # a control command that could not be carried out, and why
    RETRAIN_FAILED = "retrain failed"  # the estimator raised: the trigger, stage and error
    SET_CHAMPION = "set champion"
    SET_CHALLENGER = "set challenger"
    CLEAR_CHAMPION = "clear champion"
    CLEAR_CHALLENGER = "clear challenger"

    @classmethod
    def alias_change(cls, alias: str, *, cleared: bool) -> AuditAction:
        """The action of pointing ``alias`` at a version, or of clearing it."""
        return cls(f"clear {alias}" if cleared else f"set {alias}")
