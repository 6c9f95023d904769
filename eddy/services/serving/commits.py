"""The predictor's offset commits, sent without waiting for the broker's reply.

A batch's offsets are committed only once every one of its answers is acknowledged;
that rule is the caller's. What this module changes is what happens next: a synchronous
commit waits a round trip to the group coordinator before the next poll, which at a
steady request rate was half of the predictor's time per batch (6.2 of 12.0 ms, batches
of about three requests) and a wait every request arriving meanwhile shares. Here the
commit is sent and the next batches are served while it travels.

Each batch's commit is sent as soon as its answers are acknowledged; sending one also
reads the replies to the earlier ones that have arrived (kafka-python polls its client
without blocking; its consumer reads the network only when its fetched records run out,
so a reply is not read sooner by waiting for a poll). Offsets are cumulative: a confirmed
commit confirms every batch before it. When more than :data:`MAX_UNCONFIRMED_BATCHES`
full batches' worth of records are unconfirmed, or a commit failed and no later one was
confirmed, the batch's commit is made synchronously: it waits, and raises what the broker
keeps refusing as a synchronous commit always did (a group that refused it because it
rebalances is only logged: :func:`~eddy.streams.transport.clients.commit_unless_refused`).
The bound counts records, not batches: a steady trickle of requests makes batches of one,
several of them per round trip, and a crash redelivers records.

A crash can therefore leave :attr:`OverlappedCommits.most_uncommitted` records per
partition uncommitted instead of one batch: the predictor's redelivery window covers
that many, and an answer sent for a record past it would still be found by the request
log's create-only write (:meth:`~eddy.services.serving.request_log.RequestLog.create`).

>>> class Reply:
...     is_done = False
...     def failed(self): return False
>>> class Consumer:
...     def __init__(self): self.sent, self.replies = [], []
...     def commit_async(self):
...         self.sent.append("async"); self.replies.append(Reply()); return self.replies[-1]
...     def commit(self): self.sent.append("sync")
>>> consumer = Consumer()
>>> commits = OverlappedCommits(consumer, batch_size=10)
>>> for _ in range(MAX_UNCONFIRMED_BATCHES + 1): commits.after_batch(10)
>>> consumer.sent  # no reply came: the third batch's commit waited
['async', 'async', 'async', 'sync']
>>> commits.after_batch(10); consumer.replies[-1].is_done = True
>>> commits.after_batch(10); commits.after_batch(10); consumer.sent[4:]  # 20 unconfirmed
['async', 'async', 'async']
>>> commits.most_uncommitted
30
"""

from __future__ import annotations

import logging
from typing import Any

from eddy.streams.transport.clients import commit_unless_refused

log = logging.getLogger(__name__)

# How many full batches' worth of records may be unconfirmed before a commit waits for
# the broker: a reply is read when the next batch's commit is sent, and a commit's round
# trip (about 5.5 ms on the development stack) spans several batches of a few requests.
MAX_UNCONFIRMED_BATCHES = 2


class OverlappedCommits:
    """Commits a consumer's positions after each of its batches (of at most
    ``batch_size`` records) without waiting for the reply, at most
    :data:`MAX_UNCONFIRMED_BATCHES` batches' worth of records unconfirmed."""

    def __init__(self, consumer: Any, batch_size: int) -> None:
        self._consumer = consumer
        self._batch_size = batch_size
        self._handled = 0  # records handled since this member started
        self._confirmed = 0  # of those, the ones a confirmed commit covers
        # kafka-python's Future of each commit not confirmed yet, with the records it
        # covers; oldest first.
        self._on_their_way: list[tuple[Any, int]] = []

    @property
    def most_uncommitted(self) -> int:
        """The most records a crash can leave uncommitted: the unconfirmed ones and
        the batch being answered."""
        return (MAX_UNCONFIRMED_BATCHES + 1) * self._batch_size

    def after_batch(self, records: int) -> None:
        """A batch of ``records`` is handled and its answers acknowledged: commit the
        positions, without waiting unless too many records are unconfirmed or a commit
        failed."""
        self._handled += records
        self._on_their_way.append((self._consumer.commit_async(), self._handled))
        failed = None  # a failed commit no later confirmed one makes good
        waiting = []
        for sent, covers in self._on_their_way:
            if not sent.is_done:
                waiting.append((sent, covers))
            elif sent.failed():
                failed = sent
            else:
                failed, self._confirmed = None, covers
        self._on_their_way = waiting
        if failed is not None:
            log.warning(
                "an offset commit failed; committing again, synchronously",
                extra={"error": str(failed.exception)},
            )
            self.settle()
        elif self._handled - self._confirmed > MAX_UNCONFIRMED_BATCHES * self._batch_size:
            self.settle()

    def settle(self) -> None:
        """Commit synchronously, the commits on their way answered first (the
        coordinator replies in order): also on a clean stop, so the next owner starts
        after the last answered record."""
        self._on_their_way = []
        commit_unless_refused(self._consumer)  # refused: redelivered, re-sent as logged
        self._confirmed = self._handled
