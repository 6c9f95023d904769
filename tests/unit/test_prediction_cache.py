"""The cache's pure parts: when an entry may be served, and when it must not be."""

from __future__ import annotations

import math
import random

import pytest

from eddy.services.serving.cache import (
    PENDING_MAX_ENTITIES,
    Ask,
    Entry,
    Pending,
    Policy,
    Timing,
    worth_keeping,
)
from eddy.services.serving.scoring import Loaded, Scored
from eddy.streams.features.compute import (
    TIME_SINCE_LAST,
    Aggregate,
    EntityState,
    FeatureSet,
    FeatureValue,
    apply_event,
    feature_vector,
    sliding,
    tumbling,
)
from eddy.streams.features.definitions import FEATURES

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a whole minute
TIMING = Timing.of(FEATURES, fallback_s=3600)


def busy_state(seed: int, around: float = NOW) -> EntityState:
    """An entity with events over the two hours before ``around`` and a few after it
    (clock skew), so every window has events coming and going."""
    rng = random.Random(seed)
    state = EntityState()
    for i in range(300):
        at = around - rng.uniform(-200, 7200)
        features: dict[str, FeatureValue] = {
            "amount": round(rng.uniform(0, 100), 2),
            "country": rng.choice("ABCDEFG"),
        }
        apply_event(state, FEATURES, f"e{i}", at, features)
    return state


def test_the_time_step_is_the_gcd_of_the_window_steps() -> None:
    windows = FeatureSet(
        aggregates=(
            Aggregate("x", ("count",), sliding(900, 90)),
            Aggregate("x", ("sum",), tumbling(120)),
        )
    )
    assert Timing.of(windows, fallback_s=3600).step_s == 30
    assert Timing.of(FeatureSet(), fallback_s=3600).step_s == 3600
    assert TIMING.clock_driven == {TIME_SINCE_LAST}
    assert Timing.of(FeatureSet(time_since_last=False), 1).clock_driven == frozenset()


@pytest.mark.parametrize("seed", range(20))
def test_within_one_step_only_the_clock_driven_feature_changes(seed: int) -> None:
    """The claim the digest rests on, against the real feature code: two moments in one
    time step see the same vector but for seconds_since_last_event, less than a step
    apart; so equal digests (same rev) mean the same features."""
    rng = random.Random(seed)
    start = NOW + rng.randrange(0, 3600 * 24, TIMING.step_s)
    state = busy_state(seed, around=start)
    a, b = sorted(start + rng.uniform(0, TIMING.step_s - 1e-6) for _ in range(2))
    va, vb = feature_vector(state, FEATURES, a), feature_vector(state, FEATURES, b)
    assert TIMING.digest(va, a) == TIMING.digest(vb, b)
    assert {k: v for k, v in va.items() if k != TIME_SINCE_LAST} == {
        k: v for k, v in vb.items() if k != TIME_SINCE_LAST
    }
    assert 0 <= vb[TIME_SINCE_LAST] - va[TIME_SINCE_LAST] < TIMING.step_s  # type: ignore[operator]


def test_the_digest_changes_with_any_feature_and_with_the_step() -> None:
    state = busy_state(1)
    vector = feature_vector(state, FEATURES, NOW)
    digest = TIMING.digest(vector, NOW)
    for name in vector:
        if name == TIME_SINCE_LAST:
            continue
        changed = {**vector, name: "changed"}
        assert TIMING.digest(changed, NOW) != digest, name
    assert TIMING.digest({**vector, "new_raw_feature": 1}, NOW) != digest
    assert TIMING.digest(vector, NOW + TIMING.step_s) != digest
    # A request's own feature enters the vector, hence the digest.
    with_request = feature_vector(state, FEATURES, NOW, raw={"amount": 1234.5})
    assert TIMING.digest(with_request, NOW) != digest


def test_an_entry_expires_at_the_end_of_its_step_or_its_ttl() -> None:
    rng = random.Random(7)
    for _ in range(1000):
        as_of = NOW + rng.uniform(0, 86400)
        expiry = TIMING.expiry_ms(as_of, ttl_s=3600)
        step_end = (math.floor(as_of / TIMING.step_s) + 1) * TIMING.step_s
        assert expiry >= 1
        assert as_of + (expiry - 1) / 1000 < step_end  # never alive in the next step
        assert as_of + expiry / 1000 >= step_end - 1e-3  # and not gone much earlier
    assert TIMING.expiry_ms(NOW + 1, ttl_s=10) == 10_000


CHAMPION = Loaded("m", 3, "sklearn", None, artifact="a3")
ENTRY = Entry(3, "a3", rev=5, digest="d5", scored=Scored(False, {"False": 0.6}), at=NOW)


@pytest.mark.parametrize(
    ("model", "ask", "serves"),
    [
        (CHAMPION, Ask("u", 5, "d5"), True),
        (Loaded("m", 4, "sklearn", None, artifact="a4"), Ask("u", 5, "d5"), False),  # swapped
        (Loaded("m", 2, "sklearn", None, artifact="a2"), Ask("u", 5, "d5"), False),  # rolled back
        (Loaded("m", 3, "sklearn", None, artifact="other"), Ask("u", 5, "d5"), False),
        (CHAMPION, Ask("u", 6, "d5"), False),  # the entity was written since
        (CHAMPION, Ask("u", 4, "d5"), False),  # a newer entry than what this request read
        (CHAMPION, Ask("u", 5, "d6"), False),  # other request features, or another step
    ],
)
def test_an_entry_serves_only_its_own_model_revision_and_vector(
    model: Loaded, ask: Ask, serves: bool
) -> None:
    assert ENTRY.serves(model, ask) is serves


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b"null", b'{"version": "x"}', b'{"version": 1, "prediction": 1}', b"\xff"],
)
def test_an_unreadable_entry_is_a_miss(raw: bytes) -> None:
    assert Entry.decode(raw) is None


def test_entries_keep_the_answer_exactly() -> None:
    entry = Entry(9, "abc", 12, "d", Scored("gold", {"gold": 0.25, "silver": 0.75}), NOW + 0.5)
    assert Entry.decode(entry.encode()) == entry


def test_which_answers_are_kept() -> None:
    assert [worth_keeping(Policy.HOT, n, 3) for n in range(5)] == [False] * 3 + [True] * 2
    assert worth_keeping(Policy.ALL, 0, 3)
    assert not worth_keeping(Policy.OFF, 100, 1)


def stored(*events: tuple[str, float]) -> EntityState:
    state = EntityState()
    for event_id, at in events:
        apply_event(state, FEATURES, event_id, at, {"amount": 1.0})
    return state


def test_an_entity_is_ready_once_every_event_seen_is_stored() -> None:
    pending = Pending(patience_s=30)
    pending.add("u", "e1", NOW, seen_at=NOW)
    pending.add("u", "e2", NOW + 1, seen_at=NOW)
    assert pending.settle({"u": stored(("e1", NOW))}, FEATURES, NOW + 1) == []
    assert pending.entities() == ["u"]  # still waiting for e2
    both = stored(("e1", NOW), ("e2", NOW + 1))
    assert pending.settle({"u": both}, FEATURES, NOW + 2) == ["u"]
    assert pending.entities() == []


def test_an_event_refused_as_too_late_does_not_hold_the_entity_back() -> None:
    pending = Pending(patience_s=30)
    late = NOW - FEATURES.allowed_lateness_s - 1
    pending.add("u", "late", late, seen_at=NOW)
    assert pending.settle({"u": stored(("e1", NOW))}, FEATURES, NOW) == ["u"]


def test_events_that_never_arrive_are_forgotten_without_precomputing() -> None:
    pending = Pending(patience_s=30)
    pending.add("u", "e1", NOW, seen_at=NOW)
    assert pending.settle({"u": EntityState()}, FEATURES, NOW + 30) == []
    assert pending.entities() == ["u"]
    assert pending.settle({"u": EntityState()}, FEATURES, NOW + 31) == []
    assert pending.entities() == []


def test_pending_entities_are_bounded_oldest_first() -> None:
    pending = Pending(patience_s=30, capacity=2)
    for entity in ("a", "b", "c"):
        pending.add(entity, f"{entity}1", NOW, seen_at=NOW)
    assert pending.entities() == ["b", "c"]
    assert Pending(1.0).capacity == PENDING_MAX_ENTITIES
