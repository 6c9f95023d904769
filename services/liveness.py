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
reading the end offsets with a Kafka client of its own, so a worker stuck inside a
batch (its loop no longer turning) is still judged against records that keep arriving.
A partition without a known position (nothing read from it yet in this process) or end
offset is not judged. The verdict is served on ``/healthz`` (:mod:`services.metrics`);
once stalled for a further :data:`EXIT_GRACE_S` (long enough for a probe to see 503)
the watchdog logs why and ends the process with :data:`STALLED_EXIT_CODE`, skipping
clean-up that would wait on the stuck work; the worker's commits follow its effects, so
the restart replays only uncommitted records, idempotently.

>>> detector = StallDetector(timeout_s=60)
>>> detector.observe(0, {("events", 0): 10}, {("events", 0): 10}).reason
'caught up'
>>> detector.observe(5, {("events", 0): 10}, {("events", 0): 12}).healthy
True
>>> stalled = detector.observe(65, {("events", 0): 10}, {("events", 0): 40})
>>> stalled.healthy, stalled.reason
(False, 'stalled: 30 records waiting on 1 partition(s), no position moved for 60 s (limit 60 s)')
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from services import metrics
from services.settings import Settings
from streams.clients import make_consumer

log = logging.getLogger(__name__)

# (topic, partition): kafka-python's and faust's TopicPartition are such tuples too.
Partition = tuple[str, int]
EndOffsets = Callable[[Collection[Partition]], Mapping[Partition, int]]

CHECK_EVERY_S = 1.0
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


def consumer_positions(consumer: Any) -> dict[Partition, int]:
    """A kafka-python consumer's positions on the partitions it owns, without waiting.

    Call it from the consumer's thread between polls, when every record polled so far
    has been handled: the consumer's position is then the next offset to process, and
    after a rebalance it is the group's committed offset, never a stale one. Partitions
    whose position is still being looked up are left out.
    """
    positions: dict[Partition, int] = {}
    for tp in consumer.assignment():
        offset = consumer.position(tp, timeout_ms=0)
        if offset is not None:
            positions[(tp.topic, tp.partition)] = offset
    return positions


class Liveness:
    """A worker's stall detector, watchdog thread and ``/healthz`` verdict (one per process).

    From a kafka-python poll loop::

        liveness = Liveness(settings, "learner").start()
        while running:
            liveness.observe(consumer_positions(consumer))
            handle(consumer.poll(timeout_ms=500))

    ``ends`` and ``exit_process`` are the I/O, replaceable for a test.
    """

    def __init__(
        self,
        settings: Settings,
        role: str,
        *,
        ends: EndOffsets | None = None,
        clock: Callable[[], float] = time.monotonic,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.role = role
        self.settings = settings
        self.detector = StallDetector(
            timeout_s=settings.stall_timeout_s,
            busy_timeout_s=settings.consumer_max_poll_interval_ms / 1000,
        )
        self._ends = ends or KafkaEndOffsets(settings)
        self._clock = clock
        self._exit = exit_process
        self._positions: dict[Partition, int] = {}
        self._known_ends: dict[Partition, int] = {}
        self._busy = 0
        self._was_healthy = True
        self._ends_failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observe(self, positions: Mapping[Partition, int]) -> None:
        """The worker's positions on the partitions it owns now (from its own thread)."""
        self._positions = {(topic, partition): o for (topic, partition), o in positions.items()}

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
        positions = self._positions
        self._known_ends.update(self._read_ends(positions))
        health = self.detector.observe(
            self._clock(), positions, self._known_ends, busy=self._busy > 0
        )
        context = health.as_json(self.role)
        metrics.report_health(health.healthy, context)
        if health.healthy != self._was_healthy:
            if health.healthy:
                log.warning("progress resumed", extra=context)
            else:
                log.error("stalled; unhealthy", extra=context)
            self._was_healthy = health.healthy
        if not health.healthy and health.waiting_s >= health.limit_s + EXIT_GRACE_S:
            log.critical("stalled; exiting for a restart", extra=context)
            sys.stderr.flush()  # log handlers flush per record; this is the stream's buffer
            self._exit(STALLED_EXIT_CODE)
        return health

    def _read_ends(self, positions: Mapping[Partition, int]) -> Mapping[Partition, int]:
        if not positions:
            return {}
        try:
            ends = self._ends(list(positions))
        except Exception as exc:  # Kafka unreachable: judge on the last known ends
            if not self._ends_failing:
                context = {"role": self.role, "error": repr(exc)}
                log.warning("end offsets unavailable", extra=context)
            self._ends_failing = True
            return {}
        self._ends_failing = False
        return ends

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


class KafkaEndOffsets:
    """End offsets from a consumer of the watchdog's own (no group), created on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: Any = None

    def __call__(self, partitions: Collection[Partition]) -> Mapping[Partition, int]:
        if self._consumer is None:
            self._consumer = make_consumer(self._settings, group_id=None)
        ends = self._consumer.end_offsets(
            [TopicPartition(topic, partition) for topic, partition in partitions],
            timeout_ms=self._settings.kafka_request_timeout_ms,
        )
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
