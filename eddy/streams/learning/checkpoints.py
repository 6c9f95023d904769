"""Learner checkpoints: the state a learner seals, and the files that keep it.

The learner process (:mod:`eddy.services.workers.learner`) seals its state with the
offsets it has consumed; the registry turns periodic ones into versions
(:mod:`eddy.services.registry.announcements`), and tools read them back. The state is
plain data of the data plane, so it lives here and not in the process that writes it.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eddy.streams.learning.learner import Item, Learner, Position
from eddy.streams.messages.contracts import Label
from eddy.streams.store.recent_ids import RecentIds
from eddy.streams.store.serialization import (
    PICKLE,
    IntegrityError,
    sign,
    unseal,
    write_atomically,
)

log = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 5


@dataclass
class LearnerState:
    """Everything a checkpoint seals: the learner, its offsets, the ids it has learned."""

    learner: Learner
    learned: RecentIds  # the last EDDY_LEARNER_DEDUP_IDS example and label ids learned
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to read
    labels_joined: int = 0
    labels_unmatched: int = 0
    label_latency_s_total: float = 0.0
    snapshot_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    snapshot_examples: int = 0
    # Labels read (their offsets are in `offsets`) whose snapshot has not arrived yet:
    # checkpointed with the rest, so a restart still joins them.
    pending_labels: dict[str, tuple[Label, Position, float]] = field(default_factory=dict)
    # What was learned since the last snapshot, for its lineage.
    feature_sets: set[str] = field(default_factory=set)
    event_times: tuple[float, float] | None = None  # first, last event time
    label_coverage: float | None = None  # labels joined / snapshots recorded, when known

    def note_learned(self, items: list[Item], feature_sets: set[str]) -> None:
        """Note what ``items`` add to the lineage of the next snapshot."""
        self.feature_sets |= feature_sets
        times = [where.event_time for _, _, where in items]
        if times:
            first, last = self.event_times or (min(times), max(times))
            self.event_times = (min(first, *times), max(last, *times))

    def snapshot_taken(self) -> None:
        self.snapshot_offsets = dict(self.offsets)
        self.snapshot_examples = self.learner.examples
        self.feature_sets, self.event_times = set(), None

    def learned_since_snapshot(self) -> dict[str, list[int]]:
        """``topic[partition]`` → [first, last] offset learned since the last snapshot."""
        return {
            f"{topic}[{partition}]": [self.snapshot_offsets.get((topic, partition), 0), end - 1]
            for (topic, partition), end in sorted(self.offsets.items())
            if end > self.snapshot_offsets.get((topic, partition), 0)
        }

    def remember(self, record_id: str) -> bool:
        """False if ``record_id`` was learned already."""
        return self.learned.add(record_id)

    def remember_digests(self, digests: Sequence[int]) -> list[bool]:
        """:meth:`remember` each of the ids these are the digests of, in order."""
        return self.learned.add_digests(digests)


@dataclass(frozen=True)
class Sealed:
    """A state as it was when :meth:`CheckpointStore.seal` pickled it, and its file."""

    path: Path
    payload: bytes  # the pickle, not yet signed


class CheckpointStore:
    """Sealed checkpoint files, newest last; corrupt or foreign files are skipped loudly."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._key = key

    def save(self, state: LearnerState) -> Path:
        return self.write(self.seal(state))

    def seal(self, state: LearnerState) -> Sealed:
        """``state`` captured now. The rest of saving it (:meth:`write`: signing, writing,
        syncing to disk) is the slower part, and needs nothing of the live state: the
        learner does it on another thread while it learns on."""
        path = self.directory / f"checkpoint-{state.learner.examples:012d}.sealed"
        return Sealed(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    def write(self, sealed: Sealed) -> Path:
        """Make ``sealed`` durable (the same file :func:`~eddy.streams.store.serialization.seal`
        makes of the state), then drop the oldest files past :data:`CHECKPOINTS_KEPT`."""
        write_atomically(sealed.path, sign(sealed.payload, self._key, PICKLE))
        for old in sorted(self.directory.glob("checkpoint-*.sealed"))[:-CHECKPOINTS_KEPT]:
            old.unlink()
        return sealed.path

    def latest(self) -> LearnerState | None:
        for path in sorted(self.directory.glob("checkpoint-*.sealed"), reverse=True):
            try:
                state: LearnerState = unseal(path.read_bytes(), self._key)
            except IntegrityError as exc:
                log.error("skipping checkpoint", extra={"path": str(path), "error": str(exc)})
                continue
            return state
        return None
