"""The accounting: what the driver sent, what the system holds, and whether they agree.

Pure. A :class:`Ledger` per scenario records what the brokers acknowledged (every id and
byte the driver sent); an :class:`Observed` is the system's real state read back from
Redis, the topics, the learner's checkpoint and the registry. :func:`account` compares
the two and names every disagreement:

- **events**: every acknowledged event is applied (its id is in its entity's state in
  the online store) or dead-lettered (a dead letter names its partition and offset);
  nothing is applied twice: each entity's stored state equals, byte for byte, the state
  its acknowledged events imply (feature state is order-free, so any delivery order of
  the same events gives the same bytes, and a double application would not);
- **learning**: every labelled event's training example is on the topic and learned,
  every label of an answered request is joined and learned; the learner's example count
  equals the number of distinct ids it has learned (nothing learned twice);
- **answers**: every request is answered; a request answered more than once gets the
  same prediction and model version each time, and no more repeats than the
  at-least-once bound (one predictor batch per predictor restart or broker restart);
- **registry**: one version per alert burst, per operator command and per learned offset
  range; every injected alert retrained exactly once;
- **resumption**: the scenario caught up (everything above, and consumer lag 0) by itself
  within the deadline.

>>> event = SentEvent("e1", "u1", 1_767_225_600.0, {"amount": 2.0}, labelled=False)
>>> ledger = Ledger("demo", entities={"u1"}, events={"e1": event})
>>> figures = account(ledger, Observed(states={"u1": expected_state([event])}), Bounds(200))
>>> figures.applied, figures.lost, figures.problems
(1, 0, [])
>>> account(ledger, Observed(), Bounds(200)).problems
['1 acknowledged events neither applied nor dead-lettered (lost)']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eddy.streams.features.compute import EntityState, apply_event, encode_state
from eddy.streams.features.definitions import FEATURES
from eddy.streams.store.recent_ids import RecentIds

AGGREGATED = "amount"  # the aggregated feature whose bucket counts reveal a double count
CHECKPOINT = "checkpoint"
ALERT = "alert"
CONTROL = "control"
EXAMPLES_SHOWN = 3


@dataclass(frozen=True)
class SentEvent:
    event_id: str
    entity_id: str
    event_time: float
    features: dict[str, Any]
    labelled: bool


@dataclass
class Ledger:
    """What the driver sent during one scenario, as acknowledged by the broker."""

    name: str
    entities: set[str] = field(default_factory=set)
    events: dict[str, SentEvent] = field(default_factory=dict)
    unacknowledged: int = 0  # sends the broker never confirmed (not counted as "in")
    bad_events: dict[tuple[int, int], str] = field(default_factory=dict)  # (p, o) → class
    requests: set[str] = field(default_factory=set)
    bad_requests: dict[tuple[int, int], str | None] = field(default_factory=dict)  # → answer id
    labels: set[str] = field(default_factory=set)  # request ids whose label was sent
    # Requests sent before Redis came back empty: the snapshots of what they were served
    # lived only in Redis, so their labels cannot be joined (a known gap, counted apart).
    requests_before_redis_loss: set[str] = field(default_factory=set)
    requests_sent: list[str] = field(default_factory=list)  # as sent, before any ack
    # Malformed training examples and labels: (topic, partition, offset) → error class.
    bad_learning: dict[tuple[str, int, int], str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)  # alerts injected by the driver
    # The fuzz's mutated records: (topic, partition, offset) → mutation.
    fuzzed: dict[tuple[str, int, int], str] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)  # by the supervisors, kills too
    broker_restarts: int = 0
    started: float = 0.0  # wall clock
    ended: float | None = None
    recovered_s: float | None = None  # fault over → caught up
    lag: dict[str, int] = field(default_factory=dict)  # consumer groups, when caught up
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # found while the fault was done


@dataclass(frozen=True)
class Answer:
    """What identifies an answer, latency aside: repeats must agree on this."""

    prediction: str
    model_version: str | None
    error: str | None


@dataclass(frozen=True)
class SeenVersion:
    version: int
    flavor: str
    created_at: float
    trigger: str  # alert, control, checkpoint, schedule, operator
    trigger_ids: tuple[str, ...]  # the alert burst, the command id, ...
    trained_on: tuple[tuple[str, int, int], ...]  # (topic[partition], first, last)


@dataclass
class Observed:
    """The system's state as read back from it (empty parts: not read, or nothing there)."""

    states: dict[str, EntityState] = field(default_factory=dict)
    dead_letters: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    examples: Counter[str] = field(default_factory=Counter)  # copies of each example id
    learned: RecentIds | set[str] = field(default_factory=set)  # the learner's dedup memory
    learner_examples: int = 0
    versions: list[SeenVersion] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)  # service → records still to process
    skipped_backlog: int = 0  # records behind the learner's commits that it skips


@dataclass(frozen=True)
class Bounds:
    batch_size: int  # the predictor's batch: what one crash can answer twice
    prefix: str = ""  # the deployment's topic prefix
    events_topic: str = "events"  # dead letters name their source without the prefix
    requests_topic: str = "prediction-requests"


@dataclass
class Figures:
    scenario: str
    events_in: int = 0
    applied: int = 0
    dead_lettered: int = 0
    lost: int = 0
    double_counted: int = 0  # extra applications found in entities' aggregates
    state_mismatches: int = 0  # entities whose state is not what their events imply
    dead_letter_copies: int = 0  # repeats of a dead letter (at-least-once, allowed)
    unacknowledged: int = 0
    examples_expected: int = 0
    examples_learned: int = 0
    requests_in: int = 0
    answered: int = 0
    repeated_answers: int = 0
    repeat_bound: int = 0
    differing_repeats: int = 0
    versions: int = 0
    duplicate_versions: int = 0
    alerts_injected: int = 0
    alert_retrains: list[int] = field(default_factory=list)  # versions per injected alert
    kills: int = 0
    unplanned_restarts: int = 0
    recovered_s: float | None = None
    lag: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def expected_state(events: Iterable[SentEvent]) -> EntityState:
    """The state an entity must hold after exactly these events, in any order."""
    state = EntityState()
    for event in events:
        apply_event(state, FEATURES, event.event_id, event.event_time, event.features)
    return state


def _aggregate_count(state: EntityState) -> int:
    return sum(bucket.count for bucket in state.buckets.get(AGGREGATED, {}).values())


def duplicate_versions(versions: list[SeenVersion]) -> set[int]:
    """Versions that repeat an earlier one's cause: the same alert (in any burst), the
    same command, or (online snapshots) the same learned offsets.

    >>> first = SeenVersion(1, "sklearn", 0.0, ALERT, ("a1", "a2"), ())
    >>> again = SeenVersion(2, "sklearn", 1.0, ALERT, ("a2",), ())
    >>> other = SeenVersion(3, "sklearn", 2.0, ALERT, ("a3",), ())
    >>> sorted(duplicate_versions([first, again, other]))
    [2]
    """
    seen: set[tuple[str, Any]] = set()
    duplicates: set[int] = set()
    for version in sorted(versions, key=lambda v: v.version):
        if version.trigger == CHECKPOINT:
            causes: list[tuple[str, Any]] = [(CHECKPOINT, version.trained_on)]
        elif version.trigger in (ALERT, CONTROL):
            causes = [(version.trigger, i) for i in version.trigger_ids]
        else:
            continue
        if any(cause in seen for cause in causes):
            duplicates.add(version.version)
        seen.update(causes)
    return duplicates


def versions_for(versions: list[SeenVersion], alert_id: str) -> int:
    return sum(1 for v in versions if v.trigger == ALERT and alert_id in v.trigger_ids)


def account(ledger: Ledger, observed: Observed, bounds: Bounds) -> Figures:
    """Compare one scenario's ledger with the observed state; every gap is a problem."""
    figures = Figures(
        ledger.name,
        unacknowledged=ledger.unacknowledged,
        notes=dict(ledger.notes),
        problems=list(ledger.problems),
    )
    _account_events(ledger, observed, bounds, figures)
    _account_learning(ledger, observed, figures)
    _account_answers(ledger, observed, bounds, figures)
    _account_registry(ledger, observed, figures)
    figures.kills = sum(ledger.kills.values())
    figures.unplanned_restarts = max(0, sum(ledger.restarts.values()) - figures.kills)
    if ledger.fuzzed:
        _account_fuzz(ledger, observed, figures)
    figures.recovered_s = ledger.recovered_s
    figures.lag = sum(ledger.lag.values())
    if ledger.ended is not None and ledger.recovered_s is None:
        figures.problems.append("did not catch up by itself within the deadline")
    return figures


def _account_fuzz(ledger: Ledger, observed: Observed, figures: Figures) -> None:
    """Records tried, dead-lettered (the rest were valid, or answered with an error),
    and crashes, which must be none: a worker that restarts on a record has a bug."""
    tried = Counter(topic for topic, _, _ in ledger.fuzzed)
    dead = Counter(where[0] for where in ledger.fuzzed if where in observed.dead_letters)
    figures.notes["fuzz"] = {
        "tried": len(ledger.fuzzed),
        "dead_lettered": sum(dead.values()),
        "crashes": figures.unplanned_restarts,
        "by_topic": {t: f"{dead[t]}/{n} dead-lettered" for t, n in sorted(tried.items())},
        "mutations": dict(Counter(ledger.fuzzed.values())),
    }
    if figures.unplanned_restarts:
        figures.problems.append(
            f"{figures.unplanned_restarts} worker crashes during the fuzz: {dict(ledger.restarts)}"
        )


def _applied(ledger: Ledger, observed: Observed) -> set[str]:
    """The ids the online store holds for the scenario's entities."""
    return {
        event_id
        for entity in ledger.entities
        for event_id in observed.states.get(entity, EntityState()).seen
    }


def _account_events(ledger: Ledger, observed: Observed, bounds: Bounds, figures: Figures) -> None:
    applied_ids = _applied(ledger, observed)
    figures.events_in = len(ledger.events) + len(ledger.bad_events)
    figures.applied = sum(1 for event_id in ledger.events if event_id in applied_ids)
    letters = {
        (partition, offset): classes
        for (topic, partition, offset), classes in observed.dead_letters.items()
        if topic == bounds.events_topic
    }
    dead = [where for where in ledger.bad_events if where in letters]
    figures.dead_lettered = len(dead)
    figures.dead_letter_copies = sum(len(letters[where]) - 1 for where in dead)
    figures.lost = figures.events_in - figures.applied - figures.dead_lettered
    if figures.lost:
        figures.problems.append(
            f"{figures.lost} acknowledged events neither applied nor dead-lettered (lost)"
        )
    wrong_class = [w for w in dead if ledger.bad_events[w] not in letters[w]]
    if wrong_class:
        figures.problems.append(f"{len(wrong_class)} dead letters with the wrong error class")
    by_entity: dict[str, list[SentEvent]] = {}
    for event in ledger.events.values():
        if event.event_id in applied_ids:
            by_entity.setdefault(event.entity_id, []).append(event)
    for entity, events in sorted(by_entity.items()):
        stored = observed.states[entity]
        expected = expected_state(events)
        figures.double_counted += max(0, _aggregate_count(stored) - _aggregate_count(expected))
        unknown = set(stored.seen) - {e.event_id for e in events}
        if unknown or encode_state(stored) != encode_state(expected):
            figures.state_mismatches += 1
    if figures.double_counted:
        figures.problems.append(f"{figures.double_counted} events counted twice in features")
    if figures.state_mismatches:
        figures.problems.append(
            f"{figures.state_mismatches} entities whose online state differs from what their "
            "acknowledged events imply"
        )


def _account_learning(ledger: Ledger, observed: Observed, figures: Figures) -> None:
    labelled = {e.event_id for e in ledger.events.values() if e.labelled}
    applied = _applied(ledger, observed)
    missing_examples = sorted(labelled & applied - set(observed.examples))
    if missing_examples:
        figures.problems.append(
            f"{len(missing_examples)} labelled events applied without a training example "
            f"(e.g. {missing_examples[0]})"
        )
    answered = set(observed.answers)
    unjoinable = ledger.labels & answered & ledger.requests_before_redis_loss
    expected = (labelled & applied) | (ledger.labels & answered) - unjoinable
    figures.examples_expected = len(expected)
    figures.examples_learned = len(_learned(expected, observed))
    if unjoinable:
        lost = len(unjoinable) - len(_learned(unjoinable, observed))
        figures.notes["request labels lost with Redis's snapshots"] = f"{lost} of {len(unjoinable)}"
    if figures.examples_learned < figures.examples_expected:
        missing = sorted(expected - _learned(expected, observed))
        figures.problems.append(
            f"{figures.examples_expected - figures.examples_learned} examples or labels "
            "never learned"
        )
        before = ledger.requests_before_redis_loss
        figures.notes["never learned (e.g.)"] = [
            f"{m} ({'request label' if m in ledger.labels else 'event'}"
            f"{', sent before Redis lost its data' if m in before else ''})"
            for m in missing[:5]
        ]
    undead = [
        where
        for where, error_class in ledger.bad_learning.items()
        if error_class not in observed.dead_letters.get(where, [])
    ]
    if undead:
        figures.problems.append(
            f"{len(undead)} malformed examples or labels not dead-lettered with their class"
        )


def _learned(ids: set[str], observed: Observed) -> set[str]:
    """Those of ``ids`` that the learner's dedup memory holds."""
    return {record_id for record_id in ids if record_id in observed.learned}


def _account_answers(ledger: Ledger, observed: Observed, bounds: Bounds, figures: Figures) -> None:
    figures.requests_in = len(ledger.requests) + len(ledger.bad_requests)
    answered = [r for r in ledger.requests if r in observed.answers]
    for (partition, offset), answer_id in ledger.bad_requests.items():
        # An unreadable request is answered under its full topic name, partition, offset.
        request_id = answer_id or f"{bounds.prefix}{bounds.requests_topic}:{partition}:{offset}"
        if request_id in observed.answers:
            answered.append(request_id)
    figures.answered = len(answered)
    if figures.answered < figures.requests_in:
        figures.problems.append(f"{figures.requests_in - figures.answered} requests never answered")
    letters = {(p, o) for (topic, p, o) in observed.dead_letters if topic == bounds.requests_topic}
    undead = [where for where in ledger.bad_requests if where not in letters]
    if undead:
        figures.problems.append(f"{len(undead)} malformed requests not dead-lettered")
    figures.repeated_answers = sum(len(observed.answers[r]) - 1 for r in answered)
    differing = sorted(r for r in answered if len(set(observed.answers[r])) > 1)
    figures.differing_repeats = len(differing)
    # Each answer is computed when the request is handled, from the features as of then:
    # a re-answer later can differ without any model change (see the examples).
    same_version = [
        r for r in differing if len({a.model_version for a in observed.answers[r]}) == 1
    ]
    ends = max(ledger.restarts["predictor"], ledger.kills["predictor"]) + ledger.broker_restarts
    figures.repeat_bound = bounds.batch_size * ends
    if figures.repeated_answers > figures.repeat_bound:
        figures.problems.append(
            f"{figures.repeated_answers} repeated answers, beyond the at-least-once bound of "
            f"{figures.repeat_bound}"
        )
    if differing:
        figures.problems.append(
            f"{len(differing)} requests answered twice with a different prediction or model "
            f"version ({len(same_version)} of them by the same model version)"
        )
        figures.notes["differing repeats (e.g.)"] = [
            f"{r}: "
            + " then ".join(f"{a.prediction} by v{a.model_version}" for a in observed.answers[r])
            for r in differing[:EXAMPLES_SHOWN]
        ]


def _account_registry(ledger: Ledger, observed: Observed, figures: Figures) -> None:
    during = [v for v in observed.versions if _during(v, ledger)]
    figures.versions = len(during)
    duplicates = duplicate_versions(observed.versions)
    figures.duplicate_versions = sum(1 for v in during if v.version in duplicates)
    if figures.duplicate_versions:
        figures.problems.append(
            f"{figures.duplicate_versions} registry versions repeat an earlier version's cause"
        )
    figures.alerts_injected = len(ledger.alerts)
    figures.alert_retrains = [versions_for(observed.versions, a) for a in ledger.alerts]
    for alert_id, count in zip(ledger.alerts, figures.alert_retrains, strict=True):
        if count != 1:
            figures.problems.append(f"alert {alert_id} retrained {count} times (expected once)")


def account_totals(
    figures: list[Figures],
    ledgers: list[Ledger],
    observed: Observed,
    warm_up: set[str],
) -> Figures:
    """The whole run: the scenarios' sums, plus what only the whole run can show (nothing
    learned twice, the warm-up examples learned, no duplicate version at any time,
    every consumer group caught up at the end)."""
    total = Figures("all")
    for name in (
        "events_in", "applied", "dead_lettered", "lost", "double_counted", "state_mismatches",
        "dead_letter_copies", "unacknowledged", "examples_expected", "examples_learned",
        "requests_in", "answered", "repeated_answers", "repeat_bound", "differing_repeats",
        "alerts_injected", "kills", "unplanned_restarts",
    ):  # fmt: skip
        setattr(total, name, sum(getattr(f, name) for f in figures))
    total.alert_retrains = [n for f in figures for n in f.alert_retrains]
    total.problems = [f"{f.scenario}: {p}" for f in figures for p in f.problems]
    learned_twice = observed.learner_examples - len(observed.learned)
    warm_up_learned = _learned(warm_up, observed)
    total.notes = {
        "learned_twice": learned_twice,
        "warm_up_examples": len(warm_up),
        "warm_up_learned": len(warm_up_learned),
        "learner backlog it skips (committed lag)": observed.skipped_backlog,
    }
    if learned_twice:
        total.problems.append(f"the learner counts {learned_twice} more examples than ids learned")
    if len(warm_up_learned) < len(warm_up):
        total.problems.append(
            f"{len(warm_up) - len(warm_up_learned)} warm-up examples never learned"
        )
    duplicates = duplicate_versions(observed.versions)
    total.versions = len(observed.versions)
    total.duplicate_versions = len(duplicates)
    outside = sorted(
        v.version
        for v in observed.versions
        if v.version in duplicates and not any(_during(v, ledger) for ledger in ledgers)
    )
    if outside:
        total.problems.append(f"duplicate registry versions outside the scenarios: {outside}")
    total.lag = sum(observed.lag.values())
    if total.lag:
        total.problems.append(f"consumer groups still behind at the end: {observed.lag}")
    return total


def _during(version: SeenVersion, ledger: Ledger) -> bool:
    end = ledger.ended if ledger.ended is not None else float("inf")
    return ledger.started <= version.created_at < end


def pending(figures: Figures, lag: dict[str, int]) -> list[str]:
    """What a scenario still waits for; empty once it has caught up.

    >>> pending(Figures("x", events_in=2, applied=1, lost=1), {"features": 3})
    ['1 events not applied or dead-lettered', "lag {'features': 3}"]
    """
    waiting = []
    if figures.lost:
        waiting.append(f"{figures.lost} events not applied or dead-lettered")
    if figures.examples_learned < figures.examples_expected:
        waiting.append(f"{figures.examples_expected - figures.examples_learned} not learned")
    if figures.answered < figures.requests_in:
        waiting.append(f"{figures.requests_in - figures.answered} requests not answered")
    if any(count == 0 for count in figures.alert_retrains):
        waiting.append("an injected alert not retrained")
    behind = {group: n for group, n in lag.items() if n}
    if behind:
        waiting.append(f"lag {behind}")
    return waiting
