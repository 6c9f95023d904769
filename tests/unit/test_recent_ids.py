from __future__ import annotations

import pickle
import random

import pytest

from eddy.streams.store.recent_ids import RecentIds, digest


def test_it_remembers_exactly_the_last_limit_ids_like_an_ordered_dict() -> None:
    rng = random.Random(1)
    seen, reference = RecentIds(limit=50), {}
    for _ in range(5_000):
        record_id = f"id-{rng.randint(0, 120)}"
        expected = record_id not in reference
        if expected:
            reference[record_id] = None
            if len(reference) > 50:
                del reference[next(iter(reference))]
        assert seen.add(record_id) is expected
    assert len(seen) == len(reference) == 50
    assert all(record_id in seen for record_id in reference)


@pytest.mark.parametrize("added", [0, 3, 10, 17])
def test_a_pickled_copy_continues_exactly_like_the_original(added: int) -> None:
    original = RecentIds(limit=10)
    for i in range(added):
        original.add(f"a{i}")
    copy = pickle.loads(pickle.dumps(original))
    later = [f"a{i}" for i in range(25)] + [f"b{i}" for i in range(5)]
    assert [copy.add(x) for x in later] == [original.add(x) for x in later]


def test_the_checkpointed_form_is_small() -> None:
    seen = RecentIds(limit=200_000)
    for i in range(200_000):
        seen.add(f"example-{i:08d}-{i * 7919}")
    assert len(pickle.dumps(seen)) < 200_000 * 8 + 10_000


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(limit=0)


@pytest.mark.parametrize(("added", "limit"), [(0, 4), (3, 4), (17, 4), (17, 10), (17, 30), (6, 30)])
def test_a_resized_memory_keeps_the_newest_ids_and_then_forgets_the_oldest_first(
    added: int, limit: int
) -> None:
    original = RecentIds(limit=10)
    ids = [f"a{i}" for i in range(added)]
    for record_id in ids:
        original.add(record_id)
    resized = original.resized(limit)
    kept = ids[-min(limit, 10, added) :] if added else []
    assert len(resized) == len(kept)
    assert [record_id in resized for record_id in ids] == [i in kept for i in ids]
    later = [f"b{i}" for i in range(limit)]
    for record_id in later:
        resized.add(record_id)
    assert not any(record_id in resized for record_id in kept)
    assert all(record_id in resized for record_id in later)


def test_a_checkpoint_from_before_digests_keeps_its_ids_in_order() -> None:
    from collections import OrderedDict

    from eddy.services.workers.learner import restored_dedup_memory

    old = OrderedDict((f"id-{i}", None) for i in range(5))
    memory = restored_dedup_memory(old, limit=3)
    assert [f"id-{i}" in memory for i in range(5)] == [False, False, True, True, True]
    assert restored_dedup_memory(memory, limit=3) is memory
    assert len(restored_dedup_memory(memory, limit=2)) == 2


@pytest.mark.parametrize("limit", [1, 2, 7, 50])
def test_adding_a_batch_answers_and_remembers_exactly_as_adding_one_by_one(limit: int) -> None:
    """Batches with repeats inside, ids seen before, ids just forgotten, and batches
    larger than the memory: the same answers and the same memory afterwards."""
    rng = random.Random(limit)
    one_by_one, batched = RecentIds(limit), RecentIds(limit)
    for _ in range(300):
        space = rng.choice([5, 30, 10_000])  # many repeats, some, almost none
        batch = [f"id-{rng.randint(0, space)}" for _ in range(rng.randint(0, 3 * limit + 5))]
        answers = batched.add_digests([digest(x) for x in batch])
        assert answers == [one_by_one.add(x) for x in batch]
        assert len(batched) == len(one_by_one)
        assert pickle.dumps(batched) == pickle.dumps(one_by_one)
    probes = [f"id-{i}" for i in range(40)]
    assert [x in batched for x in probes] == [x in one_by_one for x in probes]
