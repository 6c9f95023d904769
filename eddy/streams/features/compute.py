"""Per-entity features: declared once, computed the same way for training, serving and replay.

A :class:`FeatureSet` declares windowed aggregates over raw event features, which raw
features pass through, ratios between features and the time since the last event. An
entity's :class:`EntityState` is updated one event at a time by :func:`apply_event` and
read by :func:`feature_vector` as of any time from its newest event minus the allowed
lateness on (older buckets are forgotten). Nothing here does I/O.

Three properties make replays and redeliveries safe:

- **idempotent**: an event id already applied changes nothing;
- **order-free within the allowed lateness**: sums are kept in exact fixed point (2⁻⁶⁴
  for values, 2⁻¹²⁸ for squares), min/max/last are order-free, so any arrival order of
  the same events gives byte-identical state;
- **event-time guarded**: an event older than the newest one minus the allowed lateness
  is refused, so a replay of old data never overwrites newer state.

>>> fs = FeatureSet(aggregates=(Aggregate("amount", ("count", "sum", "mean"), tumbling(3600)),))
>>> state = EntityState()
>>> for i, amount in enumerate([10.0, 20.0, 30.0]):
...     apply_event(state, fs, f"e{i}", 1000.0 + i, {"amount": amount})
<Applied.NEW: 'new'>
<Applied.NEW: 'new'>
<Applied.NEW: 'new'>
>>> apply_event(state, fs, "e1", 1001.0, {"amount": 20.0})
<Applied.DUPLICATE: 'duplicate'>
>>> v = feature_vector(state, fs, as_of=1010.0)
>>> v["amount_count_1h"], v["amount_sum_1h"], v["amount_mean_1h"], v["amount"]
(3, 60.0, 20.0, 30.0)
"""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

import orjson

from eddy.streams.messages.contracts import MAX_MAGNITUDE

FeatureValue = bool | int | float | str | None

SUM_BITS = 64
SQUARE_BITS = 128
DISTINCT_CAP = 64
# Raw feature names whose last value one entity keeps: past it, the smallest names are
# kept, so a producer inventing names cannot grow an entity's state without bound. The
# arrival-order freedom holds for entities within the cap: once a name was dropped, a
# smaller name expiring later does not bring it back.
MAX_ENTITY_FEATURES = 1024
OTHER_CATEGORY = "__other__"
DAY_S = 24 * 3600
AGGREGATE_OPS = ("count", "sum", "mean", "min", "max", "std", "last", "distinct")
# Ops whose value grows with an entity's history by construction (see accumulating_names).
ACCUMULATING_OPS = frozenset({"count", "sum", "distinct"})
TIME_SINCE_LAST = "seconds_since_last_event"


@dataclass(frozen=True)
class Window:
    """A window of ``size_s`` seconds advancing by ``step_s`` (tumbling when equal).

    >>> tumbling(3600).name, sliding(600, 60).name
    ('1h', '10m_every_1m')
    """

    size_s: int
    step_s: int

    def __post_init__(self) -> None:
        if self.size_s <= 0 or self.step_s <= 0 or self.size_s % self.step_s:
            raise ValueError(f"window step {self.step_s}s must divide its size {self.size_s}s")

    @cached_property
    def name(self) -> str:
        size = _duration(self.size_s)
        return size if self.step_s == self.size_s else f"{size}_every_{_duration(self.step_s)}"

    def start(self, as_of: float) -> float:
        """Earliest bucket start the window covers at ``as_of``."""
        return math.floor(as_of / self.step_s) * self.step_s - self.size_s + self.step_s


def tumbling(size_s: int) -> Window:
    return Window(size_s, size_s)


def sliding(size_s: int, step_s: int) -> Window:
    return Window(size_s, step_s)


def _duration(seconds: int) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Aggregate:
    """``ops`` of raw feature ``source`` over ``window``; names like ``amount_sum_1h``."""

    source: str
    ops: tuple[str, ...]
    window: Window

    def __post_init__(self) -> None:
        unknown = set(self.ops) - set(AGGREGATE_OPS)
        if unknown:
            raise ValueError(f"unknown aggregate ops {sorted(unknown)}; known: {AGGREGATE_OPS}")

    def names(self) -> list[str]:
        return list(self.op_names)

    @cached_property
    def op_names(self) -> tuple[str, ...]:
        """The feature name of each op, in ``ops`` order (computed once: every feature
        vector needs them)."""
        return tuple(f"{self.source}_{op}_{self.window.name}" for op in self.ops)


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of two other features (None when undefined)."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class Categories:
    """The values a string feature may take; any other value is served and learned as
    :data:`OTHER_CATEGORY`, so an unexpected value cannot add a model column.

    >>> Categories("country", ("NL", "DE")).admit("FR")
    '__other__'
    """

    feature: str
    allowed: tuple[str, ...]

    @cached_property
    def _allowed(self) -> frozenset[str]:
        return frozenset(self.allowed)

    def admit(self, value: FeatureValue) -> FeatureValue:
        if isinstance(value, str) and value not in self._allowed:
            return OTHER_CATEGORY
        return value


@dataclass(frozen=True)
class FeatureSet:
    """Everything that defines the features; its :meth:`fingerprint` goes into lineage.

    ``last_value_ttl_s``: a raw feature's last value is forgotten when the entity's
    newest event is this much later (at least the allowed lateness, so forgetting stays
    order-free). ``categories``: allow-lists of string features' values.
    """

    aggregates: tuple[Aggregate, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    passthrough: tuple[str, ...] | None = None  # None: every raw feature passes through
    time_since_last: bool = True
    allowed_lateness_s: int = 3600
    last_value_ttl_s: int = 7 * DAY_S
    categories: tuple[Categories, ...] = ()

    def __post_init__(self) -> None:
        if self.last_value_ttl_s < self.allowed_lateness_s:
            raise ValueError(
                f"last_value_ttl_s ({self.last_value_ttl_s}) must be at least "
                f"allowed_lateness_s ({self.allowed_lateness_s})"
            )

    @property
    def horizon_s(self) -> int:
        """How far back anything is kept: the longest window plus the allowed lateness
        (each source's buckets: :attr:`source_horizons`)."""
        longest = max((a.window.size_s for a in self.aggregates), default=0)
        return longest + self.allowed_lateness_s

    @cached_property
    def source_horizons(self) -> dict[str, int]:
        """Per aggregated source, how far back its buckets are kept: its longest window
        plus the allowed lateness. A window is read as of an admitted event's time (never
        before the newest minus the lateness) or later, so no older bucket of that source
        is ever read. (A reader's clock may lag an entity's newest event by up to the
        event-time skew the worker admits: with a lateness below that skew, windows read
        as of the clock can miss their oldest buckets; the services warn at start.)
        Kept to the longest window of any source instead, a day's window of countries
        kept a day of ``amount``'s one-minute buckets for its one-hour window: twelve
        times as many, in states the predictor reads whole for every request.

        >>> FeatureSet((Aggregate("a", ("sum",), tumbling(3600)),
        ...             Aggregate("b", ("distinct",), tumbling(86400))),
        ...            allowed_lateness_s=600).source_horizons
        {'a': 4200, 'b': 87000}
        """
        return {
            source: max(a.window.size_s for a in self.aggregates if a.source == source)
            + self.allowed_lateness_s
            for source in self.bucket_widths
        }

    @cached_property
    def distinct_sources(self) -> frozenset[str]:
        """Aggregated sources whose buckets keep their distinct values: those a
        ``distinct`` operation reads. Keeping them costs every event of the source a
        JSON dump and a set entry, and every state up to 64 strings a bucket; kept for
        every source, they were the largest part of ``amount``'s buckets, which no
        window counts distinct values of.

        >>> FeatureSet((Aggregate("a", ("sum",), tumbling(60)),
        ...             Aggregate("b", ("distinct",), tumbling(60)))).distinct_sources
        frozenset({'b'})
        """
        return frozenset(a.source for a in self.aggregates if "distinct" in a.ops)

    @cached_property
    def bucket_widths(self) -> dict[str, int]:
        """Per aggregated source, the finest step of its windows: every window of that
        source is a whole run of buckets this wide."""
        return {
            source: math.gcd(*(a.window.step_s for a in self.aggregates if a.source == source))
            for source in sorted({a.source for a in self.aggregates})
        }

    def accumulating_names(self) -> tuple[str, ...]:
        """Features that move with an entity's history by construction: counts, sums and
        distinct values over a window, and the time since the last event.

        On a stationary stream their distribution still shifts as history accumulates
        (and as windows roll over), so a test against a fixed reference alarms on them
        for no change in the world: data drift leaves them out.

        >>> FeatureSet((Aggregate("a", ("count", "mean"), tumbling(60)),)).accumulating_names()
        ('a_count_1m', 'seconds_since_last_event')
        """
        names = [
            name
            for a in self.aggregates
            for op, name in zip(a.ops, a.op_names, strict=True)
            if op in ACCUMULATING_OPS
        ]
        return (*names, *((TIME_SINCE_LAST,) if self.time_since_last else ()))

    def fingerprint(self) -> str:
        """A stable hash of the definitions: equal hashes mean equal features."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def state_fingerprint(self) -> str:
        """A stable hash of what shapes an entity's stored state (:func:`apply_event`):
        each aggregated source's bucket width, how long state is kept, which raw values
        are kept, the lateness and last-value horizons, and which sources keep distinct
        values. Definitions that agree on these fold identical states, so they share an
        online store: a new ratio, operation (a bucket keeps every other partial
        aggregate) or category list is served from the stored states as they are, with
        no rebuild; a source's first ``distinct``, or the removal of its last, folds
        other states.

        >>> from dataclasses import replace
        >>> def summed(*ops: str, window_s: int = 3600) -> FeatureSet:
        ...     return FeatureSet((Aggregate("amount", ops, tumbling(window_s)),))
        >>> summed("sum").fingerprint() == summed("sum", "max").fingerprint()
        False
        >>> summed("sum").state_fingerprint() == summed("sum", "max").state_fingerprint()
        True
        >>> summed("sum").state_fingerprint() == summed("sum", window_s=1800).state_fingerprint()
        False
        >>> summed("sum").state_fingerprint() == summed("sum", "distinct").state_fingerprint()
        False

        A source kept for less than the longest window (:attr:`source_horizons`), or one
        that keeps no distinct values, is part of it: definitions with neither (every
        source reaches as far as the longest window and is counted distinct) keep the
        fingerprint they had before, and their stored states.
        """
        shaping: tuple[object, ...] = (
            sorted(self.bucket_widths.items()),
            self.horizon_s,
            None if self.passthrough is None else sorted(self.passthrough),
            self.allowed_lateness_s,
            self.last_value_ttl_s,
        )
        shorter = sorted((s, h) for s, h in self.source_horizons.items() if h < self.horizon_s)
        if shorter:
            shaping = (*shaping, shorter)
        no_distinct = sorted(set(self.bucket_widths) - self.distinct_sources)
        if no_distinct:
            shaping = (*shaping, ("no distinct values", no_distinct))
        return hashlib.sha256(repr(shaping).encode()).hexdigest()[:16]


class Applied(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    TOO_LATE = "too_late"


@dataclass
class Bucket:
    """Partial aggregates of one source over one bucket of time."""

    count: int = 0
    numeric_count: int = 0
    sum_fixed: int = 0
    square_fixed: int = 0
    low: float | None = None
    high: float | None = None
    last: tuple[float, str, FeatureValue] | None = None
    distinct: set[str] = field(default_factory=set)
    distinct_overflow: bool = False
    # This bucket's JSON as :func:`encode_state` writes it, until the next :meth:`add`.
    _encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def add(
        self, event_time: float, event_id: str, value: FeatureValue, *, distinct: bool = True
    ) -> None:
        """Fold one value in; its distinct values only when ``distinct`` (a source that
        a ``distinct`` operation reads: :attr:`FeatureSet.distinct_sources`)."""
        self._encoded = None
        self.count += 1
        number = _as_number(value)
        if number is not None:
            self.numeric_count += 1
            self.sum_fixed += _fixed(number, SUM_BITS)
            self.square_fixed += _fixed_square(number, SQUARE_BITS)
            self.low = number if self.low is None else min(self.low, number)
            self.high = number if self.high is None else max(self.high, number)
        if self.last is None or (event_time, event_id) > self.last[:2]:
            self.last = (event_time, event_id, value)
        if not distinct:
            return
        self.distinct.add(orjson.dumps(value).decode())
        if len(self.distinct) > DISTINCT_CAP:
            # Keep the smallest values whatever the arrival order; counts become a floor.
            self.distinct.remove(max(self.distinct))
            self.distinct_overflow = True


@dataclass
class EntityState:
    """What is kept per entity: newest event time, recent ids, last values, buckets."""

    newest: float | None = None
    seen: dict[str, float] = field(default_factory=dict)
    last: dict[str, tuple[float, str, FeatureValue]] = field(default_factory=dict)
    buckets: dict[str, dict[int, Bucket]] = field(default_factory=dict)
    # Whether ``seen`` is in event-time order, as folding keeps it (:func:`_remember`); a
    # decoded state's is in id order until it is folded into (code that builds a state
    # with a ``seen`` of its own must say so too).
    _seen_in_time_order: bool = field(default=True, init=False, repr=False, compare=False)


def apply_event(
    state: EntityState,
    fs: FeatureSet,
    event_id: str,
    event_time: float,
    raw: dict[str, FeatureValue],
) -> Applied:
    """Fold one event into ``state`` (in place) unless it is a duplicate or too late."""
    verdict = admission(state, fs, event_id, event_time)
    if verdict is not Applied.NEW:
        return verdict
    _remember(state, event_id, event_time)
    for name, value in raw.items():
        if fs.passthrough is not None and name not in fs.passthrough:
            continue
        current = state.last.get(name)
        if current is None or (event_time, event_id) > current[:2]:
            state.last[name] = (event_time, event_id, value)
    if len(state.last) > MAX_ENTITY_FEATURES:
        kept = sorted(state.last)[:MAX_ENTITY_FEATURES]
        state.last = {name: state.last[name] for name in kept}
    for source, width in fs.bucket_widths.items():
        if source in raw:
            start = math.floor(event_time / width) * width
            bucket = state.buckets.setdefault(source, {}).setdefault(start, Bucket())
            bucket.add(event_time, event_id, raw[source], distinct=source in fs.distinct_sources)
    if state.newest is None or event_time > state.newest:
        # Only a newer event moves the floors: an older one is above them (admitted).
        state.newest = event_time
        _prune(state, fs, event_time)
    return Applied.NEW


def admission(state: EntityState, fs: FeatureSet, event_id: str, event_time: float) -> Applied:
    """What :func:`apply_event` would do with this event, without doing it."""
    if event_id in state.seen:
        return Applied.DUPLICATE
    if state.newest is not None and event_time < state.newest - fs.allowed_lateness_s:
        return Applied.TOO_LATE
    return Applied.NEW


def _remember(state: EntityState, event_id: str, event_time: float) -> None:
    """Add an id to ``state.seen`` in event-time order, so that pruning takes ids from
    its oldest end instead of filtering every one at each newer event (an entity with an
    event a second keeps 3,600 ids). An event older than the newest id is put in its
    place by a rebuild: a late event's cost, not every event's."""
    seen = state.seen
    if not state._seen_in_time_order:
        seen = state.seen = dict(sorted(seen.items(), key=_time_of))
        state._seen_in_time_order = True
    if seen and event_time < next(reversed(seen.values())):
        ordered = list(seen.items())
        ordered.insert(
            bisect.bisect_right(ordered, event_time, key=_time_of), (event_id, event_time)
        )
        state.seen = dict(ordered)
    else:
        seen[event_id] = event_time


def _time_of(item: tuple[str, float]) -> float:
    return item[1]


def _prune(state: EntityState, fs: FeatureSet, newest: float) -> None:
    """Forget ids and buckets that no acceptable event can touch any more, and last
    values older than their time to live. ``state.seen`` is in time order here: the
    event being applied was just remembered."""
    seen_floor = newest - fs.allowed_lateness_s
    seen = state.seen
    while seen:
        oldest, at = next(iter(seen.items()))
        if at >= seen_floor:
            break
        del seen[oldest]
    last_floor = newest - fs.last_value_ttl_s
    if any(last[0] < last_floor for last in state.last.values()):
        state.last = {k: last for k, last in state.last.items() if last[0] >= last_floor}
    for source, buckets in state.buckets.items():
        width = fs.bucket_widths[source]
        bucket_floor = newest - fs.source_horizons[source]
        state.buckets[source] = {s: b for s, b in buckets.items() if s + width > bucket_floor}


def feature_vector(
    state: EntityState,
    fs: FeatureSet,
    as_of: float,
    raw: dict[str, FeatureValue] | None = None,
) -> dict[str, FeatureValue]:
    """The features of an entity as of ``as_of``; ``raw`` (the request's or the event's
    own features) overrides the stored last values.

    Buckets that start after ``as_of`` are left out, so a training example built as of
    an event's time sees no later event's bucket.
    """
    passthrough = fs.passthrough
    vector: dict[str, FeatureValue] = {
        name: last[2]
        for name, last in sorted(state.last.items())
        if passthrough is None or name in passthrough
    }
    if raw:
        vector.update(
            raw if passthrough is None else ((k, v) for k, v in raw.items() if k in passthrough)
        )
    for aggregate in fs.aggregates:
        buckets = state.buckets.get(aggregate.source)
        window_start = aggregate.window.start(as_of)
        in_window = (
            [bucket for start, bucket in buckets.items() if window_start <= start <= as_of]
            if buckets
            else []
        )
        values = _window_values(in_window, aggregate.ops)
        vector.update(zip(aggregate.op_names, values, strict=True))
    for ratio in fs.ratios:
        vector[ratio.name] = _ratio(vector.get(ratio.numerator), vector.get(ratio.denominator))
    if fs.time_since_last:
        vector[TIME_SINCE_LAST] = freshness(state, as_of)
    for categories in fs.categories:
        if categories.feature in vector:
            vector[categories.feature] = categories.admit(vector[categories.feature])
    return vector


def freshness(state: EntityState, as_of: float) -> float | None:
    """Seconds from the newest contributing event to ``as_of`` (None: no event yet)."""
    return None if state.newest is None else max(0.0, as_of - state.newest)


def _window_values(buckets: list[Bucket], ops: tuple[str, ...]) -> list[FeatureValue]:
    """Each of ``ops`` over a window's ``buckets``, in ``ops`` order: the partial
    aggregates are added up once for all of them (a feature vector is built for every
    event that carries or may get a label, the feature worker's most frequent
    computation)."""
    count = numeric = total = squares = 0
    low: float | None = None
    high: float | None = None
    last: tuple[float, str, FeatureValue] | None = None
    for bucket in buckets:
        count += bucket.count
        numeric += bucket.numeric_count
        total += bucket.sum_fixed
        squares += bucket.square_fixed
        if bucket.low is not None and (low is None or bucket.low < low):
            low = bucket.low
        if bucket.high is not None and (high is None or bucket.high > high):
            high = bucket.high
        if bucket.last is not None and (last is None or bucket.last[:2] > last[:2]):
            last = bucket.last
    values: list[FeatureValue] = []
    for op in ops:
        if op == "count":
            values.append(count)
        elif op == "distinct":
            values.append(len(set().union(*(b.distinct for b in buckets))) if buckets else 0)
        elif op == "last":
            values.append(None if last is None else last[2])
        elif op == "sum":
            values.append(_within_bound(_quotient(total, 1 << SUM_BITS)))
        elif numeric == 0:
            values.append(None)
        elif op == "min":
            values.append(low)
        elif op == "max":
            values.append(high)
        elif op == "mean":
            values.append(_quotient(total, numeric << SUM_BITS))
        else:  # std: n·Σx² - (Σx)², both exact integers at 2⁻¹²⁸, without cancellation
            variance = _quotient(
                max(numeric * squares - total * total, 0), (numeric * numeric) << SQUARE_BITS
            )
            values.append(None if variance is None else math.sqrt(variance))
    return values


def _quotient(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator`` correctly rounded; None when no float can hold it."""
    try:
        return numerator / denominator
    except OverflowError:
        return None


def _within_bound(value: float | None) -> float | None:
    """``value`` when a model may get it (within the contracts' ±2⁶⁴), else None. A sum
    of values each within the bound can pass it: the long fuzz's two amounts of 1.4e19
    made a sum no training example could carry, and the feature worker restarted on
    that event for ever.

    >>> _within_bound(2.0**64), _within_bound(2.77e19), _within_bound(None)
    (1.8446744073709552e+19, None, None)
    """
    return value if value is None or abs(value) <= MAX_MAGNITUDE else None


def _ratio(numerator: FeatureValue, denominator: FeatureValue) -> float | None:
    """``numerator / denominator``; None where no float within the contracts' bound
    (±2⁶⁴, what a model can square) is the answer.

    >>> _ratio(3, 2), _ratio(1, 0), _ratio(1e300, 1e-300), _ratio(1e19, 1e-289)
    (1.5, None, None, None)
    """
    top, bottom = _as_number(numerator), _as_number(denominator)
    if top is None or bottom is None or bottom == 0:
        return None
    return _within_bound(top / bottom)


def _as_number(value: FeatureValue) -> float | None:
    """Numbers (and booleans as 0/1) as finite floats; -0.0 becomes 0.0 so that min and
    max do not depend on which zero arrived first."""
    if not isinstance(value, bool | int | float):
        return None
    number = float(value) + 0.0
    return number if math.isfinite(number) else None


def _fixed(value: float, bits: int) -> int:
    """``value`` as an integer count of 2⁻ᵇⁱᵗˢ units: exact for all but tiny fractions.

    >>> _fixed(0.1, 64) / (1 << 64) == 0.1
    True
    """
    numerator, denominator = value.as_integer_ratio()
    shift = bits - (denominator.bit_length() - 1)
    return numerator << shift if shift >= 0 else numerator >> -shift


def _fixed_square(value: float, bits: int) -> int:
    """``value²`` in 2⁻ᵇⁱᵗˢ units, squared exactly in integers (never rounded as a float).

    >>> _fixed_square(0.1, 128) == _fixed(0.1, 64) ** 2
    True
    """
    numerator, denominator = value.as_integer_ratio()
    shift = bits - 2 * (denominator.bit_length() - 1)
    square = numerator * numerator
    return square << shift if shift >= 0 else square >> -shift


def encode_state(state: EntityState) -> bytes:
    """Deterministic JSON: equal states give equal bytes (big sums as hex strings)."""
    return orjson.dumps(
        {
            "newest": state.newest,
            "seen": state.seen,
            "last": {k: list(v) for k, v in state.last.items()},
            "buckets": {
                source: {str(start): _encoded_bucket(b) for start, b in sorted(buckets.items())}
                for source, buckets in state.buckets.items()
            },
        },
        option=orjson.OPT_SORT_KEYS,
    )


def decode_state(raw: bytes | None) -> EntityState:
    """The inverse of :func:`encode_state`; no bytes means a new entity."""
    if not raw:
        return EntityState()
    data: dict[str, Any] = orjson.loads(raw)
    state = EntityState(
        newest=data["newest"],
        seen=data["seen"],
        last={k: (v[0], v[1], v[2]) for k, v in data["last"].items()},
        buckets={
            source: {int(start): _decode_bucket(b) for start, b in buckets.items()}
            for source, buckets in data["buckets"].items()
        },
    )
    # Stored in id order; put in time order only if folded into (a reader never is).
    state._seen_in_time_order = len(state.seen) < 2
    return state


def _encoded_bucket(bucket: Bucket) -> orjson.Fragment:
    """The bucket's JSON, encoded once and kept until it changes: a state is written
    whole after every batch that touched it, and most of its buckets did not change
    (an hour's window of one-minute steps with an hour of lateness keeps 121; encoding
    them all again was most of the cost of a write). A state read from Redis encodes
    each bucket once, at its first write."""
    if bucket._encoded is None:
        fields = {
            "n": bucket.count,
            "k": bucket.numeric_count,
            "s": format(bucket.sum_fixed, "x"),
            "q": format(bucket.square_fixed, "x"),
            "lo": bucket.low,
            "hi": bucket.high,
            "last": list(bucket.last) if bucket.last else None,
            "d": sorted(bucket.distinct),
            "dx": bucket.distinct_overflow,
        }
        bucket._encoded = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return orjson.Fragment(bucket._encoded)


def _decode_bucket(data: dict[str, Any]) -> Bucket:
    # Positional, in Bucket's field order: a third cheaper than keywords, and a reader
    # (the predictor, for every request) decodes every bucket of a state.
    last = data["last"]
    return Bucket(
        data["n"],
        data["k"],
        int(data["s"], 16),
        int(data["q"], 16),
        data["lo"],
        data["hi"],
        (last[0], last[1], last[2]) if last else None,
        set(data["d"]),
        data["dx"],
    )
