"""The predictor's overlapped offset commits, against a stand-in consumer.

The stand-in records what was committed and how; each asynchronous commit's reply is
a value the test completes (as a later poll would), succeeded or failed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError

from eddy.services.serving.commits import (
    MAX_ON_THEIR_WAY,
    MAX_UNCONFIRMED_BATCHES,
    OverlappedCommits,
)

BATCH = 10


@dataclass
class Consumer:
    """Commits positions ``handled`` (the records handled so far) as asked."""

    handled: int = 0
    committed: list[tuple[str, int]] = field(default_factory=list)
    replies: list[Callable[[Any, Any], None]] = field(default_factory=list)
    refuse_sync: Exception | None = None

    def commit_async(self, callback: Callable[[Any, Any], None]) -> None:
        self.committed.append(("async", self.handled))
        self.replies.append(callback)

    def commit(self) -> None:
        if self.refuse_sync is not None:
            raise self.refuse_sync
        self.committed.append(("sync", self.handled))


def handled(consumer: Consumer, commits: OverlappedCommits, records: int) -> None:
    consumer.handled += records
    commits.after_batch(records)


def answered(consumer: Consumer, n: int, error: Exception | None = None) -> None:
    """The reply to the ``n``-th asynchronous commit is read (failed with ``error``)."""
    consumer.replies[n]({}, error if error is not None else "OffsetCommitResponse")


def test_each_batch_is_committed_without_waiting_while_there_is_room() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    for records in range(1, MAX_ON_THEIR_WAY + 2):
        handled(consumer, commits, records)
    assert consumer.committed == [("async", 1), ("async", 3)]  # the third batch waits
    commits.after_turn()
    assert len(consumer.committed) == MAX_ON_THEIR_WAY  # no reply read yet
    answered(consumer, 0)  # a poll read it
    commits.after_turn()
    assert consumer.committed[-1] == ("async", 6)
    commits.after_turn()
    assert len(consumer.committed) == MAX_ON_THEIR_WAY + 1  # nothing left to commit


def test_too_many_unconfirmed_records_make_the_commit_wait() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    for _ in range(MAX_UNCONFIRMED_BATCHES):
        handled(consumer, commits, BATCH)
    assert all(how == "async" for how, _ in consumer.committed)
    handled(consumer, commits, 1)
    assert consumer.committed[-1] == ("sync", MAX_UNCONFIRMED_BATCHES * BATCH + 1)
    handled(consumer, commits, BATCH)  # the synchronous commit confirmed everything before
    assert consumer.committed[-1] == ("async", (MAX_UNCONFIRMED_BATCHES + 1) * BATCH + 1)


def test_a_confirmed_commit_confirms_every_batch_before_it() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    handled(consumer, commits, BATCH)
    handled(consumer, commits, BATCH)
    answered(consumer, 1)  # the first reply not read yet, the second one is
    handled(consumer, commits, BATCH)
    assert [how for how, _ in consumer.committed] == ["async"] * 3


def test_a_failed_commit_is_made_good_by_a_later_one_else_made_again_synchronously() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    handled(consumer, commits, 1)
    handled(consumer, commits, 1)
    answered(consumer, 0, KafkaTimeoutError())  # the later commit on its way covers it
    commits.after_turn()
    assert consumer.committed == [("async", 1), ("async", 2)]
    answered(consumer, 1, KafkaTimeoutError())  # nothing after it: committed again, waiting
    commits.after_turn()
    assert consumer.committed == [("async", 1), ("async", 2), ("sync", 2)]


def test_a_failed_commit_after_one_still_on_its_way_is_sent_again() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    handled(consumer, commits, 1)
    handled(consumer, commits, 1)
    answered(consumer, 1, KafkaTimeoutError())  # the older one covers only the first batch
    commits.after_turn()
    assert consumer.committed == [("async", 1), ("async", 2), ("async", 2)]


def test_a_commit_the_broker_keeps_refusing_raises() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    handled(consumer, commits, 1)
    answered(consumer, 0, KafkaTimeoutError())
    consumer.refuse_sync = KafkaTimeoutError("the coordinator does not answer")
    with pytest.raises(KafkaTimeoutError):
        handled(consumer, commits, 1)


def test_a_commit_the_rebalancing_group_refuses_is_only_logged() -> None:
    consumer = Consumer(refuse_sync=CommitFailedError("rebalanced"))
    commits = OverlappedCommits(consumer, BATCH)
    handled(consumer, commits, 1)
    commits.settle()  # refused: the records are redelivered and their answers re-sent
    assert consumer.committed == [("async", 1)]


def test_a_clean_stop_commits_synchronously_what_is_unconfirmed() -> None:
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    handled(consumer, commits, 4)
    handled(consumer, commits, 4)
    commits.settle()
    assert consumer.committed[-1] == ("sync", 8)
    commits.settle()  # all confirmed: nothing to wait for
    handled(consumer, commits, 4)
    answered(consumer, -1)
    commits.after_turn()
    commits.settle()
    assert consumer.committed[-2:] == [("sync", 8), ("async", 12)]


def test_a_crash_leaves_at_most_the_unconfirmed_records_and_the_batch_in_hand() -> None:
    """No reply is ever read: only synchronous commits confirm. At any turn, what a
    crash during the next batch leaves uncommitted stays within what the predictor's
    redelivery window covers."""
    consumer = Consumer()
    commits = OverlappedCommits(consumer, BATCH)
    rng = random.Random(3)
    for _ in range(200):
        handled(consumer, commits, rng.randint(1, BATCH))
        confirmed = max((n for how, n in consumer.committed if how == "sync"), default=0)
        assert consumer.handled + BATCH - confirmed <= commits.most_uncommitted
