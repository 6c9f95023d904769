"""Worker liveness: a worker that stops making progress while records wait for it says
so on ``/healthz`` and exits, so that its supervisor restarts it.

**The rule** (:class:`StallDetector`, pure). A worker's *position* on a partition is the
next offset it has still to *process* (not merely fetch); its *lag* is the partition's
end offset minus that position. At each look:

- no lag anywhere (caught up, or nothing assigned, as a hot standby): healthy, however
  long nothing happens. An idle worker is not a stalled one;
- lag somewhere and some position changed since the previous look: progressing, and
  the clock restarts. A change backwards (a restored checkpoint, a rebalance) counts:
  it is the worker doing something, not waiting;
- lag somewhere and no position changed: waiting. The clock runs from the first look
  that saw records waiting without movement (a worker idle for an hour that gets a
  record has a full timeout for it), and at ``stall_timeout_s`` the worker is stalled.

Three rules judge a worker whose positions say nothing (a member that never got
partitions, never fetched, or fetches no more):

- **the loop stopped turning** (:class:`StallDetector`, ``turned_at``): the worker's
  loop hands over its positions once per turn; no turn for ``stall_timeout_s`` (the
  longer limit inside :meth:`Liveness.busy`) is a stall, records waiting or not, so a
  worker stuck inside its poll call is caught though it owns nothing;
- **owning nothing while records wait for nobody** (:class:`JoinDetector`): a member of
  a consumer group that owns no partition while records wait on partitions of its
  topics that *no* member of its group owns, for :data:`JOIN_SESSIONS` session timeouts
  (20 s by default; ``stall_timeout_s`` if shorter; while the group rebalances, for the
  rebalance's own bound, the consumer's max poll interval). An idle
  member whose partitions another live member owns (a learner's hot standby, a
  predictor beyond the partition count) is not stalled, however long it waits;
- **owning partitions its group no longer lists it for** (:class:`DroppedDetector`): a
  member the coordinator removed (no heartbeat for a session timeout) whose client
  missed it keeps its positions and fetches nothing; outside a rebalance and outside
  :meth:`Liveness.busy` (a client leaves its group by design when one unit of work
  outlasts its max poll interval), not listed for one session timeout is a stall (the
  group is looked at every :data:`OWNER_LOOK_EVERY_S` while the member owns partitions).

So a *slow* worker is never stalled: one position moving once per ``stall_timeout_s``
keeps it healthy while its lag grows (lag is a throughput matter for metrics and more
partitions, not a liveness one). What the rule cannot see is a single unit of work that
legitimately runs longer than ``stall_timeout_s`` while records wait. Such work (a
retrain) is declared with :meth:`Liveness.busy`: inside it the limit is the larger of
``stall_timeout_s`` and the consumer's max poll interval, the bound Kafka itself puts
on one batch (past it the group evicts the consumer anyway). ``stall_timeout_s = 0``
turns the verdict off (lag is still reported).

**The edge** (:class:`Liveness`). The worker hands over its positions from its poll
loop (:meth:`Liveness.observe`); a watchdog thread looks every :data:`CHECK_EVERY_S`,
reading the end offsets with a Kafka client of its own (every stall limit /
:data:`ENDS_LOOKS_PER_LIMIT` when that is longer), so a worker stuck inside a
batch (its loop no longer turning) is still judged against records that keep arriving.
A partition without a known position (nothing read from it yet in this process) or end
offset is not judged by the lag rule. While a kafka-python member owns nothing, the
watchdog also asks the group's coordinator which partitions of its topics the group's
members own and what the group has committed there (:class:`KafkaLooks`); the member's
group and topics come with its positions (:func:`consumer_positions`). The verdict is
served on ``/healthz`` (:mod:`eddy.services.ops.metrics`); once stalled for a further
:data:`EXIT_GRACE_S` (long enough for a probe to see 503) the watchdog logs why, dumps
every thread's stack to stderr (where the stuck work stood) and ends the process with
:data:`STALLED_EXIT_CODE`, skipping clean-up that would wait on the stuck work; the
worker's commits follow its effects, so the restart replays only uncommitted records,
idempotently.

>>> detector = StallDetector(timeout_s=60)
>>> detector.observe(0, {("events", 0): 10}, {("events", 0): 10}).reason
'caught up'
>>> detector.observe(5, {("events", 0): 10}, {("events", 0): 12}).healthy
True
>>> stalled = detector.observe(65, {("events", 0): 10}, {("events", 0): 40})
>>> stalled.healthy, stalled.reason
(False, 'stalled: 30 records waiting on 1 partition(s), no position moved for 60 s (limit 60 s)')
>>> detector.observe(70, {}, {}, turned_at=5).reason
'stalled: the poll loop has not turned for 65 s (limit 60 s)'
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.streams.transport.admin import committed_offsets, describe_group
from eddy.streams.transport.clients import log_offsets, make_admin, make_consumer

log = logging.getLogger(__name__)

# (topic, partition): kafka-python's and faust's TopicPartition are such tuples too.
Partition = tuple[str, int]
EndOffsets = Callable[[Collection[Partition]], Mapping[Partition, int]]
# A group's look: (group id, subscribed topics) -> Group.
GroupLook = Callable[[str, Collection[str]], "Group"]
_Seen = TypeVar("_Seen")

CHECK_EVERY_S = 1.0
# The end offsets are read every check, or every stall limit / ENDS_LOOKS_PER_LIMIT when
# that is longer (5 s at the default 120 s): each read is a Kafka round trip on the
# watchdog's thread, and the predictor's slowest answers waited for it (the GIL passes
# back to the serving thread only after a switch interval): with a read every second
# its p99 was 1.29x the bare echo's, with one every 5 s 1.10x, with none 1.00x (5 runs
# each).
ENDS_LOOKS_PER_LIMIT = 24
JOIN_SESSIONS = 2  # session timeouts a member may own nothing while records wait for nobody
OWNER_LOOK_EVERY_S = 5.0  # how often an owning member checks that its group still lists it
EXIT_GRACE_S = 5.0
# EX_TEMPFAIL (sysexits.h): a temporary failure, "retry later": what a restart is.
STALLED_EXIT_CODE = 75


@dataclass(frozen=True)
class Health:
    """One verdict, as served on ``/healthz``."""

    healthy: bool
    reason: str
    lag: int = 0
    waiting_s: float = 0.0
    limit_s: float = 0.0
    partitions: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_json(self, role: str) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "stalled",
            "role": role,
            "reason": self.reason,
            "lag": self.lag,
            "waiting_s": round(self.waiting_s, 3),
            "limit_s": self.limit_s,
            "partitions": self.partitions,
        }


@dataclass
class StallDetector:
    """Positions and end offsets over time → healthy or stalled (the rule above)."""

    timeout_s: float
    busy_timeout_s: float = 0.0
    _positions: dict[Partition, int] = field(default_factory=dict, init=False)
    _waiting_since: float | None = field(default=None, init=False)

    def observe(
        self,
        now: float,
        positions: Mapping[Partition, int],
        ends: Mapping[Partition, int],
        *,
        busy: bool = False,
        turned_at: float | None = None,
    ) -> Health:
        """The verdict at ``now``; ``turned_at`` is when the worker's loop last turned
        (None: not known, so not judged). Records waiting without movement are the
        first reason given; a loop that stopped turning is a stall without any."""
        health = self._lag_verdict(now, positions, ends, busy)
        silent = 0.0 if turned_at is None else now - turned_at
        if health.healthy and self.timeout_s > 0 and silent >= health.limit_s:
            limit = health.limit_s
            reason = (
                f"stalled: the poll loop has not turned for {silent:.0f} s (limit {limit:.0f} s)"
            )
            return Health(False, reason, health.lag, silent, limit, health.partitions)
        return health

    def _lag_verdict(
        self,
        now: float,
        positions: Mapping[Partition, int],
        ends: Mapping[Partition, int],
        busy: bool,
    ) -> Health:
        moved = dict(positions) != self._positions
        self._positions = dict(positions)
        judged = {tp: (pos, ends[tp]) for tp, pos in positions.items() if tp in ends}
        detail = {f"{t}[{p}]": {"position": o, "end": end} for (t, p), (o, end) in judged.items()}
        lagging = {tp: end - pos for tp, (pos, end) in judged.items() if end > pos}
        lag = sum(lagging.values())
        limit = max(self.timeout_s, self.busy_timeout_s) if busy else self.timeout_s
        if not lagging:
            self._waiting_since = None
            reason = "caught up" if positions else "nothing assigned"
            return Health(True, reason, 0, 0.0, limit, detail)
        if moved or self._waiting_since is None:
            self._waiting_since = now
        waiting = now - self._waiting_since
        waiting_on = f"{lag} records waiting on {len(lagging)} partition(s)"
        if self.timeout_s > 0 and waiting >= limit:
            moved_last = f"no position moved for {waiting:.0f} s (limit {limit:.0f} s)"
            reason = f"stalled: {waiting_on}, {moved_last}"
            return Health(False, reason, lag, waiting, limit, detail)
        state = "progressing" if waiting == 0 else f"no position moved for {waiting:.0f} s"
        return Health(True, f"{state}: {waiting_on}", lag, waiting, limit, detail)


@dataclass(frozen=True)
class Group:
    """One look at a member's consumer group, on the topics the member subscribed to."""

    rebalancing: bool
    owned: frozenset[Partition]  # partitions some member of the group owns now
    waiting: Mapping[Partition, int]  # records not yet committed by the group, per partition
    members: frozenset[str] = frozenset()  # the member ids the coordinator lists


@dataclass
class DroppedDetector:
    """A member that believes it owns partitions, and the group's look → stalled or not.

    The coordinator removes a member that stopped heartbeating; a client that missed its
    removal keeps its partitions' positions, fetches nothing and rejoins never (kafka-python
    3.0.12 did, docs/reliability.md finding 7). Its loop turns and its lag is judged only
    after the stall timeout; the coordinator knows at once. Not listed in its own group
    (outside a rebalance) for ``timeout_s``: stalled.

    >>> detector = DroppedDetector(timeout_s=10)
    >>> empty = Group(rebalancing=False, owned=frozenset(), waiting={}, members=frozenset())
    >>> detector.observe(0, member_id="m-1", group=empty).healthy
    True
    >>> print(detector.observe(10, member_id="m-1", group=empty).reason)
    stalled: owns partitions, but its group lists 0 members and not this one, for 10 s (limit 10 s)
    >>> listed = Group(rebalancing=False, owned=frozenset(), waiting={}, members=frozenset({"m-1"}))
    >>> detector.observe(11, member_id="m-1", group=listed) is None
    True
    """

    timeout_s: float
    _dropped_since: float | None = field(default=None, init=False)

    def observe(self, now: float, *, member_id: str | None, group: Group | None) -> Health | None:
        """The verdict at ``now``, or None when the member is listed (or not known)."""
        if member_id is None or group is None or group.rebalancing or member_id in group.members:
            self._dropped_since = None
            return None
        if self._dropped_since is None:
            self._dropped_since = now
        waiting = now - self._dropped_since
        what = (
            f"owns partitions, but its group lists {len(group.members)} members and not "
            f"this one, for {waiting:.0f} s"
        )
        if self.timeout_s > 0 and waiting >= self.timeout_s:
            return Health(
                False, f"stalled: {what} (limit {self.timeout_s:.0f} s)", 0, waiting, self.timeout_s
            )
        return Health(True, f"not listed by its group: {what}", 0, waiting, self.timeout_s)


@dataclass
class JoinDetector:
    """A member owning nothing, and the group's look → stalled or not (the rule above).

    >>> detector = JoinDetector(timeout_s=60, rebalance_timeout_s=300)
    >>> nobody = Group(rebalancing=False, owned=frozenset(), waiting={("t", 0): 7})
    >>> detector.observe(0, owns=False, group=nobody).healthy
    True
    >>> stalled = detector.observe(60, owns=False, group=nobody)
    >>> print(stalled.reason)  # doctest: +NORMALIZE_WHITESPACE
    stalled: owns no partition while 7 records wait on 1 partition(s) no member of its
    group owns, for 60 s (limit 60 s)
    >>> standby = Group(rebalancing=False, owned=frozenset({("t", 0)}), waiting={("t", 0): 7})
    >>> detector.observe(10_000, owns=False, group=standby) is None
    True
    """

    timeout_s: float
    rebalance_timeout_s: float = 0.0
    _orphaned_since: float | None = field(default=None, init=False)

    def observe(self, now: float, *, owns: bool, group: Group | None) -> Health | None:
        """The verdict at ``now``, or None when this rule has nothing to say: the member
        owns partitions, its group is not known, or every waiting record has an owner."""
        orphaned = (
            {}
            if owns or group is None
            else {tp: n for tp, n in group.waiting.items() if n > 0 and tp not in group.owned}
        )
        if not orphaned or group is None:
            self._orphaned_since = None
            return None
        if self._orphaned_since is None:
            self._orphaned_since = now
        waiting = now - self._orphaned_since
        # A rebalance may wait for every member's next poll: Kafka bounds it by the
        # max poll interval, and the member owns nothing until it completes.
        limit = (
            max(self.timeout_s, self.rebalance_timeout_s) if group.rebalancing else self.timeout_s
        )
        lag = sum(orphaned.values())
        what = (
            f"owns no partition while {lag} records wait on {len(orphaned)} partition(s) "
            f"no member of its group owns, for {waiting:.0f} s"
        )
        detail = {f"{t}[{p}]": {"waiting": n} for (t, p), n in orphaned.items()}
        if self.timeout_s > 0 and waiting >= limit:
            return Health(
                False, f"stalled: {what} (limit {limit:.0f} s)", lag, waiting, limit, detail
            )
        state = "rebalancing" if group.rebalancing else "not joined yet"
        return Health(True, f"{state}: {what}", lag, waiting, limit, detail)


class Positions:
    """The next offset to process per partition, kept from the batches a worker handles.

    Before a batch, a partition seen for the first time starts at the batch's first
    offset for it (records are handed over in offset order per partition); after it,
    each partition is at its last offset + 1. Partitions handed to another worker are
    forgotten, so a later reassignment starts afresh.

    >>> book = Positions()
    >>> book.starting([("t", 0, 5), ("t", 0, 6), ("t", 1, 9)])
    >>> book.of([("t", 0), ("t", 1), ("t", 2)])
    {('t', 0): 5, ('t', 1): 9}
    >>> book.finished([("t", 0, 5), ("t", 0, 6), ("t", 1, 9)])
    >>> book.forget([("t", 1)])
    >>> book.of([("t", 0), ("t", 1)])
    {('t', 0): 7}
    """

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}

    def starting(self, offsets: Iterable[tuple[str, int, int]]) -> None:
        for topic, partition, offset in offsets:
            self._next.setdefault((topic, partition), offset)

    def finished(self, offsets: Iterable[tuple[str, int, int]]) -> None:
        for topic, partition, offset in offsets:
            self._next[(topic, partition)] = offset + 1

    def forget(self, partitions: Iterable[Partition]) -> None:
        for topic, partition in partitions:
            self._next.pop((topic, partition), None)

    def of(self, assigned: Iterable[Partition]) -> dict[Partition, int]:
        """The known positions of the ``assigned`` partitions."""
        return {
            (topic, partition): self._next[(topic, partition)]
            for topic, partition in assigned
            if (topic, partition) in self._next
        }


@dataclass(frozen=True)
class Member:
    """Who a kafka-python worker is in its group: what the join rule needs."""

    group: str
    topics: frozenset[str]
    owns: bool  # whether the group has assigned it any partition
    member_id: str | None = None  # as the coordinator named it at the last join


class ConsumerPositions(dict[Partition, int]):
    """Positions that also say who the member is, so :meth:`Liveness.observe` can judge
    a member owning nothing without its worker passing anything more."""

    def __init__(self, positions: Mapping[Partition, int], member: Member | None) -> None:
        super().__init__(positions)
        self.member = member


def consumer_positions(consumer: Any) -> ConsumerPositions:
    """A kafka-python consumer's positions on the partitions it owns, without waiting.

    Call it from the consumer's thread between polls, when every record polled so far
    has been handled: the consumer's position is then the next offset to process, and
    after a rebalance it is the group's committed offset, never a stale one. Partitions
    whose position is still being looked up are left out. With a group and a
    subscription, the result also carries the :class:`Member` (local state, no I/O).
    """
    positions: dict[Partition, int] = {}
    for tp in consumer.assignment():
        offset = consumer.position(tp, timeout_ms=0)
        if offset is not None:
            positions[(tp.topic, tp.partition)] = offset
    return ConsumerPositions(positions, consumer_member(consumer))


def consumer_member(consumer: Any) -> Member | None:
    """Who a kafka-python consumer is in its group (local state, no I/O); None without
    a group and a subscription."""
    group, topics = consumer.config.get("group_id"), consumer.subscription()
    if not (group and topics):
        return None
    return Member(group, frozenset(topics), bool(consumer.assignment()), _member_id(consumer))


def _member_id(consumer: Any) -> str | None:
    """The member id of the consumer's last join (kafka-python keeps it in its
    coordinator's generation, which has no public accessor); None before a join."""
    generation = getattr(getattr(consumer, "_coordinator", None), "_generation", None)
    member_id = getattr(generation, "member_id", None)
    return member_id if isinstance(member_id, str) and member_id else None


class Liveness:
    """A worker's stall detectors, watchdog thread and ``/healthz`` verdict (one per process).

    From a kafka-python poll loop::

        liveness = Liveness(settings, "learner").start()
        while running:
            liveness.observe(consumer_positions(consumer))
            handle(consumer.poll(timeout_ms=500))

    ``ends``, ``group`` and ``exit_process`` are the I/O, replaceable for a test.
    """

    def __init__(
        self,
        settings: Settings,
        role: str,
        *,
        ends: EndOffsets | None = None,
        group: GroupLook | None = None,
        clock: Callable[[], float] = time.monotonic,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.role = role
        self.settings = settings
        max_poll_interval_s = settings.consumer_max_poll_interval_ms / 1000
        self.detector = StallDetector(
            timeout_s=settings.stall_timeout_s, busy_timeout_s=max_poll_interval_s
        )
        # A stable group leaves partitions unowned only when no member is alive in it:
        # a member still outside it after JOIN_SESSIONS session timeouts is not joining.
        join_limit_s = JOIN_SESSIONS * settings.consumer_session_timeout_ms / 1000
        self.joins = JoinDetector(
            timeout_s=min(settings.stall_timeout_s, join_limit_s),
            rebalance_timeout_s=max_poll_interval_s,
        )
        # The coordinator drops a member one session timeout after its last heartbeat.
        session_s = settings.consumer_session_timeout_ms / 1000
        self.dropped = DroppedDetector(timeout_s=min(settings.stall_timeout_s, session_s))
        self._group_looked_at: float | None = None
        self._ends_every_s = max(CHECK_EVERY_S, settings.stall_timeout_s / ENDS_LOOKS_PER_LIMIT)
        self._ends_looked_at: float | None = None
        looks = KafkaLooks(settings)  # its clients are made on first use only
        self._ends = ends or looks.end_offsets
        self._group = group or looks.group
        self._clock = clock
        self._exit = exit_process
        self._positions: dict[Partition, int] = {}
        self._member: Member | None = None
        self._turned_at: float | None = None
        self._known_ends: dict[Partition, int] = {}
        self._known_group: Group | None = None
        self._busy = 0
        self._was_healthy = True
        self._failing: set[str] = set()  # the looks failing now, each logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observe(self, positions: Mapping[Partition, int]) -> None:
        """The worker's positions on the partitions it owns now (from its own thread),
        once per turn of its loop: the time of the last turn is judged too."""
        self._member = positions.member if isinstance(positions, ConsumerPositions) else None
        self._positions = {(topic, partition): o for (topic, partition), o in positions.items()}
        self._turned_at = self._clock()

    @contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Around one long unit of work: judged against the longer limit (module doc)."""
        self._busy += 1
        log.debug("busy", extra={"role": self.role, "work": what})
        try:
            yield
        finally:
            self._busy -= 1

    def check(self) -> Health:
        """One look: end offsets, verdict, ``/healthz``; exit once stalled past the grace."""
        positions, member, turned_at = self._positions, self._member, self._turned_at
        if positions and self._ends_due(positions):
            self._ends_looked_at = self._clock()
            self._known_ends.update(self._look("end offsets", self._ends, list(positions)) or {})
        health = self.detector.observe(
            self._clock(), positions, self._known_ends, busy=self._busy > 0, turned_at=turned_at
        )
        if health.healthy:
            health = self._join_health(member) or health
        context = health.as_json(self.role)
        metrics.report_health(health.healthy, context)
        if health.healthy != self._was_healthy:
            if health.healthy:
                log.warning("progress resumed", extra=context)
            else:
                log.error("stalled; unhealthy", extra=context)
            self._was_healthy = health.healthy
        if not health.healthy and health.waiting_s >= health.limit_s + EXIT_GRACE_S:
            self._dump_threads()  # before the verdict, which stays the log's last line
            log.critical("stalled; exiting for a restart", extra=context)
            sys.stderr.flush()  # log handlers flush per record; this is the stream's buffer
            self._exit(STALLED_EXIT_CODE)
        return health

    def _ends_due(self, positions: Mapping[Partition, int]) -> bool:
        """Whether the end offsets are to be read now: every ``_ends_every_s``, and at
        once for a partition whose end is not known yet."""
        return (
            self._ends_looked_at is None
            or self._clock() - self._ends_looked_at >= self._ends_every_s
            or not positions.keys() <= self._known_ends.keys()
        )

    @staticmethod
    def _dump_threads() -> None:
        """Where every thread stood (stderr): what a stall's post-mortem needs first."""
        try:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        except (OSError, ValueError):  # a stderr without a file descriptor (embedded)
            log.warning("could not dump the threads' stacks: stderr has no file descriptor")

    def _join_health(self, member: Member | None) -> Health | None:
        """The join and dropped rules' verdict: the group is looked at every check while
        the member owns nothing, every :data:`OWNER_LOOK_EVERY_S` while it owns partitions
        under a known member id, and never otherwise."""
        now = self._clock()
        if member is None or (member.owns and member.member_id is None):
            self._known_group = None
            self.dropped.observe(now, member_id=None, group=None)
            return self.joins.observe(now, owns=True, group=None)
        due = (
            not member.owns
            or self._group_looked_at is None
            or now - self._group_looked_at >= OWNER_LOOK_EVERY_S
        )
        if due:
            self._group_looked_at = now
            seen = self._look("group", self._group, member.group, member.topics)
            if seen is not None:
                self._known_group = seen
        if member.owns:
            self.joins.observe(now, owns=True, group=None)
            # Work declared long (a retrain) may outlast the max poll interval, and the
            # client then leaves its group by design, rejoining at its next poll.
            busy = self._busy > 0
            return self.dropped.observe(
                now, member_id=None if busy else member.member_id, group=self._known_group
            )
        self.dropped.observe(now, member_id=None, group=None)
        return self.joins.observe(now, owns=False, group=self._known_group)

    def _look(self, what: str, read: Callable[..., _Seen], *args: Any) -> _Seen | None:
        """``read(*args)``, or None while Kafka does not answer (logged once per outage):
        the verdict is then made on what was last seen."""
        try:
            seen = read(*args)
        except Exception as exc:  # Kafka unreachable: judge on what was last seen
            if what not in self._failing:
                context = {"role": self.role, "look": what, "error": repr(exc)}
                log.warning(f"{what} unavailable", extra=context)
            self._failing.add(what)
            return None
        self._failing.discard(what)
        return seen

    def start(self) -> Liveness:
        """Run :meth:`check` every :data:`CHECK_EVERY_S` in a daemon thread."""
        if self._thread is None:
            metrics.report_health(True, Health(True, "starting").as_json(self.role))
            self._thread = threading.Thread(target=self._watch, name="liveness", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception:  # a bug here must not end the watch silently
                log.exception("liveness check failed", extra={"role": self.role})


# Group states in which the coordinator is moving partitions between members.
REBALANCING_STATES = frozenset({"PreparingRebalance", "CompletingRebalance"})


class KafkaLooks:
    """End offsets and group looks, with clients of the watchdog's own (no group, so
    they never disturb the worker's), created on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: Any = None
        self._admin: Any = None

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = make_consumer(self._settings, group_id=None)
        return self._consumer

    def end_offsets(self, partitions: Collection[Partition]) -> Mapping[Partition, int]:
        return self._offsets(partial(log_offsets, self._client()), partitions)

    def group(self, group: str, topics: Collection[str]) -> Group:
        """What ``group``'s members own of ``topics`` and what waits there uncommitted
        (from the log start where the group never committed)."""
        if self._admin is None:
            self._admin = make_admin(self._settings)
        client = self._client()
        partitions = [
            (topic, p) for topic in topics for p in sorted(client.partitions_for_topic(topic) or ())
        ]
        view = describe_group(self._admin, group)
        committed = {
            (tp.topic, tp.partition): offset
            for tp, offset in committed_offsets(self._admin, group).items()
        }
        ends = self.end_offsets(partitions)
        starts = self._offsets(partial(log_offsets, client, end=False), partitions)
        waiting = {tp: end - committed.get(tp, starts.get(tp, end)) for tp, end in ends.items()}
        return Group(view.state in REBALANCING_STATES, view.owned, waiting, view.member_ids)

    def _offsets(
        self, read: Callable[..., Any], partitions: Collection[Partition]
    ) -> dict[Partition, int]:
        # bounded by the client's request timeout (the deployment's kafka_request_timeout_ms)
        found = read([TopicPartition(topic, partition) for topic, partition in partitions])
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}
