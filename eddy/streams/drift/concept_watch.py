"""One error stream's concept-drift watch: a cooldown that delays, never drops.

A concept detector (:mod:`eddy.streams.drift.detectors`, one-sided) fires when a model's error
rises. After an alert, a cooldown keeps a burst of detections from becoming a burst of
alerts and retrains. A detection *inside* the cooldown is not thrown away: the world may
have changed again, just after a false or minor alarm. It is held and re-tested when
the cooldown ends: if the errors since it are still above the level the detector cut
away (its ``baseline``), it is raised then, marked as deferred; if they fell back, the
change did not last. Without a baseline (the binary detectors, ``page_hinkley``), a
held detection is raised when the cooldown ends. A newer detection replaces a held one.

Each detection also says *where* the change began, as an event time. The detector's
``change_age`` (updates ago) bounds it: ADWIN keeps whole buckets, so at tens of
examples a second its kept window can reach seconds back into the old concept. Within
that span the change point is refined as the classic CUSUM estimate: the update after
which the cumulative sum of (error - the span's mean) is lowest, i.e. where the errors
stop being below average. A retrain learns from the examples after it.

Pure and picklable: the learner's checkpoint seals it.

>>> import random
>>> rng = random.Random(1)
>>> rates = [0.1] * 1_000 + [0.4] * 300 + [0.9] * 700  # two rises, 300 updates apart
>>> errors = [float(rng.random() < rate) for rate in rates]
>>> watch = ConceptWatch("adwin", seed=42, cooldown=500)
>>> found = watch.update_many(errors, [float(t) for t in range(len(errors))])
>>> [(d.index, d.deferred, d.change_at) for d in found]
[(1055, False, 1001.0), (1555, True, 1297.0)]

The second rise is detected at 1343, inside the cooldown of the first alert; it is held
and raised when the cooldown ends (1055 + 500), still locating its change (at 1297;
the rates changed at 1000 and 1300).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from eddy.streams.drift.detectors import DriftSignal, make_detector

TIME_MEMORY = 5_000
"""Event times kept for locating a change; an older change point maps to the oldest."""
ROUNDING = 1e-9  # a cumulative sum this close to 0 has not dipped (float rounding)
# (last update before the change, update of the detection, error before) -> the world's?
Attribution = Callable[[int, int, "float | None"], bool]
# (event time the change began, event time of the detection, how much the error rose)
# -> False when a second stream says it did not rise with it
Confirmation = Callable[["float | None", float, "float | None"], bool]


@dataclass(frozen=True)
class ConceptDetection:
    """A detection to raise: where in the batch, the detector's signal, when the change
    began (event time, epoch seconds) and whether a cooldown held it back first."""

    index: int
    signal: DriftSignal
    change_at: float | None
    deferred: bool = False


class ConceptWatch:
    def __init__(self, detector: str, *, seed: int, cooldown: int) -> None:
        self.detector = make_detector(detector, seed=seed)
        self.cooldown = cooldown
        self.seen = 0
        self._last_alert: int | None = None  # update number of the last raised detection
        self._held: ConceptDetection | None = None
        self._held_sum = 0.0
        self._held_count = 0
        self._times: collections.deque[float] = collections.deque(maxlen=TIME_MEMORY)
        self._errors: collections.deque[float] = collections.deque(maxlen=TIME_MEMORY)

    @property
    def holding(self) -> bool:
        """A detection waits for the cooldown to end."""
        return self._held is not None

    def update_many(
        self,
        errors: Sequence[float],
        times: Sequence[float],
        attribute: Attribution | None = None,
        confirm: Confirmation | None = None,
    ) -> list[ConceptDetection]:
        """Feed errors (with their examples' event times) in order; the detections to
        raise, with their index in ``errors``.

        ``attribute(change, detected, baseline)`` (updates counted from 1) says whether a
        rise is the world's rather than the model's own (:mod:`eddy.streams.drift.attribution`);
        ``confirm(change_at, detected_at, rise)`` whether a second stream does not
        contradict it (the served answers, :meth:`eddy.streams.drift.served.ServedWatch.confirms`).
        A detection either disowns is no detection: nothing is raised, held or cooled
        down."""
        base = self.seen
        found: list[ConceptDetection] = []
        cursor = 0
        for i, signal in self.detector.update_many(errors):
            found += self._feed_held(errors, base, cursor, i)
            cursor = i
            change, change_at, rise = self._change(errors, times, base, i, signal)
            if attribute is not None and not attribute(change, base + i + 1, signal.baseline):
                continue
            if confirm is not None and not confirm(change_at, times[i], rise):
                continue
            detection = ConceptDetection(i, signal, change_at)
            if self._cooled(base + i + 1):
                found.append(detection)
                self._last_alert = base + i + 1
                self._held = None  # a newer detection replaces a held one
            else:
                self._held, self._held_sum, self._held_count = detection, 0.0, 0
        found += self._feed_held(errors, base, cursor, len(errors))
        self._times.extend(times)
        self._errors.extend(errors)
        self.seen += len(errors)
        return found

    def kept(self) -> list[tuple[float, float]]:
        """The (event time, error) of the updates kept, oldest first (at most
        :data:`TIME_MEMORY`): what another stream's detection is checked against."""
        return list(zip(self._times, self._errors, strict=True))

    def _cooled(self, update: int) -> bool:
        return self._last_alert is None or update - self._last_alert >= self.cooldown

    def _feed_held(
        self, errors: Sequence[float], base: int, start: int, stop: int
    ) -> list[ConceptDetection]:
        """Count ``errors[start:stop]`` toward the held detection; re-test it where the
        cooldown ends within them."""
        held = self._held
        if held is None or self._last_alert is None:
            return []
        end = self._last_alert + self.cooldown - base - 1  # index where the cooldown ends
        upto = min(stop, max(start, end + 1))
        self._held_sum += sum(errors[start:upto])
        self._held_count += upto - start
        if end >= stop:
            return []
        at = max(start, end)
        self._held = None
        baseline, count = held.signal.baseline, self._held_count
        if baseline is not None and count and self._held_sum / count <= baseline:
            return []  # the errors fell back: the change did not last
        self._last_alert = base + at + 1
        return [replace(held, index=at, deferred=True)]

    def _change(
        self,
        errors: Sequence[float],
        times: Sequence[float],
        base: int,
        i: int,
        signal: DriftSignal,
    ) -> tuple[int, float | None, float | None]:
        """Where the change began, for a detection at ``errors[i]``: the last update
        before it (counted from 1), the event time of the first after it, and how much
        the mean error rose there (since the change, against the detector's
        ``baseline`` or, without one, the span before the change; None when neither is
        known). Its span is the detector's ``change_age`` updates up to there, from
        this batch and, before it, the memory (as far back as it reaches)."""
        age = signal.change_age or 1
        older = min(max(0, age - (i + 1)), len(self._times))
        start = max(0, i + 1 - age)
        span_errors = [*itertools.islice(self._errors, len(self._errors) - older, None)]
        span_times = [*itertools.islice(self._times, len(self._times) - older, None)]
        span_errors += errors[start : i + 1]
        span_times += times[start : i + 1]
        offset = change_offset(span_errors)
        change = base + i + 1 - len(span_errors) + offset
        level = signal.baseline
        if level is None and offset:
            level = sum(span_errors[:offset]) / offset
        since = span_errors[offset:]
        rise = None if level is None or not since else sum(since) / len(since) - level
        return change, span_times[offset] if span_times else None, rise


def change_offset(errors: Sequence[float]) -> int:
    """Where in ``errors`` a rise most likely began: the index after the lowest point of
    the cumulative sum of (error - mean); 0 when it never dips.

    >>> change_offset([0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    3
    >>> change_offset([1.0, 1.0]), change_offset([0.8] * 3), change_offset([])
    (0, 0, 0)
    """
    if not errors:
        return 0
    mean = sum(errors) / len(errors)
    total, lowest, offset = 0.0, -ROUNDING, 0
    for i, error in enumerate(errors):
        total += error - mean
        if total < lowest:
            lowest, offset = total, i + 1
    return min(offset, len(errors) - 1)
