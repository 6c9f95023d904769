"""The one way a worker parks a record it cannot use: build, send, log and count.

Every worker that rejects input (the feature pipeline, the learner, the predictor, the
retrainer) sends it through a :class:`DeadLetterSink`, so every dead letter carries the
same evidence headers (:func:`~eddy.streams.dead_letters.letter.dead_letter`) to the same
topic. :meth:`DeadLetterSink.reject` also logs and counts each letter (the consumer
runtime, ``eddy.services.ops.poll_loop``, refuses the records its workers' decoders
refuse this way); :meth:`DeadLetterSink.send` leaves that to the caller (the feature
worker counts its batch's). The caller waits for the acknowledgements (the runtime
with :meth:`DeadLetterSink.settle`, the feature pipeline with the rest of its batch's
futures) before it commits the offsets of the records refused (nothing is lost, and a
crash before the acknowledgement sends the letter again: dead letters are
at-least-once, keyed by their source offset)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from eddy.streams.dead_letters.letter import DeadLetter, RawRecord, dead_letter

log = logging.getLogger(__name__)

# Counts dead letters per source (the topic without the deployment's prefix).
LetterCounter = Callable[[str, int], None]


class DeadLetterSink:
    """Sends dead letters to one topic with one producer.

    ``counted`` is told each letter's source and how many went (metrics live in the
    control plane, which hands the counter in); ``topic_prefix`` is cut from the source
    topic's name for that count.
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        *,
        topic_prefix: str = "",
        counted: LetterCounter | None = None,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._topic_prefix = topic_prefix
        self._counted = counted

    def reject(self, record: Any, error_class: str, reason: str) -> Any:
        """Dead-letter one consumed record (a kafka-python record or a
        :class:`RawRecord`) with why; returns the send's future."""
        raw = record if isinstance(record, RawRecord) else RawRecord.of(record)
        log.warning(
            "dead-lettered",
            extra={
                "at": f"{raw.topic}[{raw.partition}]@{raw.offset}",
                "error_class": error_class,
                "reason": reason,
            },
        )
        if self._counted is not None:
            self._counted(raw.topic.removeprefix(self._topic_prefix), 1)
        return self._send(dead_letter(raw, error_class, reason))

    def send(self, letters: Sequence[DeadLetter]) -> list[Any]:
        """Send letters built elsewhere (a batch decoded as a whole); their futures."""
        return [self._send(letter) for letter in letters]

    def settle(self, futures: Sequence[Any], timeout_s: float) -> None:
        """Returns once the broker acknowledged every letter in ``futures``; raises
        what a send failed with (the caller then must not commit past them)."""
        if not futures:
            return
        self._producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)

    def _send(self, letter: DeadLetter) -> Any:
        return self._producer.send(
            self.topic, key=letter.key, value=letter.value, headers=list(letter.headers)
        )
