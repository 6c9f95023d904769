"""Streams with a known concept drift for the demo, and the arithmetic of its report.

A scenario yields ``(features, label)`` from River's synthetic generators: one concept
until the drift index, another after it, so detection delay and recovery are measured
against a known truth. Besides the abrupt drifts (``stagger``, ``sea``, ``agrawal`` and
the bundled real ``bananas`` with its labels flipped) there are STAGGER's concepts 0 and
2 in three more shapes: ``gradual`` (the new concept's share rises linearly over
:data:`GRADUAL_SHARE` of the stream around the drift), ``recurring`` (the old concept
returns halfway between the drift and the end) and ``control`` (no drift at all: any
alert is a false alarm). Pure: no Kafka, no Redis.

>>> items = list(scenario_stream("sea", count=10, drift_at=5, seed=1))
>>> len(items), sorted(items[0][0])
(10, ['x0', 'x1', 'x2'])
>>> phase_accuracy([(0.0, True), (1.0, False), (2.0, True)], drift_at_s=1.5, recovery_s=0.4)
{'before': 0.5, 'during': None, 'after': 1.0}
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from river import datasets


@dataclass(frozen=True)
class Scenario:
    description: str
    before: Any
    after: Any


def _scenarios(seed: int) -> dict[str, Scenario]:
    synth = datasets.synth
    return {
        "sea": Scenario(
            "SEA: threshold concept 0 then 3 (River)",
            synth.SEA(variant=0, seed=seed),
            synth.SEA(variant=3, seed=seed + 1),
        ),
        "agrawal": Scenario(
            "Agrawal: classification function 0 then 2 (River)",
            synth.Agrawal(classification_function=0, seed=seed),
            synth.Agrawal(classification_function=2, seed=seed + 1),
        ),
        "stagger": Scenario(
            "STAGGER: concept 0 then 2 (River)",
            synth.STAGGER(classification_function=0, seed=seed),
            synth.STAGGER(classification_function=2, seed=seed + 1),
        ),
        "bananas": Scenario(
            "Bananas: River's bundled real dataset, labels flipped at the drift",
            _cycled(datasets.Bananas),
            ((x, not y) for x, y in _cycled(datasets.Bananas)),
        ),
    }


def _cycled(dataset: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """A bundled (finite) dataset, replayed from the start as often as needed."""
    while True:
        yield from dataset()


GRADUAL = "gradual"
RECURRING = "recurring"
CONTROL = "control"
GRADUAL_SHARE = 0.2  # of the stream over which a gradual drift moves to the new concept
SHAPES = {GRADUAL: "stagger", RECURRING: "stagger", CONTROL: "stagger"}  # on STAGGER 0 -> 2
SCENARIOS = (*_scenarios(0), *SHAPES)
DESCRIPTIONS = {
    GRADUAL: "STAGGER: concept 0 drifting gradually to 2 (River)",
    RECURRING: "STAGGER: concept 0, then 2, then 0 again (River)",
    CONTROL: "STAGGER: concept 0 throughout, no drift (control)",
}


def describe(name: str) -> str:
    return DESCRIPTIONS.get(name) or _scenarios(0)[name].description


def drifts(name: str) -> bool:
    """Whether the scenario's concept changes at all (the control's does not)."""
    return name != CONTROL


def change_lead(name: str, count: int) -> float:
    """How many items before the drift index the world starts to change: a gradual
    drift's new concept appears :data:`GRADUAL_SHARE` / 2 of the stream early.

    >>> change_lead("gradual", 1000), change_lead("stagger", 1000)
    (100.0, 0.0)
    """
    return GRADUAL_SHARE * count / 2 if name == GRADUAL else 0.0


def scenario_stream(
    name: str, count: int, drift_at: int, seed: int = 42
) -> Iterator[tuple[dict[str, Any], bool]]:
    """``count`` items, the concept switching at index ``drift_at``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    chosen = _scenarios(seed)[SHAPES.get(name, name)]
    before, after = iter(chosen.before), iter(chosen.after)
    rng = random.Random(seed)  # noqa: S311 - a reproducible stream, not a secret
    half = GRADUAL_SHARE * count / 2
    for i in range(count):
        if name == CONTROL:
            new = False
        elif name == GRADUAL:
            new = rng.random() < min(1.0, max(0.0, (i - drift_at + half) / (2 * half)))
        elif name == RECURRING:
            new = drift_at <= i < (drift_at + count) // 2
        else:
            new = i >= drift_at
        x, y = next(after if new else before)
        yield {f"x{k}" if isinstance(k, int) else str(k): _plain(v) for k, v in x.items()}, bool(y)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def phase_accuracy(
    outcomes: Sequence[tuple[float, bool]], drift_at_s: float, recovery_s: float
) -> dict[str, float | None]:
    """Accuracy before the drift, during the first ``recovery_s`` after it, and after.

    ``outcomes`` are (seconds since start, answer was right), for answered requests.
    """
    phases: dict[str, list[bool]] = {"before": [], "during": [], "after": []}
    for at, right in outcomes:
        if at < drift_at_s:
            phases["before"].append(right)
        elif at < drift_at_s + recovery_s:
            phases["during"].append(right)
        else:
            phases["after"].append(right)
    return {k: round(sum(v) / len(v), 4) if v else None for k, v in phases.items()}


RECOVERY_RATIO = 0.95  # recovered: the last third after the drift at this share of before


def verdict(
    outcomes: Sequence[tuple[float, bool]],
    alerts_at_s: Sequence[float],
    drift_at_s: float,
    end_s: float,
    concept_delay_events: int | None,
    drifted: bool = True,
    change_from_s: float | None = None,
) -> dict[str, Any]:
    """Did the loop keep its promise? Served accuracy in the last third of the time after
    the drift against the accuracy before it, alerts of any kind before the drift (false
    alarms: the world had not changed yet; in a control run without a drift, every alert
    is one), the detection delay, and whether answers were served before and after the
    drift at all. ``change_from_s``: when the world starts to change, if before the
    drift (a gradual drift): "before" and false alarms end there.

    >>> right = [(float(t), True) for t in range(90)]
    >>> verdict(right, [61.0], 60.0, end_s=90.0, concept_delay_events=50)["verdict"]
    'recovered'
    >>> verdict(right[:60], [10.0], 60.0, end_s=90.0, concept_delay_events=None)["verdict"]
    'never served after the drift'
    """
    changing = drift_at_s if change_from_s is None else change_from_s
    before = [right for at, right in outcomes if at < changing]
    last_third = drift_at_s + 2 * (end_s - drift_at_s) / 3
    after = [right for at, right in outcomes if at >= last_third]
    accuracy_before = sum(before) / len(before) if before else None
    accuracy_after = sum(after) / len(after) if after else None
    false_alarms = sum(1 for at in alerts_at_s if at < changing or not drifted)
    recovered = (
        accuracy_before is not None
        and accuracy_after is not None
        and accuracy_after >= RECOVERY_RATIO * accuracy_before
    )
    if not before:
        word = "never served before the drift"
    elif not after:
        word = "never served after the drift"
    elif not recovered:
        word = "not recovered"
    else:
        word = "recovered"
    return {
        "verdict": word,
        "served": bool(before and after),
        "recovered": recovered,
        "accuracy_before": None if accuracy_before is None else round(accuracy_before, 4),
        "accuracy_last_third": None if accuracy_after is None else round(accuracy_after, 4),
        "recovery_ratio": RECOVERY_RATIO,
        "false_alarms": false_alarms,
        "detection_delay_events": concept_delay_events,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-100) of ``values``, None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, int(q * 10) - 1)]
