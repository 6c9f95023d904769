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
:class:`~eddy.streams.dead_letters.sink.DeadLetterSink`, logged, counted and
acknowledged before the batch function sees the batch: whatever the worker commits
afterwards, no refused record is lost. The batch function gets every record in order,
each with its message or its refusal (the learner moves its offsets past refused
records; the predictor answers each with its error).

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
    why it was refused (then ``message`` is None and its dead letter is acknowledged)."""

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
    ) -> None:
        """``decoders`` names every consumed topic with its decoder; refused records
        go to ``dead_letters``. ``kept_error`` returns what a rebalance callback raised
        inside the last poll (kafka-python only logs it), so the loop raises it instead
        of going on.
        ``handle_signals=False`` leaves the signals to the caller (a loop run on another
        thread never installs handlers: Python allows that only on the main thread)."""
        self._settings = settings
        self._consumer = consumer
        self._decoders = dict(decoders)
        self._dead_letters = dead_letters
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
        worker with work pending between records), then ``every_turn`` (commits,
        checkpoints, scheduled work). Returns once stopped; raises what they raise."""
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
                if records:
                    self._report_lag()
                if every_turn is not None:
                    every_turn()
        finally:
            watch.stop()
            self.liveness.stop()

    def intake(self, records: list[Any]) -> list[Consumed]:
        """Decode each record on its own; dead-letter the refused ones and wait for the
        broker to have their letters. Returns every record, in order."""
        consumed = [self._decoded(record) for record in records]
        self.refuse([(c.record, c.refused) for c in consumed if c.refused is not None])
        return consumed

    def refuse(self, refused: list[tuple[Any, InvalidMessage]]) -> None:
        """Dead-letter records the batch function refuses after decoding (a check that
        needs the worker's state); returns once the broker has every letter."""
        letters = [
            self._dead_letters.reject(record, exc.error_class, exc.reason)
            for record, exc in refused
        ]
        self._dead_letters.settle(letters, DEAD_LETTER_TIMEOUT_S)

    def _report_lag(self) -> None:
        """How far behind the log end each assigned partition is, after a batch."""
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None:
                lag = max(0, end - self._consumer.position(tp))
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    def _decoded(self, record: Any) -> Consumed:
        try:
            return Consumed(record, self._decoders[record.topic](record))
        except InvalidMessage as exc:
            return Consumed(record, refused=exc)
