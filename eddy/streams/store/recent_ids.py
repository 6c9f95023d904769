"""The last N ids a worker has seen, compact enough to checkpoint often.

The learner drops an example or label it has learned already by remembering the last
``EDDY_LEARNER_DEDUP_IDS`` ids, inside every checkpoint. Kept as Python strings, 200,000
ids of ~40 characters pickle to 8 MiB in about 0.3 s: at one checkpoint per thousand
examples that is 300 µs per example, more than learning costs. Here each id is kept as
a 64-bit BLAKE2b digest in a NumPy ring (1.6 MB for 200,000, pickled in a millisecond)
plus a set for lookups that is rebuilt on restore rather than pickled.

Two different ids collide with probability about n² / 2⁶⁵: for 200,000 ids, 1 in 10⁹,
and a collision only makes the learner skip one example it should have learned.

>>> seen = RecentIds(limit=2)
>>> [seen.add(i) for i in ("a", "b", "a", "c", "a")]
[True, True, False, True, True]
>>> "b" in seen, len(seen)
(False, 2)
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

DIGEST_BYTES = 8


def digest(record_id: str) -> int:
    """What the memory keeps of ``record_id``: a caller that has the digests already (the
    learner's reader process computes them) adds them with :meth:`RecentIds.add_digests`."""
    raw = hashlib.blake2b(record_id.encode(), digest_size=DIGEST_BYTES).digest()
    return int.from_bytes(raw, "little")


class RecentIds:
    """A set of the last ``limit`` ids added: oldest forgotten first."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._ring = np.zeros(limit, dtype=np.uint64)
        self._next = 0  # where the next digest goes
        self._count = 0
        self._members: set[int] = set()

    def add(self, record_id: str) -> bool:
        """Remember ``record_id``; False if it was among the last ``limit`` ids already."""
        kept = digest(record_id)
        if kept in self._members:
            return False
        if self._count == self.limit:
            self._members.discard(int(self._ring[self._next]))
        else:
            self._count += 1
        self._ring[self._next] = kept
        self._members.add(kept)
        self._next = (self._next + 1) % self.limit
        return True

    def add_digests(self, digests: Sequence[int]) -> list[bool]:
        """:meth:`add` each of the ids these are the :func:`digest` of, in order, with its
        answers: the learner's batch path (its reader process computes the digests),
        which writes the ring once rather than one NumPy element at a time.

        >>> seen = RecentIds(limit=2)
        >>> seen.add_digests([digest(i) for i in ("a", "b", "a", "c", "a")])
        [True, True, False, True, True]
        """
        members, count = self._members, len(digests)
        if count <= self.limit and members.isdisjoint(digests) and len(set(digests)) == count:
            # The usual batch, every id new: the oldest make room, none of them is back.
            members.difference_update(self._oldest(max(0, self._count + count - self.limit)))
            members.update(digests)
            self._write(digests)
            return [True] * count
        added, fresh = [], []
        room = self.limit - self._count
        # The digests the batch may evict, oldest first; the batch's own follow them
        # (with a small limit a batch evicts its own first ids).
        evictable = deque(self._oldest(min(self._count, max(0, count - room))))
        for one in digests:
            if one in members:
                added.append(False)
                continue
            if room > 0:
                room -= 1
            else:
                members.discard(evictable.popleft())
            members.add(one)
            evictable.append(one)
            fresh.append(one)
            added.append(True)
        self._write(fresh)
        return added

    def _oldest(self, count: int) -> list[int]:
        """The ``count`` oldest digests held, oldest first."""
        start = self._next if self._count == self.limit else 0
        oldest: list[int] = self._ring.take(np.arange(start, start + count) % self.limit).tolist()
        return oldest

    def _write(self, digests: Sequence[int]) -> None:
        """Put ``digests`` (new, in order) into the ring: only the last ``limit`` stay."""
        kept = digests[-self.limit :]
        start = self._next + len(digests) - len(kept)
        self._ring[np.arange(start, start + len(kept)) % self.limit] = kept
        self._next = (self._next + len(digests)) % self.limit
        self._count = min(self.limit, self._count + len(digests))

    def resized(self, limit: int) -> RecentIds:
        """The same memory keeping ``limit`` ids: the newest ones if it shrinks."""
        resized = RecentIds(limit)
        newest: list[int] = self._in_order()[-limit:].tolist()
        resized._members.update(newest)
        resized._write(newest)
        return resized

    def _in_order(self) -> np.ndarray:
        """The digests held, oldest first."""
        if self._count == self.limit:
            return np.roll(self._ring, -self._next)
        return self._ring[: self._count]

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and digest(record_id) in self._members

    def __len__(self) -> int:
        return self._count

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "ring": self._ring, "next": self._next, "count": self._count}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.limit, self._ring = state["limit"], state["ring"]
        self._next, self._count = state["next"], state["count"]
        self._members = {int(d) for d in self._in_order()}
