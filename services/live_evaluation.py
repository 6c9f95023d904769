"""Champion vs challenger on live traffic, from recorded answers and late labels.

The prediction service answers every request with the champion and shadow-scores the
challenger on the same request, recording both answers by request id; labels arrive
later. This module pairs them (only requests both models answered and a label exists
for), asks :mod:`services.promotion` what to do, and carries the decision out through
the registry, with its evidence in the audit log:

- :meth:`LiveEvaluator.compare` — promote the challenger when it is significantly
  better over enough paired requests;
- :meth:`LiveEvaluator.guard` — roll a new champion back when its live error rate
  passes the previous champion's baseline by more than the tolerance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.promotion import (
    Decision,
    LiveGate,
    RollbackGuard,
    live_decision,
    rollback_decision,
)
from services.registry import CHALLENGER, CHAMPION, Registry

Answer = bool | int | float | str


@dataclass(frozen=True)
class RecordedAnswer:
    """One model's answer to one request, as the prediction service logged it."""

    request_id: str
    model: str
    version: int
    prediction: Answer


def paired_correctness(
    answers: Iterable[RecordedAnswer],
    labels: Mapping[str, Answer],
    champion: int,
    challenger: int,
) -> tuple[list[bool], list[bool]]:
    """Per request both models answered and a label exists for: was each one right?

    >>> answers = [RecordedAnswer("r1", "m", 1, True), RecordedAnswer("r1", "m", 2, False),
    ...            RecordedAnswer("r2", "m", 1, True)]
    >>> paired_correctness(answers, {"r1": False, "r2": True}, champion=1, challenger=2)
    ([False], [True])
    """
    by_request: dict[str, dict[int, Answer]] = {}
    for answer in answers:
        by_request.setdefault(answer.request_id, {})[answer.version] = answer.prediction
    champion_right, challenger_right = [], []
    for request_id, answered in sorted(by_request.items()):
        if request_id in labels and champion in answered and challenger in answered:
            label = labels[request_id]
            champion_right.append(answered[champion] == label)
            challenger_right.append(answered[challenger] == label)
    return champion_right, challenger_right


class LiveEvaluator:
    def __init__(
        self,
        registry: Registry,
        model: str,
        gate: LiveGate | None = None,
        guard: RollbackGuard | None = None,
        actor: str = "live evaluator",
    ) -> None:
        self.registry = registry
        self.model = model
        self.gate = gate or LiveGate()
        self.guard = guard or RollbackGuard()
        self.actor = actor

    def compare(
        self, answers: Iterable[RecordedAnswer], labels: Mapping[str, Answer]
    ) -> Decision | None:
        """Promote the challenger if the paired evidence says so; None without a pair."""
        champion = self.registry.alias(self.model, CHAMPION)
        challenger = self.registry.alias(self.model, CHALLENGER)
        if champion is None or challenger is None:
            return None
        right = paired_correctness(answers, labels, champion.version, challenger.version)
        decision = live_decision(right[0], right[1], self.gate)
        self._record(challenger.version, decision, {"champion": champion.version})
        if decision.action == "promote":
            self.registry.promote(self.model, challenger.version, self.actor, decision.reason)
        return decision

    def guard_champion(
        self,
        answers: Iterable[RecordedAnswer],
        labels: Mapping[str, Answer],
        baseline_error_rate: float,
    ) -> Decision | None:
        """Roll the champion back if its live error rate broke the guard."""
        champion = self.registry.alias(self.model, CHAMPION)
        if champion is None:
            return None
        outcomes = [
            a.prediction == labels[a.request_id]
            for a in answers
            if a.version == champion.version and a.request_id in labels
        ]
        error_rate = 1 - sum(outcomes) / len(outcomes) if outcomes else 0.0
        decision = rollback_decision(error_rate, len(outcomes), baseline_error_rate, self.guard)
        self._record(champion.version, decision, {"baseline_error_rate": baseline_error_rate})
        if decision.action == "rollback":
            self.registry.rollback(self.model, self.actor, decision.reason)
        return decision

    def _record(self, version: int, decision: Decision, context: dict[str, object]) -> None:
        self.registry.record_decision(
            self.model,
            version,
            self.actor,
            {
                "action": decision.action,
                "reason": decision.reason,
                "evidence": decision.evidence,
                **context,
            },
        )
