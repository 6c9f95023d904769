"""The one consumer runtime: how every Kafka consumer-group worker turns.

The learner, the predictor and the retrainer each consume a batch, make its effects
durable, then commit. What surrounds that is the same for all of them and lives here
once: stop on SIGTERM/SIGINT between batches, stop with a clear error when a consumed
topic is deleted (:class:`~eddy.streams.transport.clients.TopicWatch`), report
progress to the liveness watchdog before every poll, raise what a rebalance callback
kept, and leave the loop with the watchdog and the topic watch stopped.

A worker supplies its batch function and what comes after a batch (commit, checkpoint,
scheduled work); it keeps its own consumer, closes it and does its final work after
:meth:`PollLoop.run` returns. The feature worker is the exception: faust-streaming's
agent owns its poll loop and commits, and the worker feeds the same liveness watchdog
from the agent (see :mod:`eddy.services.workers.features`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from eddy.services.config.settings import Settings
from eddy.services.ops.liveness import Liveness, consumer_positions
from eddy.streams.transport.clients import TopicWatch

BatchHandler = Callable[[list[Any]], None]


class PollLoop:
    """Polls ``consumer`` until stopped, handing each batch (possibly empty) on."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any,
        topics: Sequence[str],
        liveness: Liveness,
        *,
        poll_ms: int,
        kept_error: Callable[[], BaseException | None] = lambda: None,
        handle_signals: bool = True,
    ) -> None:
        """``kept_error`` returns what a rebalance callback raised inside the last poll
        (kafka-python only logs it), so the loop raises it instead of going on.
        ``handle_signals=False`` leaves the signals to the caller (a loop run on another
        thread never installs handlers: Python allows that only on the main thread)."""
        self._settings = settings
        self._consumer = consumer
        self._topics = list(topics)
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
        watch = TopicWatch.start(self._settings, self._topics)
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
                    handle(records)
                if every_turn is not None:
                    every_turn()
        finally:
            watch.stop()
            self.liveness.stop()
