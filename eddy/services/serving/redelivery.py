"""Which requests may be answered a second time, so their first answer is re-sent.

The predictor commits a batch's offsets only after its answers are acknowledged, so a
crash (or a rebalance that refuses the commit) hands the same requests to the next
owner of the partition: at-least-once. Computing those answers again would use the
features and the clock of a later moment, and a client could see two *different*
answers for one request. Instead the predictor looks the request log up (written before
any answer is sent) and re-sends the logged answer when the log names this very record.

Only records read soon after a partition is assigned can be redeliveries: the previous
owner committed after each batch (a few of those commits possibly unconfirmed), so at
most :attr:`~eddy.services.serving.commits.OverlappedCommits.most_uncommitted` records
per partition were answered and not committed. :class:`RedeliveryWindow` marks those
(pure); the lookup is the predictor's.

>>> window = RedeliveryWindow(size=2)
>>> window.assigned([("requests", 0)])
>>> window.suspects([("requests", 0), ("requests", 0), ("requests", 0), ("requests", 1)])
[True, True, False, False]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener


class RedeliveryWindow:
    """The first ``size`` records of each partition after it is assigned are suspects."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._left: dict[tuple[str, int], int] = {}

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        for partition in partitions:
            self._left[partition] = self.size

    def suspects(self, partitions: Iterable[tuple[str, int]]) -> list[bool]:
        """For records from these partitions, in poll order: may each be a redelivery?"""
        flags = []
        for partition in partitions:
            left = self._left.get(partition, 0)
            flags.append(left > 0)
            if left > 0:
                self._left[partition] = left - 1
        return flags


class WindowOnAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Opens the window for every partition the group assigns to this member."""

    def __init__(self, window: RedeliveryWindow) -> None:
        self.window = window

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.window.assigned((tp.topic, tp.partition) for tp in assigned)


def logged_source(record: Any) -> str:
    """How the request log names the record an answer was for."""
    return f"{record.topic}[{record.partition}]@{record.offset}"
