"""Properties of eddy.streams.drift.concept_watch.ConceptWatch, the cooldown that delays, never
drops.

On seeded Bernoulli error streams (rate 0.1, then higher): a rise outside any cooldown
is raised at once, where the detector fires, and its ``change_at`` is the event time of
an update within the detector's ``change_age`` span, near the true change; a second rise
inside the cooldown is held and raised exactly when the cooldown ends, marked deferred;
a held detection whose errors fall back to the detector's baseline is dropped; a falling
error raises nothing. Feeding a stream one element at a time, in one batch or in random
chunks gives the same detections at the same global positions, and a pickled watch (even
one holding a detection) continues like the original. A scripted detector pins the
cooldown arithmetic to the exact update.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence

import pytest

from eddy.streams.drift.concept_watch import TIME_MEMORY, ConceptWatch
from eddy.streams.drift.detectors import DriftSignal, make_detector
from tests.unit.adwin_cuts import two_sided_cuts

SEED = 42
T0 = 1_700_000_000.0
STEP = 2.0  # seconds between examples: event times are not update numbers
CHANGE = 1_000  # first index at the higher error rate

Found = tuple[int, bool, float | None, DriftSignal]  # global index, deferred, change_at, signal


def _errors(rates: Sequence[float], seed: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < rate) for rate in rates]


def _times(n: int, start: int = 0) -> list[float]:
    return [T0 + STEP * t for t in range(start, start + n)]


def _feed(watch: ConceptWatch, errors: Sequence[float], sizes: Sequence[int]) -> list[Found]:
    """Feed ``errors`` in chunks of ``sizes`` (cycled); detections at global indices."""
    found: list[Found] = []
    start, k = 0, 0
    while start < len(errors):
        stop = min(len(errors), start + sizes[k % len(sizes)])
        chunk = watch.update_many(errors[start:stop], _times(stop - start, start))
        found += [(start + d.index, d.deferred, d.change_at, d.signal) for d in chunk]
        start, k = stop, k + 1
    return found


def _raw(name: str, errors: Sequence[float]) -> list[tuple[int, DriftSignal]]:
    """Where the bare one-sided detector fires on the stream, with no cooldown."""
    return make_detector(name, seed=SEED).update_many(errors)


def _within_span(change_at: float | None, index: int, signal: DriftSignal) -> bool:
    """``change_at`` is the event time of an update in the detector's span: from
    ``change_age`` updates back to the update at ``index`` that fired."""
    assert signal.change_age is not None
    span = _times(signal.change_age, index - signal.change_age + 1)
    return change_at in span


NEAR = 50 * STEP  # how close to the true change a located change must be (50 updates)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_rise_outside_any_cooldown_is_raised_at_once_where_it_began(seed: int) -> None:
    errors = _errors([0.1] * CHANGE + [0.5] * 1_000, seed)
    watch = ConceptWatch("adwin", seed=SEED, cooldown=500)
    found = watch.update_many(errors, _times(len(errors)))
    (raw_index, raw_signal), *_ = _raw("adwin", errors)
    assert len(found) == 1
    detection = found[0]
    assert detection.index == raw_index  # not delayed: the update the detector fired on
    assert not detection.deferred
    assert CHANGE <= detection.index < CHANGE + 300
    assert detection.signal == raw_signal
    assert _within_span(detection.change_at, detection.index, detection.signal)
    assert detection.change_at is not None
    assert abs(detection.change_at - _times(1, CHANGE)[0]) <= NEAR
    assert not watch.holding


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_rise_inside_the_cooldown_is_held_and_raised_when_the_cooldown_ends(seed: int) -> None:
    cooldown = 500
    errors = _errors([0.1] * CHANGE + [0.4] * 300 + [0.9] * 700, seed)
    raw = _raw("adwin", errors)
    assert len(raw) >= 2
    assert raw[1][0] - raw[0][0] < cooldown
    (first, _), (second, second_signal) = raw[0], raw[1]
    watch = ConceptWatch("adwin", seed=SEED, cooldown=cooldown)
    found = _feed(watch, errors, [len(errors)])
    assert [(i, deferred) for i, deferred, _, _ in found] == [
        (first, False),
        (first + cooldown, True),
    ]
    _, _, change_at, signal = found[1]
    assert signal == second_signal  # the held detection, not a new one
    assert _within_span(change_at, second, second_signal)  # located where it was detected
    assert change_at is not None
    assert abs(change_at - _times(1, CHANGE + 300)[0]) <= NEAR  # the second rise's start


def test_a_held_detection_is_held_until_exactly_the_update_the_cooldown_ends() -> None:
    cooldown = 500
    errors = _errors([0.1] * CHANGE + [0.4] * 300 + [0.9] * 700, 1)
    raw = [i for i, _ in _raw("adwin", errors)]
    watch = ConceptWatch("adwin", seed=SEED, cooldown=cooldown)
    holding = []
    raised = []
    for i, error in enumerate(errors):
        raised += [i for _ in watch.update_many([error], _times(1, i))]
        holding.append(watch.holding)
    assert raised == [raw[0], raw[0] + cooldown]
    held = [i for i, h in enumerate(holding) if h]
    assert held == list(range(raw[1], raw[0] + cooldown))


def test_a_held_detection_whose_errors_fall_back_is_dropped() -> None:
    cooldown = 1_000
    rates = [0.1] * CHANGE + [0.4] * 300 + [0.9] * 150 + [0.1] * 1_550
    for seed in range(3):
        errors = _errors(rates, seed)
        raw = _raw("adwin", errors)
        assert len(raw) == 2
        assert raw[1][0] - raw[0][0] < cooldown
        assert raw[1][1].baseline is not None
        watch = ConceptWatch("adwin", seed=SEED, cooldown=cooldown)
        was_holding = False
        found: list[tuple[int, bool]] = []
        for start in range(0, len(errors), 100):
            chunk = errors[start : start + 100]
            found += [
                (start + d.index, d.deferred)
                for d in watch.update_many(chunk, _times(len(chunk), start))
            ]
            was_holding |= watch.holding
        assert was_holding
        assert found == [(raw[0][0], False)]
        assert not watch.holding


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_a_falling_error_raises_nothing(name: str) -> None:
    for seed in range(3):
        errors = _errors([0.5] * CHANGE + [0.1] * 1_000, seed)
        watch = ConceptWatch(name, seed=SEED, cooldown=500)
        assert watch.update_many(errors, _times(len(errors))) == []
    # The premise: a two-sided detector does cut this stream.
    assert two_sided_cuts(_errors([0.5] * CHANGE + [0.1] * 1_000, 0)) > 0


EQUIVALENCE_RATES = (
    [0.1] * 800
    + [0.4] * 300
    + [0.9] * 200
    + [0.1] * 700
    + [0.4] * 300
    + [0.9] * 120
    + [0.1] * 600
    + [0.7] * 400
)


@pytest.mark.parametrize("name", ["adwin", "ddm", "page_hinkley", "hddm_a"])
def test_one_by_one_one_batch_and_random_chunks_give_the_same_detections(name: str) -> None:
    errors = _errors(EQUIVALENCE_RATES, 5)
    whole = _feed(ConceptWatch(name, seed=SEED, cooldown=400), errors, [len(errors)])
    assert len(whole) >= 3
    assert any(deferred for _, deferred, _, _ in whole)
    one_by_one = _feed(ConceptWatch(name, seed=SEED, cooldown=400), errors, [1])
    assert one_by_one == whole
    rng = random.Random(11)
    for _ in range(3):
        sizes = [rng.randint(1, 97) for _ in range(200)]
        assert _feed(ConceptWatch(name, seed=SEED, cooldown=400), errors, sizes) == whole


def test_a_pickled_watch_continues_exactly_like_the_original() -> None:
    cooldown = 500
    errors = _errors([0.1] * CHANGE + [0.4] * 300 + [0.9] * 700, 1)
    raw = [i for i, _ in _raw("adwin", errors)]
    split = raw[1] + 10  # inside the cooldown, while the second rise is held
    original = ConceptWatch("adwin", seed=SEED, cooldown=cooldown)
    before = _feed(original, errors[:split], [64])
    assert original.holding
    copy = pickle.loads(pickle.dumps(original))
    rest = errors[split:]

    def shifted(found: list[Found]) -> list[Found]:
        return [(split + i, deferred, at, signal) for i, deferred, at, signal in found]

    sizes = [37]
    after_original = shifted(_feed_from(original, rest, split, sizes))
    after_copy = shifted(_feed_from(copy, rest, split, sizes))
    assert after_copy == after_original
    assert [(i, d) for i, d, _, _ in before + after_original] == [
        (raw[0], False),
        (raw[0] + cooldown, True),
    ]
    assert copy.seen == original.seen == len(errors)


def _feed_from(
    watch: ConceptWatch, errors: Sequence[float], offset: int, sizes: Sequence[int]
) -> list[Found]:
    """:func:`_feed` for a stream that starts at global index ``offset`` (its times)."""
    found: list[Found] = []
    start, k = 0, 0
    while start < len(errors):
        stop = min(len(errors), start + sizes[k % len(sizes)])
        chunk = watch.update_many(errors[start:stop], _times(stop - start, offset + start))
        found += [(start + d.index, d.deferred, d.change_at, d.signal) for d in chunk]
        start, k = stop, k + 1
    return found


class _Scripted:
    """A detector that fires on given update numbers (1-based), with a given baseline."""

    name = "scripted"

    def __init__(self, fires: dict[int, float | None]) -> None:
        self.fires = fires
        self.seen = 0

    def update(self, value: float) -> DriftSignal:  # pragma: no cover - protocol only
        raise NotImplementedError

    def update_many(self, values: Sequence[float]) -> list[tuple[int, DriftSignal]]:
        fired = []
        for i, _ in enumerate(values):
            self.seen += 1
            if self.seen in self.fires:
                baseline = self.fires[self.seen]
                fired.append((i, DriftSignal(True, False, "scripted", 1.0, None, 3, baseline)))
        return fired


def _scripted(fires: dict[int, float | None], cooldown: int) -> ConceptWatch:
    watch = ConceptWatch("adwin", seed=SEED, cooldown=cooldown)
    watch.detector = _Scripted(fires)
    return watch


def _raised(
    watch: ConceptWatch, errors: Sequence[float], sizes: Sequence[int]
) -> list[tuple[int, bool, float | None]]:
    return [(i, deferred, at) for i, deferred, at, _ in _feed(watch, errors, sizes)]


@pytest.mark.parametrize("sizes", [[40], [1], [3, 7, 2]])
def test_scripted_held_detection_without_baseline_is_raised_exactly_at_the_cooldown_end(
    sizes: list[int],
) -> None:
    # Updates 10 (raised) and 15 (inside the cooldown of 10 updates: held until update 20).
    watch = _scripted({10: None, 15: None}, cooldown=10)
    assert _raised(watch, [0.0] * 40, sizes) == [
        (9, False, _times(1, 7)[0]),  # change_age 3: the change began at update 8
        (19, True, _times(1, 12)[0]),  # raised at update 20, located where it was found
    ]


@pytest.mark.parametrize(
    ("after", "raised"), [(1.0, True), (0.5, False), (0.0, False)], ids=["above", "at", "below"]
)
def test_scripted_held_detection_is_raised_only_if_errors_stay_above_its_baseline(
    after: float, raised: bool
) -> None:
    # Held at update 15 with baseline 0.5; errors from it to the cooldown's end average
    # ``after`` (updates 15..20 are indices 14..19). Flat over its span (indices 12..14),
    # so the change is located at the span's start.
    errors = [0.0] * 12 + [after] * 8 + [0.0] * 20
    watch = _scripted({10: 0.1, 15: 0.5}, cooldown=10)
    found = _raised(watch, errors, [40])
    assert found[0][:2] == (9, False)
    assert (found[1:] == [(19, True, _times(1, 12)[0])]) is raised
    assert len(found) == 1 + raised
    assert not watch.holding


def test_scripted_newer_detection_replaces_a_held_one() -> None:
    watch = _scripted({10: None, 13: None, 16: None}, cooldown=10)
    assert _raised(watch, [0.0] * 40, [40]) == [
        (9, False, _times(1, 7)[0]),
        (19, True, _times(1, 13)[0]),  # the detection at update 16, not the one at 13
    ]


def test_scripted_detection_on_the_update_the_cooldown_ends_leaves_nothing_held() -> None:
    # Update 10 raised; 15 held; 20 is the first update after the cooldown: a detection
    # there is raised at once, and the older held one must not outlive it (it is either
    # re-tested there or replaced, "a newer detection replaces a held one").
    watch = _scripted({10: None, 15: None, 20: None}, cooldown=10)
    found = _raised(watch, [1.0] * 40, [40])
    assert (19, False, _times(1, 17)[0]) in found
    assert max(i for i, _, _ in found) == 19, f"a stale held detection was raised later: {found}"
    assert not watch.holding


def test_a_batch_longer_than_the_time_memory_still_locates_its_change() -> None:
    # One call of 7,000 updates (a backlog of joined labels) with the rise early in it,
    # more than the memory keeps: the change is located within the batch itself.
    rng = random.Random(5)
    errors = [float(rng.random() < 0.05) for _ in range(1_000)]
    errors += [float(rng.random() < 0.9) for _ in range(6_000)]
    times = [float(t) for t in range(len(errors))]
    found = ConceptWatch("adwin", seed=42, cooldown=100).update_many(errors, times)
    assert found
    assert found[0].change_at is not None
    assert len(errors) > TIME_MEMORY
    assert abs(found[0].change_at - 1_000) < NEAR / STEP
