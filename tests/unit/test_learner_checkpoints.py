"""The learner process writes checkpoints while it learns on, and commits only what is on disk."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from eddy.services.config.settings import Settings
from eddy.services.workers.learner import LearnerWorker
from eddy.streams.learning.checkpoints import CheckpointStore, LearnerState, Sealed
from eddy.streams.learning.learner import Learner, LearnerConfig, Position
from eddy.streams.store.recent_ids import RecentIds

pytestmark = pytest.mark.unit

KEY = b"k" * 32
EXAMPLES = "t.training-examples"


class HeldStore(CheckpointStore):
    """Writes only once ``release`` is set; ``fail`` makes writing raise instead."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, KEY)
        self.release = threading.Event()
        self.fail: OSError | None = None

    def write(self, sealed: Sealed) -> Path:
        assert self.release.wait(timeout=10)
        if self.fail is not None:
            raise self.fail
        return super().write(sealed)


class Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append({(tp.topic, tp.partition): m.offset for tp, m in offsets.items()})

    def commit_async(self, offsets: dict[Any, Any], callback: Any) -> None:
        self.commit(offsets)


class Snapshots:
    def recorded(self) -> int:
        return 0


def worker(store: CheckpointStore) -> Any:
    """A learner worker with its checkpoint machinery and nothing of Kafka or Redis."""
    learner = Learner(LearnerConfig(model="m"))
    built: Any = LearnerWorker.__new__(LearnerWorker)
    built.settings, built.config = Settings(), learner.config
    built.checkpoints, built.snapshots, built.consumer = store, Snapshots(), Consumer()
    built.state, built.on_snapshot = LearnerState(learner, RecentIds(10)), None
    built._writer = ThreadPoolExecutor(max_workers=1)
    built._writing, built._since_checkpoint, built._commit_owed = None, 0, False
    return built


def learn(built: Any, start: int, count: int) -> None:
    items = [
        ({"x": float(i % 7)}, i % 2 == 0, Position(EXAMPLES, 0, i, 1e9 + i))
        for i in range(start, start + count)
    ]
    built.state.learner.learn_alerts(items)
    built.state.offsets[(EXAMPLES, 0)] = start + count


def test_a_checkpoint_is_written_while_learning_goes_on_and_committed_once_on_disk(
    tmp_path: Path,
) -> None:
    store = HeldStore(tmp_path)
    built = worker(store)
    learn(built, 0, 300)
    built.checkpoint(wait=False)
    learn(built, 300, 200)  # learning goes on while the checkpoint is written
    built._written(block=False)
    assert built.consumer.commits == []
    assert list(tmp_path.glob("*.sealed")) == []

    store.release.set()
    built._written(block=True)
    assert built.consumer.commits == [{(EXAMPLES, 0): 300}]  # what was sealed, not 500
    restored = CheckpointStore(tmp_path, KEY).latest()
    assert restored is not None
    assert restored.learner.examples == 300
    assert restored.offsets == {(EXAMPLES, 0): 300}


def test_a_failed_write_is_raised_by_the_next_checkpoint_and_nothing_is_committed(
    tmp_path: Path,
) -> None:
    store = HeldStore(tmp_path)
    store.fail = OSError("disk full")
    built = worker(store)
    learn(built, 0, 300)
    built.checkpoint(wait=False)
    store.release.set()
    learn(built, 300, 200)
    with pytest.raises(OSError, match="disk full"):
        built.checkpoint(wait=False)
    assert built.consumer.commits == []


def test_a_checkpoint_waited_for_is_on_disk_and_committed_when_it_returns(tmp_path: Path) -> None:
    store = HeldStore(tmp_path)
    store.release.set()
    built = worker(store)
    learn(built, 0, 300)
    built.checkpoint(wait=False)
    learn(built, 300, 200)
    built.checkpoint()  # a stop: the one before is finished first, then this one
    assert built.consumer.commits == [{(EXAMPLES, 0): 300}, {(EXAMPLES, 0): 500}]
    assert sorted(path.name for path in tmp_path.glob("*.sealed")) == [
        "checkpoint-000000000300.sealed",
        "checkpoint-000000000500.sealed",
    ]
