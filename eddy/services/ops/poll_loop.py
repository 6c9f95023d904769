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

A worker supplies its batch function and what comes after a batch (commit, checkpoint,
scheduled work); it keeps its own consumer, closes it and does its final work after
:meth:`PollLoop.run` returns. The feature worker is the exception: faust-streaming's
agent owns its poll loop and commits, and the worker feeds the same liveness watchdog
from the agent (see :mod:`eddy.services.workers.features`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eddy.services.config.settings import Settings
from eddy.services.ops import metrics
from eddy.services.ops.liveness import Liveness, consumer_positions
from eddy.streams.dead_letters.sink import DeadLetterSink
from eddy.streams.messages.validation import InvalidMessage
from eddy.streams.transport.clients import TopicWatch

# A consumed record (kafka-python's, with topic, value and headers) to its message;
# raises InvalidMessage when the record cannot be used.
Decoder = Callable[[Any], Any]
DEAD_LETTER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Consumed:
    """One polled record and what its topic's decoder made of it: the message, or
    why it was refused (then ``message`` is None and its dead letter is on its way;
    :meth:`PollLoop.settle` waits for it)."""

    record: Any
    message: Any = None
    refused: InvalidMessage | None = None


BatchHandler = Callable[[list[Consumed]], None]


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
    ) -> None:
        """``decoders`` names every consumed topic with its decoder; refused records
        go to ``dead_letters``. ``kept_error`` returns what a rebalance callback raised
        inside the last poll (kafka-python only logs it), so the loop raises it instead
        of going on. ``send_timeout_s`` bounds the wait for the dead letters'
        acknowledgements.
        ``handle_signals=False`` leaves the signals to the caller (a loop run on another
        thread never installs handlers: Python allows that only on the main thread)."""
        self._settings = settings
        self._consumer = consumer
        self._decoders = dict(decoders)
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
        watch = TopicWatch.start(self._settings, list(self._decoders))
        try:
            self.liveness.start()
            while not self.stopping:
                watch.check()
                self.liveness.observe(consumer_positions(self._consumer))
                polled = self._consumer.poll(timeout_ms=self._poll_ms)
                kept = self._kept_error()
                if kept is not None:
                    raise kept
                records = [r for batch in polled.values() for r in batch]
                if records or empty_batches:
                    handle(self.intake(records))
                    self.settle()
                if records:
                    self._report_lag()
                if every_turn is not None:
                    every_turn()
        finally:
            watch.stop()
            self.liveness.stop()

    def intake(self, records: list[Any]) -> list[Consumed]:
        """Decode each record on its own and send the refused ones' dead letters
        (:meth:`settle` waits for them). Returns every record, in order."""
        consumed = [self._decoded(record) for record in records]
        self.refuse([(c.record, c.refused) for c in consumed if c.refused is not None])
        return consumed

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
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            position = self._consumer.position(tp, timeout_ms=0)  # None: being looked up
            if end is not None and position is not None:
                lag = max(0, end - position)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    def _decoded(self, record: Any) -> Consumed:
        try:
            return Consumed(record, self._decoders[record.topic](record))
        except InvalidMessage as exc:
            return Consumed(record, refused=exc)
