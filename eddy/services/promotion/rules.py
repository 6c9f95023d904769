"""The model registry's decision rules: promote, challenge, keep, roll back or wait.

A new model never replaces the champion on a hunch. Offline, it must beat the champion on
the same held-out slice by a relative margin (and a classifier must be significantly
better on those very examples); live, as a challenger answering the same requests, it
must be better with a one-sided significance test on the paired outcomes; after a
promotion, the previous champion serves again only if it is significantly better on the
same recent labelled examples. Every comparison is paired: like with like. The rules are
pure functions so they can be tested exhaustively, and every :class:`Decision` carries
the numbers behind it (JSON-serialisable) so the registry can write it to its audit log
as is.

>>> gate = OfflineGate(metric="log_loss", margin=0.01, min_holdout=200)
>>> offline_decision({"log_loss": 0.40}, {"log_loss": 0.45}, 500, gate).action
<DecisionAction.PROMOTE: 'promote'>
>>> offline_decision({"log_loss": 0.449}, {"log_loss": 0.45}, 500, gate).action
<DecisionAction.CHALLENGER: 'challenger'>
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.stats  # type: ignore[import-untyped, unused-ignore]


class DecisionAction(StrEnum):
    """What a gate decides about a model version (its audit entry's ``action``)."""

    PROMOTE = "promote"  # make it the champion
    CHALLENGER = "challenger"  # serve it in shadow, to be judged live
    KEEP = "keep"  # leave the aliases as they are
    ROLLBACK = "rollback"  # the previous champion serves again
    WAIT = "wait"  # too little evidence yet to decide


PROMOTE, CHALLENGER, KEEP, ROLLBACK, WAIT = DecisionAction
EvidenceValue = float | int | str
LabelValue = bool | int | float | str
TRIVIAL_ROC_AUC = 0.5
# Metrics where a bigger value is a better model; the rest (log_loss, mae, rmse) are losses.
HIGHER_IS_BETTER = frozenset({"accuracy", "roc_auc"})

# Comparisons of derived floats against configured thresholds allow this much rounding,
# so that e.g. 0.45 -> 0.4455 counts as exactly the 1 % margin it was written to be.
FLOAT_SLACK = 1e-12
# Denominator floor of a relative improvement, so a champion scoring exactly 0 gives a
# large but finite (hence JSON-serialisable) improvement instead of a division by zero.
RELATIVE_FLOOR = 1e-12
# alpha = 1 - confidence is rounded so the audit log reads 0.05, not 0.050000000000000044.
ALPHA_DIGITS = 12
MCNEMAR_TEST = "exact one-sided McNemar (binomial on discordant pairs)"
WILCOXON_TEST = "one-sided Wilcoxon signed-rank on champion_error - challenger_error"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class Decision:
    """What to do, one sentence saying why, and the numbers behind it for the audit log."""

    action: DecisionAction
    reason: str
    evidence: dict[str, EvidenceValue]


@dataclass(frozen=True)
class OfflineGate:
    """How a candidate must compare with the champion on the held-out slice to be promoted."""

    metric: str = "log_loss"
    higher_is_better: bool = False
    margin: float = 0.01
    min_holdout: int = 200

    def __post_init__(self) -> None:
        _require(bool(self.metric), "metric must be named")
        _require(math.isfinite(self.margin) and self.margin >= 0, f"margin {self.margin} < 0")
        _require(self.min_holdout >= 0, f"min_holdout {self.min_holdout} < 0")


@dataclass(frozen=True)
class LiveGate:
    """How much paired live evidence a challenger needs before it can replace the champion."""

    min_samples: int = 500
    confidence: float = 0.95

    def __post_init__(self) -> None:
        _require(self.min_samples >= 1, f"min_samples {self.min_samples} < 1")
        _require(0.0 < self.confidence < 1.0, f"confidence {self.confidence} not in (0, 1)")


@dataclass(frozen=True)
class RollbackGuard:
    """How much paired evidence a rollback needs: the previous champion must be
    significantly better than the current one on the same recent labelled examples."""

    min_samples: int = 300
    confidence: float = 0.95

    def __post_init__(self) -> None:
        _require(self.min_samples >= 1, f"min_samples {self.min_samples} < 1")
        _require(0.0 < self.confidence < 1.0, f"confidence {self.confidence} not in (0, 1)")


def _num(x: float) -> str:
    return f"{x:.4g}"


def _metric(scores: Mapping[str, float], metric: str, who: str) -> float:
    _require(metric in scores, f"{who} has no {metric!r} score (has {sorted(scores)})")
    value = float(scores[metric])
    _require(math.isfinite(value), f"{who} {metric} is not finite: {value}")
    return value


def offline_decision(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    holdout_size: int,
    gate: OfflineGate,
) -> Decision:
    """Compare a candidate with the champion scored on the same held-out slice.

    No champion promotes the candidate whatever the holdout size, since serving no model is
    worse than serving an unproven one. Otherwise fewer than ``gate.min_holdout`` examples
    keep it (registered, neither promoted nor challenging); a relative improvement of at
    least ``gate.margin`` promotes it; anything less makes it a challenger, to be judged
    live. Raises ``ValueError`` if a score is missing or not finite.

    >>> gate = OfflineGate(metric="accuracy", higher_is_better=True)
    >>> offline_decision({"accuracy": 0.9}, None, 50, gate).action
    <DecisionAction.PROMOTE: 'promote'>
    >>> offline_decision({"accuracy": 0.9}, {"accuracy": 0.8}, 50, gate).action
    <DecisionAction.KEEP: 'keep'>
    """
    _require(holdout_size >= 0, f"holdout_size must be >= 0, got {holdout_size}")
    name = gate.metric
    cand = _metric(candidate, name, "candidate")
    evidence: dict[str, EvidenceValue] = {
        "metric": name,
        "direction": "higher_is_better" if gate.higher_is_better else "lower_is_better",
        "candidate": cand,
        "holdout_size": int(holdout_size),
        "min_holdout": gate.min_holdout,
        "margin": gate.margin,
    }
    if champion is None:
        reason = (
            f"No current champion: promote the candidate ({name} {_num(cand)} "
            f"on {holdout_size} held-out examples)."
        )
        return Decision(PROMOTE, reason, evidence)
    champ = _metric(champion, name, "champion")
    gain = cand - champ if gate.higher_is_better else champ - cand
    improvement = gain / max(abs(champ), RELATIVE_FLOOR)
    evidence |= {"champion": champ, "relative_improvement": improvement}
    if holdout_size < gate.min_holdout:
        reason = (
            f"Only {holdout_size} held-out examples (fewer than {gate.min_holdout}): "
            f"register the candidate ({name} {_num(cand)} vs champion {_num(champ)}) "
            "but neither promote nor challenge."
        )
        return Decision(KEEP, reason, evidence)
    comparison = (
        f"Candidate {name} {_num(cand)} vs champion {_num(champ)} on {holdout_size} held-out "
        f"examples: a relative improvement of {_num(100 * improvement)} %"
    )
    margin = f"the {_num(100 * gate.margin)} % margin"
    if improvement >= gate.margin - FLOAT_SLACK:
        return Decision(PROMOTE, f"{comparison}, at least {margin}: promote.", evidence)
    return Decision(CHALLENGER, f"{comparison}, below {margin}: run it as challenger.", evidence)


NO_REGRESSION_TEST = "no fewer discordant wins"


def exact_mcnemar_p(challenger_better: int, champion_better: int) -> float:
    """One-sided exact McNemar p-value: P(X >= challenger_better), X ~ Bin(discordant, 1/2).

    Only discordant pairs (one model right, the other wrong) tell the models apart; under
    the null hypothesis each is equally likely to favour either. Computed with exact
    integer arithmetic (cost grows with the square of the discordant count: about 40 ms at
    20,000 pairs).

    >>> exact_mcnemar_p(8, 0) == 1 / 256
    True
    >>> exact_mcnemar_p(0, 0)
    1.0
    """
    if challenger_better < 0 or champion_better < 0:
        raise ValueError("discordant counts must be >= 0")
    n, k = challenger_better + champion_better, challenger_better
    # Sum the shorter side as a prefix sum_{i<m} C(n, i); by symmetry the upper tail
    # sum_{i>=k} C(n, i) is the prefix up to n - k. Integers, so the complement is exact.
    upper = k > n // 2
    m = n - k + 1 if upper else k
    prefix, term = 0, 1
    for i in range(m):
        prefix += term
        term = term * (n - i) // (i + 1)
    tail = prefix if upper else (1 << n) - prefix
    return tail / (1 << n)


def _check_paired(champion: Sequence[object], challenger: Sequence[object]) -> int:
    lengths = f"champion {len(champion)}, challenger {len(challenger)}"
    _require(len(champion) == len(challenger), f"paired outcomes differ in length: {lengths}")
    return len(champion)


def _discordant(
    winner_correct: Sequence[bool], champion_correct: Sequence[bool]
) -> tuple[int, int]:
    """(examples only the winner got right, examples only the champion got right).

    >>> _discordant([True, True, False], [False, True, True])
    (1, 1)
    """
    _check_paired(winner_correct, champion_correct)
    pairs = list(zip(winner_correct, champion_correct, strict=True))
    return (
        sum(1 for new, old in pairs if new and not old),
        sum(1 for new, old in pairs if old and not new),
    )


def _judge(
    p_value: float, gate: LiveGate, summary: str, evidence: dict[str, EvidenceValue]
) -> Decision:
    alpha = round(1.0 - gate.confidence, ALPHA_DIGITS)
    evidence |= {"p_value": p_value, "alpha": alpha}
    if p_value <= alpha + FLOAT_SLACK:
        action, verdict = PROMOTE, f"<= {_num(alpha)}: promote"
    else:
        action, verdict = KEEP, f"> {_num(alpha)}: keep the champion"
    return Decision(action, f"{summary} p = {_num(p_value)} {verdict}.", evidence)


def _wait(samples: int, gate: LiveGate, test: str) -> Decision:
    reason = (
        f"Only {samples} paired labelled requests (fewer than {gate.min_samples}): "
        "wait for more before deciding."
    )
    return Decision(
        WAIT, reason, {"test": test, "samples": samples, "min_samples": gate.min_samples}
    )


def live_decision(
    champion_correct: Sequence[bool], challenger_correct: Sequence[bool], gate: LiveGate
) -> Decision:
    """Promote a classifier challenger only if it is significantly better on paired requests.

    Both models answered the same requests in the same order; each bool says whether that
    model matched the late label. Pairing removes the request-to-request variance, and the
    exact test stays valid with few discordant pairs. The false-promotion rate is at most
    ``1 - gate.confidence`` per decision: re-deciding on every new label inflates it.

    >>> gate = LiveGate(min_samples=10)
    >>> live_decision([False] * 8 + [True] * 2, [True] * 10, gate).evidence["p_value"]
    0.00390625
    """
    samples = _check_paired(champion_correct, challenger_correct)
    if samples < gate.min_samples:
        return _wait(samples, gate, MCNEMAR_TEST)
    champ = [bool(x) for x in champion_correct]
    chall = [bool(x) for x in challenger_correct]
    pairs = list(zip(champ, chall, strict=True))
    b = sum(1 for old, new in pairs if new and not old)  # only the challenger was right
    c = sum(1 for old, new in pairs if old and not new)  # only the champion was right
    champ_acc, chall_acc = sum(champ) / samples, sum(chall) / samples
    evidence: dict[str, EvidenceValue] = {
        "test": MCNEMAR_TEST,
        "samples": samples,
        "min_samples": gate.min_samples,
        "champion_accuracy": champ_acc,
        "challenger_accuracy": chall_acc,
        "challenger_only_correct": b,
        "champion_only_correct": c,
    }
    summary = (
        f"On {samples} paired requests the challenger scored {_num(chall_acc)} vs the "
        f"champion's {_num(champ_acc)} ({b} vs {c} discordant wins); one-sided exact McNemar"
    )
    return _judge(exact_mcnemar_p(b, c), gate, summary, evidence)


def live_decision_regression(
    champion_errors: Sequence[float], challenger_errors: Sequence[float], gate: LiveGate
) -> Decision:
    """Promote a regression challenger only if its paired absolute errors are smaller.

    The signed-rank test uses the sizes of the paired differences, not only their signs,
    and assumes no distribution for them; ties (equal errors) carry no evidence and are
    dropped. Raises ``ValueError`` on mismatched lengths or a negative or non-finite error.

    >>> gate = LiveGate(min_samples=10)
    >>> live_decision_regression([1.0] * 10, [0.5] * 10, gate).action
    <DecisionAction.PROMOTE: 'promote'>
    """
    samples = _check_paired(champion_errors, challenger_errors)
    champ = np.asarray(champion_errors, dtype=np.float64)
    chall = np.asarray(challenger_errors, dtype=np.float64)
    for who, errors in (("champion", champ), ("challenger", chall)):
        ok = bool(np.all(np.isfinite(errors)) and np.all(errors >= 0))
        _require(ok, f"{who} errors must be finite absolute errors (>= 0)")
    if samples < gate.min_samples:
        return _wait(samples, gate, WILCOXON_TEST)
    diff = champ - chall
    nonzero = diff[diff != 0]
    statistic, p_value = 0.0, 1.0
    if nonzero.size:
        result = scipy.stats.wilcoxon(nonzero, alternative="greater")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    champ_mae, chall_mae = float(champ.mean()), float(chall.mean())
    evidence: dict[str, EvidenceValue] = {
        "test": WILCOXON_TEST,
        "samples": samples,
        "min_samples": gate.min_samples,
        "nonzero_pairs": int(nonzero.size),
        "champion_mae": champ_mae,
        "challenger_mae": chall_mae,
        "statistic": statistic,
    }
    summary = (
        f"On {samples} paired requests the challenger's mean absolute error is "
        f"{_num(chall_mae)} vs the champion's {_num(champ_mae)}; one-sided Wilcoxon signed-rank"
    )
    return _judge(p_value, gate, summary, evidence)


def rollback_decision(
    champion_correct: Sequence[bool],
    previous_correct: Sequence[bool],
    guard: RollbackGuard,
    *,
    trivial_accuracy: float,
) -> Decision:
    """Serve the previous champion again only if it is significantly better than the
    current one on the same recent labelled examples (one-sided exact McNemar) and
    better than ignoring the features there (``trivial_accuracy``: the majority class's).

    Both models are judged on today's examples: comparing today's live error with the
    error a model had before a drift would roll back to a model of a world that is gone.
    In a drift both may be wrong most of the time; the less wrong is still not served
    when a constant answer would do better.

    >>> guard = RollbackGuard(min_samples=10)
    >>> rollback_decision([False] * 8 + [True] * 2, [True] * 10, guard, trivial_accuracy=0.5).action
    <DecisionAction.ROLLBACK: 'rollback'>
    >>> rollback_decision([True] * 10, [True] * 9 + [False], guard, trivial_accuracy=0.5).action
    <DecisionAction.KEEP: 'keep'>
    >>> wrong, seven_right = [False] * 10, [True] * 7 + [False] * 3
    >>> rollback_decision(wrong, seven_right, guard, trivial_accuracy=0.7).action
    <DecisionAction.KEEP: 'keep'>
    """
    samples = _check_paired(champion_correct, previous_correct)
    if samples < guard.min_samples:
        reason = (
            f"Only {samples} recent labelled examples (fewer than {guard.min_samples}) to "
            "compare the champion with the previous one: wait."
        )
        evidence: dict[str, EvidenceValue] = {
            "test": MCNEMAR_TEST,
            "samples": samples,
            "min_samples": guard.min_samples,
        }
        return Decision(WAIT, reason, evidence)
    pairs = list(zip(map(bool, champion_correct), map(bool, previous_correct), strict=True))
    b = sum(1 for now, before in pairs if before and not now)  # only the previous was right
    c = sum(1 for now, before in pairs if now and not before)  # only the champion was right
    p_value = exact_mcnemar_p(b, c)
    alpha = round(1.0 - guard.confidence, ALPHA_DIGITS)
    champion_acc = sum(now for now, _ in pairs) / samples
    previous_acc = sum(before for _, before in pairs) / samples
    evidence = {
        "test": MCNEMAR_TEST,
        "samples": samples,
        "min_samples": guard.min_samples,
        "champion_accuracy": champion_acc,
        "previous_accuracy": previous_acc,
        "previous_only_correct": b,
        "champion_only_correct": c,
        "p_value": p_value,
        "alpha": alpha,
        "trivial_accuracy": trivial_accuracy,
    }
    summary = (
        f"On the same {samples} recent labelled examples the champion scored "
        f"{_num(champion_acc)} and the previous champion {_num(previous_acc)} ({b} vs {c} "
        f"discordant); one-sided exact McNemar p = {_num(p_value)}"
    )
    if p_value > alpha + FLOAT_SLACK:
        return Decision(KEEP, f"{summary} > {_num(alpha)}: keep the champion.", evidence)
    if previous_acc <= trivial_accuracy:
        reason = (
            f"{summary} <= {_num(alpha)}, but the previous champion is no better than the "
            f"majority class there ({_num(trivial_accuracy)}): keep the champion."
        )
        return Decision(KEEP, reason, evidence)
    return Decision(ROLLBACK, f"{summary} <= {_num(alpha)}: roll back.", evidence)


@dataclass(frozen=True)
class SliceGate:
    """How much worse than the champion any one slice may be for a promotion to stand.

    An overall gain can hide a loss concentrated in one region or product line; a slice
    with at least ``min_examples`` held-out (or live) examples for both models may not
    regress by more than ``tolerance``, relative to the champion's figure on that slice.
    """

    metric: str = "log_loss"
    higher_is_better: bool = False
    tolerance: float = 0.02
    min_examples: int = 30

    def __post_init__(self) -> None:
        ok = math.isfinite(self.tolerance) and self.tolerance >= 0
        _require(ok, f"tolerance {self.tolerance} is not finite and >= 0")
        _require(self.min_examples >= 1, f"min_examples {self.min_examples} < 1")


@dataclass(frozen=True)
class SliceRegression:
    slice: str
    candidate: float
    champion: float
    regression: float  # relative, positive = worse
    examples: int


SliceFigures = Mapping[str, Mapping[str, float]]  # slice -> {metric: value, "n": count}


def slice_regressions(
    candidate: SliceFigures, champion: SliceFigures, gate: SliceGate
) -> list[SliceRegression]:
    """The slices on which the candidate is worse than the champion beyond the
    tolerance, worst first. Slices too small for either model are not judged.

    >>> gate = SliceGate(metric="accuracy", higher_is_better=True, tolerance=0.05)
    >>> cand = {"region=eu": {"accuracy": 0.80, "n": 100}, "region=us": {"accuracy": 0.9, "n": 5}}
    >>> champ = {"region=eu": {"accuracy": 0.90, "n": 100}, "region=us": {"accuracy": 1.0, "n": 5}}
    >>> [(r.slice, round(r.regression, 3)) for r in slice_regressions(cand, champ, gate)]
    [('region=eu', 0.111)]
    """
    found = []
    for name in sorted(set(candidate) & set(champion)):
        cand, champ = candidate[name], champion[name]
        examples = int(min(cand.get("n", 0), champ.get("n", 0)))
        if examples < gate.min_examples or gate.metric not in cand or gate.metric not in champ:
            continue
        c, b = float(cand[gate.metric]), float(champ[gate.metric])
        if not (math.isfinite(c) and math.isfinite(b)):
            continue
        loss = b - c if gate.higher_is_better else c - b
        regression = loss / max(abs(b), RELATIVE_FLOOR)
        if regression > gate.tolerance + FLOAT_SLACK:
            found.append(SliceRegression(name, c, b, regression, examples))
    return sorted(found, key=lambda r: (-r.regression, r.slice))


def gate_by_slices(decision: Decision, regressions: Sequence[SliceRegression]) -> Decision:
    """A promotion stands only if no slice regressed; otherwise the candidate is kept
    (registered, not served) and the reason names the slice that blocked it.

    >>> promote = Decision(PROMOTE, "Better overall: promote.", {})
    >>> blocked = gate_by_slices(promote, [SliceRegression("region=eu", 0.8, 0.9, 0.11, 100)])
    >>> blocked.action, blocked.evidence["blocked_by_slice"]
    (<DecisionAction.KEEP: 'keep'>, 'region=eu')
    """
    if decision.action != PROMOTE or not regressions:
        return decision
    worst = regressions[0]
    listing = "; ".join(
        f"{r.slice} {_num(r.candidate)} vs {_num(r.champion)} "
        f"({_num(100 * r.regression)} % worse, {r.examples} examples)"
        for r in regressions
    )
    reason = (
        f"{decision.reason.rstrip('.')}, but blocked by slice {worst.slice}: "
        f"{_num(100 * worst.regression)} % worse than the champion there; keep it "
        "registered, not served."
    )
    evidence = dict(decision.evidence) | {
        "blocked_by_slice": worst.slice,
        "slice_candidate": worst.candidate,
        "slice_champion": worst.champion,
        "slice_regression": worst.regression,
        "slice_examples": worst.examples,
        "slice_regressions": listing,
    }
    return Decision(KEEP, reason, evidence)


@dataclass(frozen=True)
class PairedGate:
    """How sure a promotion must be that the winner beats the champion on the very same
    held-out examples (classification): a one-sided exact McNemar test on the examples
    only one of the two got right."""

    confidence: float = 0.95

    def __post_init__(self) -> None:
        _require(0.0 < self.confidence < 1.0, f"confidence {self.confidence} not in (0, 1)")


def trivial_scores(
    train_labels: Sequence[LabelValue], holdout_labels: Sequence[LabelValue]
) -> dict[str, float]:
    """What a model that ignores the features scores on the holdout: the training
    labels' majority class (accuracy) and class frequencies (log loss) for a classifier,
    their mean (MAE) for a regressor. Nothing worse than this is ever served.

    >>> trivial_scores([True, True, False], [True, False])
    {'accuracy': 0.5, 'log_loss': 0.7520386983881371, 'roc_auc': 0.5}
    >>> trivial_scores([1.5, 2.5], [2.0, 4.0])
    {'mae': 1.0}
    """
    _require(bool(train_labels) and bool(holdout_labels), "trivial scores need labels")
    if not all(isinstance(y, bool | str) or float(y).is_integer() for y in train_labels):
        mean = sum(float(y) for y in train_labels) / len(train_labels)
        return {"mae": sum(abs(float(y) - mean) for y in holdout_labels) / len(holdout_labels)}
    counts = Counter(str(y) for y in train_labels)
    majority = majority_label(train_labels)
    total = len(train_labels)
    floor = 1e-15  # as the held-out log loss of a model clips its probabilities
    scores = {
        "accuracy": sum(str(y) == majority for y in holdout_labels) / len(holdout_labels),
        "log_loss": -sum(
            math.log(max(floor, counts.get(str(y), 0) / total)) for y in holdout_labels
        )
        / len(holdout_labels),
    }
    if len(counts) == 2:  # one score for every example ranks no better than chance
        scores["roc_auc"] = TRIVIAL_ROC_AUC
    return scores


def majority_label(labels: Sequence[LabelValue]) -> str:
    """The most frequent label, as text (a tie: the first in sorted order).

    >>> majority_label([True, False, True]), majority_label(["b", "a"])
    ('True', 'a')
    """
    _require(bool(labels), "a majority needs labels")
    counts = Counter(str(y) for y in labels)
    return max(sorted(counts), key=lambda k: counts[k])


def significantly_below_majority(
    correct: Sequence[bool], labels: Sequence[LabelValue], confidence: float
) -> bool:
    """Whether a classifier was right significantly less often than always answering
    the majority label of ``labels`` themselves on those examples: one-sided exact
    McNemar on the examples only one of the two got right, at ``confidence``. A model
    that merely scores a little below a majority picked in hindsight is not below it.

    >>> labels = [True] * 7 + [False] * 3
    >>> significantly_below_majority([False] * 10, labels, 0.95)
    True
    >>> significantly_below_majority([True] * 4 + [False] * 6, labels, 0.95)
    False
    """
    majority_only, model_only = _against_majority(correct, labels)
    alpha = round(1.0 - confidence, ALPHA_DIGITS)
    return exact_mcnemar_p(majority_only, model_only) <= alpha + FLOAT_SLACK


def significantly_above_majority(
    correct: Sequence[bool], labels: Sequence[LabelValue], confidence: float
) -> bool:
    """Whether a classifier was right significantly more often than always answering
    the majority label of ``labels`` themselves on those examples (one-sided exact
    McNemar, at ``confidence``): what clears it of being worse than a trivial baseline
    whatever its probabilities score. The labels' own majority, not a training
    window's: mid-change a fit right on 37 of 63 held-out examples cleared against the
    training majority's 23 while always answering the holdout's majority was right 40
    times.

    >>> labels = [False] * 7 + [True] * 5
    >>> significantly_above_majority([True] * 12, labels, 0.95)
    True
    >>> significantly_above_majority([False] * 7 + [True] * 5, labels, 0.95)
    False
    """
    majority_only, model_only = _against_majority(correct, labels)
    alpha = round(1.0 - confidence, ALPHA_DIGITS)
    return exact_mcnemar_p(model_only, majority_only) <= alpha + FLOAT_SLACK


def _against_majority(correct: Sequence[bool], labels: Sequence[LabelValue]) -> tuple[int, int]:
    """The examples only the labels' own majority class got right, and those only the
    model did (no labels: none)."""
    _check_paired(correct, labels)
    if not labels:
        return 0, 0
    majority = majority_label(labels)
    majority_right = [str(y) == majority for y in labels]
    return _discordant(majority_right, [bool(c) for c in correct])


def significantly_below_promise(
    correct: Sequence[bool], promised_right: int, promised_of: int, confidence: float
) -> bool:
    """Whether a model was right significantly less often on the examples it served
    than on the held-out examples it was judged on when it was trained
    (``promised_right`` of ``promised_of``): one-sided Fisher exact test at
    ``confidence``. Both counts are samples, so a small holdout promises little: a fit
    right on all of 63 held-out examples is not broken by one wrong answer.

    >>> significantly_below_promise([True] * 81 + [False] * 89, 41, 63, 0.95)
    True
    >>> significantly_below_promise([True] * 165 + [False] * 5, 63, 63, 0.95)
    False
    >>> significantly_below_promise([], 63, 63, 0.95)
    False
    """
    if not 0 <= promised_right <= promised_of:
        raise ValueError("promised_right must lie between 0 and promised_of")
    right = sum(bool(c) for c in correct)
    if not correct or promised_of == 0:
        return False
    table = [[right, len(correct) - right], [promised_right, promised_of - promised_right]]
    result = scipy.stats.fisher_exact(table, alternative="less")
    alpha = round(1.0 - confidence, ALPHA_DIGITS)
    return float(result.pvalue) <= alpha + FLOAT_SLACK


def better(a: Mapping[str, float], b: Mapping[str, float], gate: OfflineGate) -> bool:
    """``a`` scores strictly better than ``b`` on the gate's metric."""
    x, y = _metric(a, gate.metric, "first"), _metric(b, gate.metric, "second")
    return x > y if gate.higher_is_better else x < y


def best_contender(
    contenders: Mapping[str, Mapping[str, float]],
    trivial: Mapping[str, float],
    gate: OfflineGate,
    cleared: Collection[str] = (),
) -> str | None:
    """The best-scoring contender that beats the trivial baseline, or None.

    A contender in ``cleared`` (a classifier right significantly more often than the
    majority class on the same examples, :func:`significantly_above_majority`) is not
    worse than the trivial baseline whatever its metric says. The trivial log loss is
    the training priors': mid-change, with the labels' mix on the holdout no longer the
    training window's, a fit right 0.59 of the time where the majority class was right
    0.37 of the time scored 0.749 against the priors' 0.7245 and was kept off, while the
    pre-drift champion served 0.45 (recovery benchmark, gradual drift, seed 1).

    >>> gate = OfflineGate(metric="accuracy", higher_is_better=True)
    >>> best_contender({"a": {"accuracy": 0.7}, "b": {"accuracy": 0.9}}, {"accuracy": 0.6}, gate)
    'b'
    >>> best_contender({"a": {"accuracy": 0.5}}, {"accuracy": 0.6}, gate) is None
    True
    >>> best_contender({"a": {"accuracy": 0.5}}, {"accuracy": 0.6}, gate, cleared={"a"})
    'a'
    """
    if gate.metric not in trivial:  # no floor on this metric (e.g. ROC AUC, one class)
        trivial = {}
    fit = [
        name
        for name, scores in contenders.items()
        if not trivial or name in cleared or better(scores, trivial, gate)
    ]
    best = None
    for name in fit:
        if best is None or better(contenders[name], contenders[best], gate):
            best = name
    return best


def paired_no_regression(
    decision: Decision,
    winner_correct: Sequence[bool],
    champion_correct: Sequence[bool],
) -> Decision:
    """A fresh fit's promotion over a model that needs no proof to be replaced (an
    earlier fit of the same estimator on a refresh, a frozen online snapshot) stands
    unless the champion was right on more of the same held-out examples than the winner:
    a scheduled refit replaces the model it refreshes when it is no worse, as teams
    deploy scheduled retrains. Every other promotion must be significantly better
    (:func:`paired_promotion`).

    >>> promote = Decision(PROMOTE, "Better: promote.", {})
    >>> paired_no_regression(promote, [True] * 28 + [False] * 2, [True] * 30).action
    <DecisionAction.CHALLENGER: 'challenger'>
    >>> paired_no_regression(promote, [True, False], [False, True]).action
    <DecisionAction.PROMOTE: 'promote'>
    """
    if decision.action != PROMOTE:
        return decision
    b, c = _discordant(winner_correct, champion_correct)
    evidence = dict(decision.evidence) | {
        "paired_test": NO_REGRESSION_TEST,
        "winner_only_correct": b,
        "champion_only_correct": c,
    }
    if b >= c:
        reason = f"{decision.reason.rstrip('.')} (no regression: {b} vs {c} discordant)."
        return Decision(PROMOTE, reason, evidence)
    reason = (
        f"{decision.reason.rstrip('.').removesuffix(': promote')}, but on the same held-out "
        f"examples the champion was right more often ({c} vs {b} discordant): run it as "
        "challenger."
    )
    return Decision(CHALLENGER, reason, evidence)


def paired_promotion(
    decision: Decision,
    winner_correct: Sequence[bool],
    champion_correct: Sequence[bool],
    gate: PairedGate,
) -> Decision:
    """A promotion stands only if the winner is significantly better than the champion
    on the same held-out examples; otherwise it runs as challenger, judged live.

    >>> promote = Decision(PROMOTE, "Better: promote.", {})
    >>> paired_promotion(promote, [True] * 30, [False] * 30, PairedGate()).action
    <DecisionAction.PROMOTE: 'promote'>
    >>> paired_promotion(promote, [True] * 30, [True] * 28 + [False] * 2, PairedGate()).action
    <DecisionAction.CHALLENGER: 'challenger'>
    """
    if decision.action != PROMOTE:
        return decision
    b, c = _discordant(winner_correct, champion_correct)
    p_value = exact_mcnemar_p(b, c)
    alpha = round(1.0 - gate.confidence, ALPHA_DIGITS)
    evidence = dict(decision.evidence) | {
        "paired_test": MCNEMAR_TEST,
        "paired_p_value": p_value,
        "paired_alpha": alpha,
        "winner_only_correct": b,
        "champion_only_correct": c,
    }
    if p_value <= alpha + FLOAT_SLACK:
        reason = (
            f"{decision.reason.rstrip('.')} (paired: {b} vs {c} discordant, p = {_num(p_value)})."
        )
        return Decision(PROMOTE, reason, evidence)
    reason = (
        f"{decision.reason.rstrip('.').removesuffix(': promote')}, but on the same held-out "
        f"examples it is not significantly better ({b} vs {c} discordant, p = {_num(p_value)} "
        f"> {_num(alpha)}): run it as challenger."
    )
    return Decision(CHALLENGER, reason, evidence)
