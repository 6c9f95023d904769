"""The one consumer runtime: how every Kafka consumer-group worker turns.

The learner, the predictor and the retrainer each consume a batch, make its effects
durable, then commit. What surrounds that is the same for all of them and lives here
once: stop on SIGTERM/SIGINT between batches, stop with a clear error when a consumed
topic is deleted (:class:`~eddy.streams.transport.clients.TopicWatch`), report
progress to the liveness watchdog before every poll, raise what a rebalance callback
kept, report each partition's consumer lag after a batch, and leave the loop with the
watchdog and the topic watch stopped.

Decoding is the runtime's too. Each consumed topic has a decoder (a record to its
message, raising :class:`~eddy.streams.messages.validation.InvalidMessage` on what it
cannot use); a record that fails is refused on its own, the rest of its batch goes on.
Refused records go to the dead-letter topic through the worker's one
:class:`~eddy.streams.dead_letters.sink.DeadLetterSink`, logged and counted; the batch
function gets every record in order, each with its message or its refusal (the learner
moves its offsets past refused records; the predictor answers each with its error) and
may refuse a decoded record itself (:meth:`PollLoop.refuse`: a check that needs the
worker's state). The letters are sent while the batch is handled and awaited
(:meth:`PollLoop.settle`) before what comes after the batch: no commit passes a refused
record before the broker has its letter.

Where the records come from is a :class:`Source`: by default the worker's consumer, read
and decoded on the loop's own thread (:class:`ConsumerSource`); the learner may read and
decode in a second process instead (:mod:`eddy.services.ops.reader_process`), whose
records arrive decoded.

A worker supplies its batch function and what comes after a batch (commit, checkpoint,
scheduled work); it keeps its own consumer, closes it and does its final work after
:meth:`PollLoop.run` returns. The feature worker is the exception: faust-streaming's
agent owns its poll loop and commits, and the worker feeds the same liveness watchdog
from the agent (see :mod:`eddy.services.workers.features`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol

from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.liveness import (
    ConsumerPositions,
    Liveness,
    Partition,
    consumer_positions,
)
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.messages.validation import InvalidMessage
from eddy.streams.transport.clients import TopicWatch

# A consumed record (kafka-python's, with topic, value and headers) to its message;
# raises InvalidMessage when the record cannot be used.
Decoder = Callable[[Any], Any]
# Builds a topic -> decoder mapping: how a worker whose decoders depend on its restored
# state hands them on at each assignment. It must pickle (a module-level function or a
# functools.partial of one): a reader process builds its own from it.
DecoderFactory = Callable[[], Mapping[str, Decoder]]
DEAD_LETTER_TIMEOUT_S = 30.0


class Consumed(NamedTuple):
    """One polled record and what its topic's decoder made of it: the message, or
    why it was refused (then ``message`` is None and its dead letter is on its way;
    :meth:`PollLoop.settle` waits for it). A tuple: one is built per record, at half a
    frozen dataclass's cost."""

    record: Any
    message: Any = None
    refused: InvalidMessage | None = None


BatchHandler = Callable[[list[Consumed]], None]


class Source(Protocol):
    """Where a loop's records come from, each already decoded (or refused)."""

    def poll(self, timeout_ms: int) -> list[Consumed]:
        """The next records, in order per partition; may be empty after ``timeout_ms``."""
        ...

    def positions(self) -> ConsumerPositions:
        """The next offset to handle on each owned partition, once everything polled so
        far has been handled; for the liveness watchdog."""
        ...

    def lags(self) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, records behind the log end) of each owned partition."""
        ...


class ConsumerSource:
    """The worker's own consumer, polled and decoded on the loop's thread."""

    def __init__(self, consumer: Any, decoders: Mapping[str, Decoder]) -> None:
        self.consumer = consumer
        self.decoders = dict(decoders)

    def poll(self, timeout_ms: int) -> list[Consumed]:
        polled = self.consumer.poll(timeout_ms=timeout_ms)
        return [self.decoded(record) for batch in polled.values() for record in batch]

    def decoded(self, record: Any) -> Consumed:
        try:
            return Consumed(record, self.decoders[record.topic](record))
        except InvalidMessage as exc:
            return Consumed(record, refused=exc)

    def assign(self, starts: Mapping[Partition, int | None], decoders: DecoderFactory) -> None:
        """Read each partition of ``starts`` from its offset (None: the beginning) and
        decode with what ``decoders`` builds from now on (a rebalance callback calls it)."""
        self.decoders = dict(decoders())
        seek_to_starts(self.consumer, starts)

    def positions(self) -> ConsumerPositions:
        return consumer_positions(self.consumer)

    def lags(self) -> Iterator[tuple[str, int, int]]:
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            position = self.consumer.position(tp, timeout_ms=0)  # None: being looked up
            if end is not None and position is not None:
                yield tp.topic, tp.partition, max(0, end - position)


def seek_to_starts(consumer: Any, starts: Mapping[Partition, int | None]) -> None:
    """Seek each partition of ``starts`` to its offset, or to the beginning for None."""
    for (topic, partition), offset in starts.items():
        tp = TopicPartition(topic, partition)
        if offset is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)


class PollLoop:
    """Polls ``consumer`` until stopped, handing each batch (possibly empty) on."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any,
        decoders: Mapping[str, Decoder],
        dead_letters: DeadLetterSink,
        liveness: Liveness,
        *,
        poll_ms: int,
        kept_error: Callable[[], BaseException | None] = lambda: None,
        handle_signals: bool = True,
        send_timeout_s: float = DEAD_LETTER_TIMEOUT_S,
        source: Source | None = None,
    ) -> None:
        """``decoders`` names every consumed topic with its decoder; refused records
        go to ``dead_letters``. ``kept_error`` returns what a rebalance callback raised
        inside the last poll (kafka-python only logs it), so the loop raises it instead
        of going on. ``send_timeout_s`` bounds the wait for the dead letters'
        acknowledgements.
        ``handle_signals=False`` leaves the signals to the caller (a loop run on another
        thread never installs handlers: Python allows that only on the main thread).
        ``source``: where the records come from, when not ``consumer`` polled here."""
        self._settings = settings
        self._consumer_source = ConsumerSource(consumer, decoders)
        self._source: Source = source or self._consumer_source
        self._dead_letters = dead_letters
        self._send_timeout_s = send_timeout_s
        self._unsettled: list[Any] = []  # the dead letters' futures, not yet awaited
        self.liveness = liveness
        self._poll_ms = poll_ms
        self._kept_error = kept_error
        self._handle_signals = handle_signals
        self.stopping = False

    def stop(self, *_: Any) -> None:
        """Ends the loop after the batch in hand (a signal handler, or another thread)."""
        self.stopping = True

    def run(
        self,
        handle: BatchHandler,
        every_turn: Callable[[], None] | None = None,
        *,
        empty_batches: bool = False,
    ) -> None:
        """Poll and ``handle`` each batch (empty ones too with ``empty_batches``: a
        worker with work pending between records), wait for its dead letters, then
        ``every_turn`` (commits, checkpoints, scheduled work). A batch function that
        commits itself calls :meth:`settle` first. Returns once stopped; raises what
        they raise."""
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        watch = TopicWatch.start(self._settings, list(self._consumer_source.decoders))
        try:
            self.liveness.start()
            while not self.stopping:
                watch.check()
                self.liveness.observe(self._source.positions())
                consumed = self._source.poll(self._poll_ms)
                kept = self._kept_error()
                if kept is not None:
                    raise kept
                if consumed or empty_batches:
                    self._refuse_undecoded(consumed)
                    handle(consumed)
                    self.settle()
                if consumed:
                    self._report_lag()
                if every_turn is not None:
                    every_turn()
        finally:
            watch.stop()
            self.liveness.stop()

    def intake(self, records: list[Any]) -> list[Consumed]:
        """Decode each record on its own and send the refused ones' dead letters
        (:meth:`settle` waits for them). Returns every record, in order."""
        consumed = [self._consumer_source.decoded(record) for record in records]
        self._refuse_undecoded(consumed)
        return consumed

    def _refuse_undecoded(self, consumed: list[Consumed]) -> None:
        self.refuse([(c.record, c.refused) for c in consumed if c.refused is not None])

    def refuse(self, refused: list[tuple[Any, InvalidMessage]]) -> None:
        """Dead-letter records, each with why (:meth:`settle` waits for them)."""
        self._unsettled += [
            self._dead_letters.reject(record, exc.error_class, exc.reason)
            for record, exc in refused
        ]

    def settle(self) -> None:
        """Returns once the broker has every dead letter sent so far; raises what a
        send failed with (then nothing may be committed past them)."""
        unsettled, self._unsettled = self._unsettled, []
        self._dead_letters.settle(unsettled, self._send_timeout_s)

    def _report_lag(self) -> None:
        """How far behind the log end each assigned partition is, after a batch."""
        for topic, partition, lag in self._source.lags():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
