"""A worker's records read and decoded in a second process, while the worker handles them.

Why: the learner process spends about as long reading (kafka-python parses each record
batch in Python) and decoding as learning, all on one thread, so a learner process
reached 0.26x the bare River loop where learning alone reaches 0.70x. Threads do not
help under the GIL; a second process does. The reader process polls and decodes; the
worker's process receives each poll's decoded records over a pipe and learns.

Ownership stays with the worker: its own consumer remains the group's member (rebalance
callbacks, commits, heartbeats), with every partition paused so it never fetches. On an
assignment the worker says where each partition starts (its checkpoint's offsets) and
the reader process seeks there; on a revocation the reader process stops reading them.
Each such order has a new generation, and a batch read under an older one is dropped
unread: a record read before the worker gave its partition up is never handled after.
The pipe's buffer (64 KiB on Linux) and the batch in the reader's hands bound how far it
reads ahead, and a batch dropped or lost in a crash is read again from the worker's
checkpoint.

Either process failing stops both: the reader process exits when the worker's process is
gone (its parent changed, or the pipe broke), and the worker raises when the reader
process exits or reports an error. The reader process ignores SIGINT and SIGTERM (they
are blocked while it starts, so none reaches it before it ignores them): the worker
finishes its batch, checkpoints and then stops it.

A record arrives as a :class:`PolledRecord` with its decoded message; a refused record
also carries its key, value and headers, for its dead letter. Decoders are rebuilt in the
reader process from a picklable factory (:data:`DecoderFactory`), sent with each
assignment (the learner's label check depends on the model it restored).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.ops import logs
from eddy.services.ops.collector import settle_collector
from eddy.services.ops.liveness import (
    ConsumerPositions,
    Partition,
    consumer_member,
    consumer_positions,
)
from eddy.services.ops.poll_loop import Consumed, Decoder, DecoderFactory, seek_to_starts
from eddy.streams.messages.validation import InvalidMessage
from eddy.streams.transport.clients import make_consumer

log = logging.getLogger(__name__)

# The longest the reader process waits in one poll, so an order from the worker (a
# rebalance) or its parent's end is seen within it.
READER_POLL_MS = 100
# How long the worker waits for the reader process to end once told to, before killing it.
STOP_TIMEOUT_S = 10.0
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class PolledRecord(NamedTuple):
    """A consumed record as the worker sees it. ``key``, ``value`` and ``headers`` are
    carried only when the record was refused (its dead letter needs them); a decoded
    record's content is its message."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None


class Assign(NamedTuple):
    """The worker's order: read these partitions from these offsets (None: from the
    beginning), decoding with what ``decoders`` builds; ``generation`` tags what is read."""

    generation: int
    starts: dict[Partition, int | None]
    decoders: DecoderFactory


class Batch(NamedTuple):
    """One poll of the reader process: its records (each a tuple, see :func:`_entry`),
    its consumer's positions after the poll and the log ends it knows."""

    generation: int
    entries: list[tuple[Any, ...]]
    positions: dict[Partition, int]
    ends: dict[Partition, int]


class ReaderFailed(RuntimeError):
    """The reader process failed or exited: the worker stops too, for a restart."""


class ReaderProcess:
    """A :class:`~eddy.services.ops.poll_loop.Source` whose records a second process
    reads and decodes. ``consumer`` is the worker's group member; ``overrides`` are the
    reader's consumer settings (batch size, fetch wait)."""

    def __init__(self, settings: Settings, consumer: Any, **overrides: Any) -> None:
        self._settings = settings
        self._consumer = consumer
        self._overrides = overrides
        self._generation = 0
        self._positions: dict[Partition, int] = {}
        self._ends: dict[Partition, int] = {}
        self._process: Any = None
        self._orders: Connection | None = None
        self._batches: Connection | None = None

    def start(self) -> None:
        """Start the reader process; it reads nothing until :meth:`assign`."""
        context = multiprocessing.get_context("spawn")  # the worker has threads already
        orders_read, self._orders = context.Pipe(duplex=False)
        self._batches, batches_sent = context.Pipe(duplex=False)
        self._process = context.Process(
            target=read_and_decode,
            args=(self._settings, self._overrides, orders_read, batches_sent, os.getpid()),
            name="eddy-reader",
            daemon=True,
        )
        # The mask survives exec: a Ctrl-C to the process group while the reader process
        # imports stays pending there until it ignores it, and reaches this one after.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        orders_read.close()
        batches_sent.close()
        log.info("reader process started", extra={"pid": self._process.pid})

    @property
    def pid(self) -> int | None:
        """The reader process's pid, once started."""
        return None if self._process is None else int(self._process.pid)

    def assign(self, starts: Mapping[Partition, int | None], decoders: DecoderFactory) -> None:
        """Read ``starts``'s partitions from their offsets from now on, and nothing
        read before; the worker's consumer keeps every partition paused."""
        self._consumer.pause(*self._consumer.assignment())
        self._generation += 1
        # Where reading starts is where the worker stands until a batch says more (0 for
        # "the beginning"): a reader process that never delivers leaves records waiting
        # behind a position that does not move, which the liveness watchdog judges a stall.
        self._positions = {p: offset or 0 for p, offset in starts.items()}
        self._ends = {}
        if self._orders is not None:
            self._orders.send(Assign(self._generation, dict(starts), decoders))

    def poll(self, timeout_ms: int) -> list[Consumed]:
        """The group's duties (a rebalance runs its callbacks here), then the next
        batch of records of the current generation, or nothing within ``timeout_ms``
        (the reader's empty polls only update positions and log ends)."""
        if self._consumer.poll(timeout_ms=0):
            raise ReaderFailed("the worker's consumer fetched records: a partition is not paused")
        if self._batches is None:
            raise ReaderFailed("the reader process is not running")
        deadline = time.monotonic() + timeout_ms / 1000
        while self._batches.poll(max(0.0, deadline - time.monotonic())):
            try:
                received = self._batches.recv()
            except (EOFError, OSError):  # OSError: it ended in the middle of a batch
                raise ReaderFailed(self._ended()) from None
            if isinstance(received, str):
                raise ReaderFailed(f"the reader process failed: {received}")
            if received.generation == self._generation:
                self._positions, self._ends = received.positions, received.ends
                if received.entries:
                    return [_consumed(entry) for entry in received.entries]
        if not self._process.is_alive():
            raise ReaderFailed(self._ended())
        return []

    def positions(self) -> ConsumerPositions:
        """Where the records handed out so far end (the worker has handled them when
        it asks): the next offset to handle per partition, with the group member."""
        return ConsumerPositions(self._positions, consumer_member(self._consumer))

    def lags(self) -> Iterator[tuple[str, int, int]]:
        for (topic, partition), end in self._ends.items():
            position = self._positions.get((topic, partition))
            if position is not None:
                yield topic, partition, max(0, end - position)

    def close(self) -> None:
        """Stop the reader process (it may be blocked sending: the pipe is closed too)."""
        if self._process is None:
            return
        if self._orders is not None:
            with contextlib.suppress(OSError):
                self._orders.send(None)
            self._orders.close()
        if self._batches is not None:
            self._batches.close()
        self._orders = self._batches = None
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            log.warning("reader process did not stop; killed", extra={"pid": self._process.pid})
            self._process.kill()
            self._process.join()

    def _ended(self) -> str:
        self._process.join(1.0)
        return f"the reader process exited (exit code {self._process.exitcode})"


def _consumed(entry: tuple[Any, ...]) -> Consumed:
    topic, partition, offset, timestamp, message, refused = entry
    if refused is None:
        return Consumed(PolledRecord(topic, partition, offset, timestamp), message)
    error_class, reason, key, value, headers = refused
    record = PolledRecord(topic, partition, offset, timestamp, key, value, headers)
    return Consumed(record, refused=InvalidMessage(error_class, reason))


def _entry(record: Any, decoders: Mapping[str, Decoder]) -> tuple[Any, ...]:
    """A polled record, decoded, as the tuple the pipe carries (cheaper to pickle than
    objects)."""
    try:
        message = decoders[record.topic](record)
    except InvalidMessage as exc:
        refused = (exc.error_class, exc.reason, record.key, record.value, record.headers)
        return (record.topic, record.partition, record.offset, record.timestamp, None, refused)
    return (record.topic, record.partition, record.offset, record.timestamp, message, None)


def read_and_decode(
    settings: Settings,
    overrides: dict[str, Any],
    orders: Connection,
    batches: Connection,
    parent: int,
) -> None:
    """The reader process: follow the worker's orders, poll, decode, send each poll."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by start()
    logs.configure(settings.log_level)
    consumer = make_consumer(settings, group_id=None, **overrides)
    order: Assign | None = None
    decoders: Mapping[str, Decoder] = {}
    settle_collector()
    try:
        while os.getppid() == parent:
            reading = order is not None and bool(order.starts)
            while orders.poll(0 if reading else READER_POLL_MS / 1000):
                received = orders.recv()
                if received is None:
                    return
                order, decoders = received, received.decoders()
                _follow(consumer, received)
                reading = bool(received.starts)
            if reading and order is not None:
                batches.send(_read_once(consumer, order.generation, decoders))
    except (BrokenPipeError, EOFError):
        return  # the worker is gone or stopping
    except Exception as exc:
        log.exception("reader process failed")
        try:
            batches.send(repr(exc))
        finally:
            raise
    finally:
        consumer.close()


def _follow(consumer: Any, order: Assign) -> None:
    consumer.assign([TopicPartition(topic, partition) for topic, partition in order.starts])
    seek_to_starts(consumer, order.starts)


def _read_once(consumer: Any, generation: int, decoders: Mapping[str, Decoder]) -> Batch:
    polled = consumer.poll(timeout_ms=READER_POLL_MS)
    entries = [_entry(record, decoders) for records in polled.values() for record in records]
    ends: dict[Partition, int] = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is not None:
            ends[(tp.topic, tp.partition)] = end
    return Batch(generation, entries, dict(consumer_positions(consumer)), ends)
