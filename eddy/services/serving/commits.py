"""The predictor's offset commits, sent without waiting for the broker's reply.

A batch's offsets are committed only once every one of its answers is acknowledged;
that rule is the caller's. What this module changes is what happens next: a synchronous
commit waits a round trip to the group coordinator before the next poll, which at a
steady request rate was half of the predictor's time per batch (6.2 of 12.0 ms, batches
of about three requests) and a wait every request arriving meanwhile shares. Here the
commit is sent and the next batches are served while it travels.

One commit travels at a time: batches handled meanwhile are committed together by the
next one, sent once the reply has come (after a batch, or after any poll, so an idle
predictor commits its last batches too). Offsets are cumulative, so each commit covers
everything handled before it. When :data:`MAX_UNCONFIRMED_BATCHES` full batches' worth
of records are unconfirmed, or the commit on its way failed, the next commit is made
synchronously: it waits, and raises what the broker keeps refusing as a synchronous
commit always did (a group that refused it because it rebalances is only logged:
:func:`~eddy.streams.transport.clients.commit_unless_refused`). The bound counts records,
not batches: a steady trickle of requests makes batches of one, many of them per round
trip, and a crash redelivers records.

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
>>> consumer.sent  # no reply came: the batches waited for one commit, then one waited
['async', 'sync']
>>> commits.after_batch(1); commits.after_batch(1); consumer.sent[2:]
['async']
>>> consumer.replies[-1].is_done = True  # read by a later poll
>>> commits.after_turn(); commits.after_turn(); consumer.sent[2:]  # the second batch's
['async', 'async']
>>> commits.most_uncommitted
30
"""

from __future__ import annotations

import logging
from typing import Any

from eddy.streams.transport.clients import commit_unless_refused

log = logging.getLogger(__name__)

# How many full batches' worth of records may be unconfirmed before a commit waits for
# the broker: a commit's reply is read 8 to 15 ms after it is sent (a round trip of about
# 5.5 ms, then the next poll), longer than a full batch takes to answer.
MAX_UNCONFIRMED_BATCHES = 2


class OverlappedCommits:
    """Commits a consumer's positions after its batches (of at most ``batch_size``
    records), one commit on its way at a time, at most :data:`MAX_UNCONFIRMED_BATCHES`
    batches' worth of records unconfirmed."""

    def __init__(self, consumer: Any, batch_size: int) -> None:
        self._consumer = consumer
        self._batch_size = batch_size
        self._on_its_way: Any = None  # kafka-python's Future of the commit sent last
        self._covered = 0  # the records that commit covers
        self._unconfirmed = 0  # records handled and not confirmed committed

    @property
    def most_uncommitted(self) -> int:
        """The most records a crash can leave uncommitted: the unconfirmed ones and
        the batch being answered."""
        return (MAX_UNCONFIRMED_BATCHES + 1) * self._batch_size

    def after_batch(self, records: int) -> None:
        """A batch of ``records`` is handled and its answers acknowledged: commit it
        (with any handled before it) when no commit is on its way, synchronously when
        too many records are unconfirmed."""
        self._unconfirmed += records
        self.after_turn()
        if self._unconfirmed > MAX_UNCONFIRMED_BATCHES * self._batch_size:
            self.settle()

    def after_turn(self) -> None:
        """After any poll: send the commit that waited for the previous one's reply."""
        sent = self._on_its_way
        if sent is not None:
            if not sent.is_done:
                return
            self._on_its_way = None
            if sent.failed():
                log.warning(
                    "an offset commit failed; committing again, synchronously",
                    extra={"error": str(sent.exception)},
                )
                self.settle()
                return
            self._unconfirmed -= self._covered
        if self._unconfirmed:
            self._on_its_way, self._covered = self._consumer.commit_async(), self._unconfirmed

    def settle(self) -> None:
        """Commit synchronously, the commit on its way answered first (the coordinator
        replies in order): on a clean stop, so the next owner starts after the last
        answered record."""
        self._on_its_way, self._covered, self._unconfirmed = None, 0, 0
        commit_unless_refused(self._consumer)
