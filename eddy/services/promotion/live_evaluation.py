"""Champion vs challenger on live traffic, from recorded answers and late labels.

The prediction service answers every request with the champion and shadow-scores the
challenger on the same request, recording both answers by request id; labels arrive
later. This module pairs them (only requests both models answered and a label exists
for), asks :mod:`eddy.services.promotion.rules` what to do, and carries the decision out through
the registry, with its evidence in the audit log:

- :meth:`LiveEvaluator.compare` — promote the challenger when it is significantly
  better over enough paired requests;
- :meth:`LiveEvaluator.guard_champion` — serve the previous champion again when it is
  significantly better than the current one on the same recent labelled examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from eddy.services.promotion.rules import (
    Decision,
    DecisionAction,
    LiveGate,
    RollbackGuard,
    SliceGate,
    gate_by_slices,
    live_decision,
    rollback_decision,
    slice_regressions,
)
from eddy.services.registry.store import CHALLENGER, CHAMPION, Registry
from eddy.streams.learning.slices import COUNT

Answer = bool | int | float | str


@dataclass(frozen=True)
class RecordedAnswer:
    """One model's answer to one request, as the prediction service logged it."""

    request_id: str
    model: str
    version: int
    prediction: Answer | None  # None: the model had no answer (a wrong one, when paired)


def paired_outcomes(
    answers: Iterable[RecordedAnswer],
    labels: Mapping[str, Answer],
    champion: int,
    challenger: int,
) -> dict[str, tuple[bool, bool]]:
    """Per request both models answered and a label exists for: was each one right?

    >>> answers = [RecordedAnswer("r1", "m", 1, True), RecordedAnswer("r1", "m", 2, False),
    ...            RecordedAnswer("r2", "m", 1, True)]
    >>> paired_outcomes(answers, {"r1": False, "r2": True}, champion=1, challenger=2)
    {'r1': (False, True)}
    """
    by_request: dict[str, dict[int, Answer | None]] = {}
    for answer in answers:
        by_request.setdefault(answer.request_id, {})[answer.version] = answer.prediction
    outcomes = {}
    for request_id, answered in sorted(by_request.items()):
        if request_id in labels and champion in answered and challenger in answered:
            label = labels[request_id]
            outcomes[request_id] = (answered[champion] == label, answered[challenger] == label)
    return outcomes


def paired_correctness(
    answers: Iterable[RecordedAnswer],
    labels: Mapping[str, Answer],
    champion: int,
    challenger: int,
) -> tuple[list[bool], list[bool]]:
    """:func:`paired_outcomes` as two aligned lists (champion, challenger)."""
    outcomes = paired_outcomes(answers, labels, champion, challenger).values()
    return [c for c, _ in outcomes], [c for _, c in outcomes]


def accuracy_by_slice(
    outcomes: Mapping[str, tuple[bool, bool]], slices: Mapping[str, Sequence[str]]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Live accuracy per slice of champion and challenger on their paired requests.

    >>> champion, challenger = accuracy_by_slice(
    ...     {"r1": (True, False), "r2": (True, True)}, {"r1": ["region=eu"], "r2": ["region=eu"]})
    >>> champion["region=eu"], challenger["region=eu"]
    ({'accuracy': 1.0, 'n': 2.0}, {'accuracy': 0.5, 'n': 2.0})
    """
    tallies: dict[str, list[int]] = {}  # slice -> [n, champion right, challenger right]
    for request_id, (champion_right, challenger_right) in outcomes.items():
        for name in slices.get(request_id, ()):
            tally = tallies.setdefault(name, [0, 0, 0])
            tally[0] += 1
            tally[1] += champion_right
            tally[2] += challenger_right
    champion = {k: {"accuracy": t[1] / t[0], COUNT: float(t[0])} for k, t in tallies.items()}
    challenger = {k: {"accuracy": t[2] / t[0], COUNT: float(t[0])} for k, t in tallies.items()}
    return champion, challenger


class LiveEvaluator:
    def __init__(
        self,
        registry: Registry,
        model: str,
        gate: LiveGate | None = None,
        guard: RollbackGuard | None = None,
        actor: str = "live evaluator",
        slice_gate: SliceGate | None = None,
    ) -> None:
        self.registry = registry
        self.model = model
        self.gate = gate or LiveGate()
        self.guard = guard or RollbackGuard()
        self.actor = actor
        self.slice_gate = slice_gate or SliceGate(metric="accuracy", higher_is_better=True)

    def compare(
        self,
        answers: Iterable[RecordedAnswer],
        labels: Mapping[str, Answer],
        slices: Mapping[str, Sequence[str]] | None = None,
    ) -> Decision | None:
        """Promote the challenger if the paired evidence says so; None without a pair.

        With ``slices`` (request id -> its slices), a promotion is also blocked when the
        challenger's live accuracy on any slice is worse than the champion's there
        beyond the slice gate's tolerance.
        """
        champion = self.registry.alias(self.model, CHAMPION)
        challenger = self.registry.alias(self.model, CHALLENGER)
        if champion is None or challenger is None:
            return None
        outcomes = paired_outcomes(answers, labels, champion.version, challenger.version)
        paired = list(outcomes.values())
        decision = live_decision([c for c, _ in paired], [c for _, c in paired], self.gate)
        context: dict[str, object] = {"champion": champion.version}
        if slices:
            by_champion, by_challenger = accuracy_by_slice(outcomes, slices)
            decision = gate_by_slices(
                decision, slice_regressions(by_challenger, by_champion, self.slice_gate)
            )
            context["slices"] = {"champion": by_champion, "challenger": by_challenger}
        self._record(challenger.version, decision, context)
        if decision.action is DecisionAction.PROMOTE:
            self.registry.promote(self.model, challenger.version, self.actor, decision.reason)
        return decision

    def guard_champion(
        self,
        champion_correct: Sequence[bool],
        previous_correct: Sequence[bool],
        *,
        trivial_accuracy: float,
    ) -> Decision | None:
        """Roll back if the previous champion is significantly better on the same recent
        labelled examples (each list: was that model right on example i?) and better
        than the majority class there (``trivial_accuracy``). None when there is no
        earlier champion."""
        champion = self.registry.alias(self.model, CHAMPION)
        previous = self.registry.previous_champion(self.model)
        if champion is None or previous is None:
            return None
        decision = rollback_decision(
            champion_correct, previous_correct, self.guard, trivial_accuracy=trivial_accuracy
        )
        self._record(champion.version, decision, {"previous": previous})
        if decision.action is DecisionAction.ROLLBACK:
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
