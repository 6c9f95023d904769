"""The predictor's offset commits, sent without waiting for the broker's reply.

A batch's offsets are committed only once every one of its answers is acknowledged;
that rule is the caller's. What this module changes is what happens next: a synchronous
commit waits a round trip to the group coordinator before the next poll, which at a
steady request rate was half of the predictor's time per batch (6.2 of 12.0 ms, batches
of about three requests) and a wait every request arriving meanwhile shares. Here the
commit is sent and the next batches are served while it travels.

Each batch's commit is sent as soon as its answers are acknowledged, unless
:data:`MAX_ON_THEIR_WAY` commits are unanswered: then the batch waits for the next
commit, sent after a later batch or after a poll once a reply has come (so an idle
predictor commits its last batches too). kafka-python refuses a request past five on one
connection (the group coordinator's also carries heartbeats), and a synchronous commit
it refused that way retries after a 100 ms pause: batches of one request each, every two
milliseconds, ran into that and into a round trip's worth of requests stalled. Sending a
commit also reads the replies already in (kafka-python polls its client without blocking;
its consumer reads the network only when its fetched records run out, so while a backlog
drains a reply is read at the next commit). Offsets are cumulative: a confirmed commit
confirms every batch before it, and a later commit makes good a failed one.

When more than :data:`MAX_UNCONFIRMED_BATCHES` full batches' worth of records are
unconfirmed, or a commit failed and no later one is on its way, the commit is made
synchronously: it waits, and raises what the broker keeps refusing as a synchronous
commit always did (a group that refused it because it rebalances is only logged:
:func:`~eddy.streams.transport.clients.commit_unless_refused`). The bound counts records,
not batches: a steady trickle of requests makes batches of one, several of them per
round trip, and a crash or a rebalance redelivers records. A crash can therefore leave
:attr:`OverlappedCommits.most_uncommitted` records per partition uncommitted instead of
one batch: the predictor's redelivery window covers that many, and an answer sent for a
record past it would still be found by the request log's create-only write
(:meth:`~eddy.services.serving.request_log.RequestLog.create`).

>>> class Consumer:
...     def __init__(self): self.sent, self.replies = [], []
...     def commit_async(self, callback):
...         self.sent.append("async"); self.replies.append(callback)
...     def commit(self): self.sent.append("sync")
>>> consumer = Consumer()
>>> commits = OverlappedCommits(consumer, batch_size=10)
>>> for _ in range(MAX_ON_THEIR_WAY + 1): commits.after_batch(1)
>>> consumer.sent  # no reply yet: the third batch waits for the next commit
['async', 'async']
>>> consumer.replies[0]({}, "the broker's response")  # read by a poll
>>> commits.after_turn(); commits.after_turn(); consumer.sent
['async', 'async', 'async']
>>> for _ in range(MAX_UNCONFIRMED_BATCHES): commits.after_batch(10)
>>> consumer.sent[3:]  # 22 records unconfirmed: the commit waits
['sync']
"""

from __future__ import annotations

import logging
from typing import Any

from eddy.streams.transport.clients import commit_unless_refused

log = logging.getLogger(__name__)

# Commits sent and unanswered before the next batch waits for a later commit: below
# kafka-python's five requests in flight per connection, room left for the heartbeats.
MAX_ON_THEIR_WAY = 2
# How many full batches' worth of records may be unconfirmed before a commit waits for
# the broker: a reply is read at the next commit or the next poll that reads the
# network, and a round trip (about 5.5 ms on the development stack) spans several small
# batches.
MAX_UNCONFIRMED_BATCHES = 2


class CommitReply:
    """The reply to one asynchronous commit, as kafka-python's callback delivers it (at
    a later poll or commit). The callback, not the future ``commit_async`` returns: while
    the client looks for the group's coordinator, that future is the lookup's, done
    before the commit is even sent."""

    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def __call__(self, _offsets: Any, result: Any) -> None:
        self.is_done = True
        self.exception = result if isinstance(result, BaseException) else None

    def failed(self) -> bool:
        return self.exception is not None


class OverlappedCommits:
    """Commits a consumer's positions after its batches (of at most ``batch_size``
    records) without waiting for the replies, at most :data:`MAX_ON_THEIR_WAY` commits
    unanswered and :data:`MAX_UNCONFIRMED_BATCHES` batches' worth of records
    unconfirmed."""

    def __init__(self, consumer: Any, batch_size: int) -> None:
        self._consumer = consumer
        self._batch_size = batch_size
        self._handled = 0  # records handled since this member started
        self._sent = 0  # of those, the ones the last commit sent covers
        self._confirmed = 0  # and the ones a confirmed commit covers
        # kafka-python's Future of each unanswered commit, with the records it covers;
        # oldest first.
        self._on_their_way: list[tuple[Any, int]] = []

    @property
    def most_uncommitted(self) -> int:
        """The most records a crash can leave uncommitted: the unconfirmed ones and
        the batch being answered."""
        return (MAX_UNCONFIRMED_BATCHES + 1) * self._batch_size

    def after_batch(self, records: int) -> None:
        """A batch of ``records`` is handled and its answers acknowledged: commit the
        positions, waiting only when too many records are unconfirmed or a commit
        failed."""
        self._handled += records
        self.after_turn()
        if self._handled - self._confirmed > MAX_UNCONFIRMED_BATCHES * self._batch_size:
            self.settle()

    def after_turn(self) -> None:
        """After a batch or a poll: note the replies read, and send the commit that
        waited for room."""
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
            # What it covered is covered again only by a commit sent after it.
            self._sent = max((covers for _, covers in waiting), default=self._confirmed)
            if not waiting:
                log.warning(
                    "an offset commit failed; committing again, synchronously",
                    extra={"error": str(failed.exception)},
                )
                self.settle()
                return
        if self._sent < self._handled and len(waiting) < MAX_ON_THEIR_WAY:
            reply = CommitReply()
            self._consumer.commit_async(callback=reply)
            self._on_their_way.append((reply, self._handled))
            self._sent = self._handled

    def settle(self) -> None:
        """Commit synchronously, the commits on their way answered first (the
        coordinator replies in order), unless every record handled is confirmed
        committed: also on a clean stop, so the next owner starts after the last
        answered record."""
        if self._confirmed == self._handled:
            return
        self._on_their_way = []
        commit_unless_refused(self._consumer)  # refused: redelivered, re-sent as logged
        self._sent = self._confirmed = self._handled
